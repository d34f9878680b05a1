"""Faults: a shard job that fails once is retried and the run completes; a killed run leaves no output
that looks complete and resumes. Faults are injected from outside the pipeline: a `python` placed first
on PATH (the rules call `python -m ...`) fails, or signals its start, for the matching command."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from test_workflow import snakemake_command, workdir  # noqa: F401 - the tiny-world working directory fixture

pytestmark = pytest.mark.slow

WRAPPER = """#!/bin/sh
# test fault injection: for commands containing $FAULT_MATCH, the first call leaves $FAULT_MARKER and
# fails ($FAULT_MODE=fail) or carries on ($FAULT_MODE=mark)
case "$*" in
  *"$FAULT_MATCH"*)
    if [ ! -e "$FAULT_MARKER" ]; then
      touch "$FAULT_MARKER"
      if [ "$FAULT_MODE" = fail ]; then echo "injected fault" >&2; exit 1; fi
    fi;;
esac
exec {python} "$@"
"""


def faulty_env(tmp_path: Path, mode: str, match: str = "pipeline.partseg shard") -> tuple[dict, Path]:
    bin_dir = tmp_path / "fault-bin"
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "python"
    wrapper.write_text(WRAPPER.format(python=sys.executable))
    wrapper.chmod(0o755)
    marker = tmp_path / f"fault-{mode}"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAULT_MATCH": match, "FAULT_MARKER": str(marker),
           "FAULT_MODE": mode}
    return env, marker


def run(workdir, *args, env, check=True):
    proc = subprocess.run(snakemake_command(*args, cwd=workdir), capture_output=True, text=True, cwd=workdir, env=env)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def part_shards(workdir):
    return sorted((workdir / "results" / "partseg").glob("*/shard-*.npz"))


def test_a_shard_that_fails_once_is_retried_and_the_run_completes(workdir, tmp_path):  # noqa: F811
    env, marker = faulty_env(tmp_path, "fail")
    failed = run(workdir, "--cores", "2", "--retries", "0", "partseg", env=env, check=False)
    assert failed.returncode != 0 and marker.exists()  # the fault is real: without retries the run fails
    assert "injected fault" in (failed.stdout + failed.stderr) or any(
        "injected fault" in p.read_text() for p in (workdir / "logs").rglob("*.log"))
    marker.unlink()
    done = run(workdir, "--cores", "2", "--retries", "1", "partseg", env=env)
    assert marker.exists(), "the fault was not injected on the retried run"
    assert "Trying to restart job" in done.stdout + done.stderr or "retry" in (done.stdout + done.stderr).lower()
    shards = part_shards(workdir)
    assert len(shards) == 4  # one per split of the tiny world
    for shard in shards:
        with np.load(shard) as z:
            assert z["parts"].shape[-1] == 224
    assert "Nothing to be done" in run(workdir, "-n", "--cores", "2", "partseg", env=env).stdout


def test_a_killed_run_leaves_nothing_that_looks_complete_and_resumes(workdir, tmp_path):  # noqa: F811
    env, marker = faulty_env(tmp_path, "mark")
    proc = subprocess.Popen(snakemake_command("--cores", "1", "partseg", cwd=workdir), cwd=workdir, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while not marker.exists():
        assert proc.poll() is None, "the run ended before its first part-label job started"
        assert time.time() < deadline
        time.sleep(0.1)
    time.sleep(1.0)  # inside the first part-label job
    os.killpg(proc.pid, signal.SIGKILL)  # the whole run, job included, as a node failure or scancel would
    proc.wait()
    # whatever exists looks complete only if it is complete: every shard on disk loads
    before = part_shards(workdir)
    for shard in before:
        with np.load(shard) as z:
            assert len(z["index"]) > 0
    assert len(before) < 4
    run(workdir, "--unlock", env=env)  # a killed Snakemake leaves its lock
    plan = run(workdir, "-n", "--cores", "2", "partseg", env=env).stdout
    assert "partseg_shard" in plan
    run(workdir, "--cores", "2", "partseg", env=env)  # the same command resumes (rerun-incomplete is in the profile)
    assert len(part_shards(workdir)) == 4
    assert not list((workdir / "results").rglob("*.tmp"))  # no temporary file survives the resumed run


def test_the_next_write_removes_a_killed_writers_temporary_file(tmp_path):
    """A writer SIGKILLed inside `atomic_output` leaves its temporary file (nothing can remove it then);
    the next write of the same output removes it, and temporaries of other outputs stay."""
    from pipeline.io import save_npz

    out = tmp_path / "shard-0000.npz"
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[2]); from pipeline.io import atomic_output\n"
        "with atomic_output(sys.argv[1]) as tmp:\n"
        "    tmp.write_bytes(b'partial'); print('writing', flush=True); time.sleep(600)"), str(out), str(REPO)],
        stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    leftovers = list(tmp_path.glob(".shard-0000.npz.*.tmp"))
    assert len(leftovers) == 1 and not out.exists()
    other = tmp_path / ".shard-0001.npz.abc.tmp"
    other.write_bytes(b"another output's")
    save_npz(out, {"index": np.arange(3)})
    assert not any(p.exists() for p in leftovers) and other.exists()
    with np.load(out) as z:
        assert z["index"].tolist() == [0, 1, 2]
