"""A private one-node SLURM cluster for tests: its own munged (as user munge) and its own slurmctld and
slurmd (as root), configured in a scratch folder (SLURM_CONF), with a `cpu` and a `gpu` partition (one
fake GPU: a gres with a device file). Every daemon it starts is stopped by its PID.

Needs root and the Debian packages slurm-wlm, slurmctld, slurmd, slurm-client and munge
(`scripts/setup.sh --dev` installs them); `unavailable()` says why a cluster cannot be started here."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

BINARIES = ("munged", "mungekey", "slurmctld", "slurmd", "sinfo", "squeue", "sbatch", "srun", "scancel")


def unavailable() -> str | None:
    if os.geteuid() != 0:
        return "a test SLURM cluster needs root (munged runs as user munge, slurmd as root)"
    missing = [b for b in BINARIES if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]
    if missing:
        return f"SLURM/munge not installed ({', '.join(missing)} missing): apt-get install slurm-wlm munge, or scripts/setup.sh --dev"
    try:
        import pwd

        pwd.getpwnam("munge")
    except KeyError:
        return "no user munge (the munge package creates it)"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]')"
    return None


def _binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_hardware() -> tuple[str, str]:
    """(NodeName, 'CPUs=.. Boards=.. ... RealMemory=..') from `slurmd -C`."""
    out = subprocess.run([_binary("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("NodeName="))
    name, rest = line.split(" ", 1)
    return name.split("=", 1)[1], rest.strip()


def _wait(condition, timeout: float, what: str, logs: list[Path]):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.5)
    tails = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in logs if p.exists())
    raise TimeoutError(f"test SLURM cluster: {what} not ready after {timeout:.0f} s\n{tails}")


@contextmanager
def slurm_cluster():
    """Start the cluster in a scratch folder under /tmp (munged, running as munge, must be able to reach
    it: pytest's tmp folders are private to root); yield the environment (SLURM_CONF set) for clients."""
    import pwd
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="bodylabels-slurm-"))
    root.chmod(0o755)
    munge_user = pwd.getpwnam("munge")
    munge_dir = root / "munge"
    munge_dir.mkdir(mode=0o700, exist_ok=True)
    os.chown(munge_dir, munge_user.pw_uid, munge_user.pw_gid)
    key, munge_socket = munge_dir / "munge.key", munge_dir / "munge.socket"
    pids: list[tuple[str, Path]] = []
    env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}
    try:
        subprocess.run([_binary("mungekey"), "--create", "--keyfile", str(key)], check=True, capture_output=True)
        os.chown(key, munge_user.pw_uid, munge_user.pw_gid)
        os.chmod(key, 0o400)
        munge_pid = munge_dir / "munged.pid"
        subprocess.run(["runuser", "-u", "munge", "--", _binary("munged"), "--key-file", str(key), "--socket", str(munge_socket),
                        "--pid-file", str(munge_pid), "--log-file", str(munge_dir / "munged.log"),
                        "--seed-file", str(munge_dir / "munged.seed"), "--force"], check=True, capture_output=True, text=True)
        pids.append(("munged", munge_pid))
        _wait(munge_socket.exists, 30, "munged", [munge_dir / "munged.log"])

        node, hardware = _node_hardware()
        host = socket.gethostname().split(".")[0]
        if node != host:
            node = host
        (root / "gres.conf").write_text(f"NodeName={node} Name=gpu File=/dev/null\n")
        (root / "slurm.conf").write_text(f"""\
ClusterName=bodylabels-test
SlurmctldHost={host}
SlurmUser=root
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
AuthInfo=socket={munge_socket}
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
MinJobAge=600
ReturnToService=2
GresTypes=gpu
NodeName={node} {hardware.split(' UpTime')[0]} Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes={node} Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes={node} MaxTime=INFINITE State=UP
""")
        for d in ("state", "spool"):
            (root / d).mkdir(exist_ok=True)
        subprocess.run([_binary("slurmctld"), "-i", "-f", str(root / "slurm.conf")], check=True, env=env, capture_output=True)
        pids.append(("slurmctld", root / "slurmctld.pid"))
        subprocess.run([_binary("slurmd"), "-f", str(root / "slurm.conf")], check=True, env=env, capture_output=True)
        pids.append(("slurmd", root / "slurmd.pid"))

        def node_idle():
            out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, env=env).stdout
            return "idle" in out

        _wait(node_idle, 90, "the node (sinfo: idle)", [root / "slurmctld.log", root / "slurmd.log"])
        # snakemake-executor-plugin-slurm-jobstep drops SLURM_* variables (SLURM_CONF included) before its
        # nested srun; real clusters keep slurm.conf at the default path, this one is private: an srun on
        # PATH that restores SLURM_CONF stands in for that path
        shim = root / "bin" / "srun"
        shim.parent.mkdir()
        shim.write_text(f"#!/bin/sh\nexport SLURM_CONF={root / 'slurm.conf'}\nexec {shutil.which('srun')} \"$@\"\n")
        shim.chmod(0o755)
        env["PATH"] = f"{shim.parent}:{env['PATH']}"
        yield env
    finally:
        for name, pid_file in reversed(pids):
            try:
                pid = int(pid_file.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)
