"""The demo preparation DAG through the SLURM profile on a real one-node SLURM cluster (started and
stopped by the test), with the GPU rules on a `gpu` partition with a fake GPU; its outputs must equal a
local run's. Skipped, with the reason, where the cluster cannot be started (no root, no packages)."""

import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO
from slurm_cluster import slurm_cluster, unavailable
from test_workflow import SMALL_WORLD, snakemake_command

pytestmark = pytest.mark.slow

TARGETS = ("partseg", "parsing")
GPU_RULES = ("partseg_shard", "parsing_shard", "parsing_demo_weights")
LOCAL_RULES = {"world_split", "partseg_index", "partseg_check", "partseg_figure", "parsing_index", "parsing_check",
               "parsing_figure"}  # the workflow's `localrules` among this DAG's jobs


def small_config(path: Path) -> None:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["world"].update(SMALL_WORLD)
    config["parsing"]["demo"] = {"steps": 20, "input_resolution": 96, "batch_size": 4}
    config["parsing"]["scales"] = [1.0]
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text(yaml.safe_dump(config))


def npz_outputs(workdir: Path) -> dict[str, dict]:
    out = {}
    for f in sorted((workdir / "results").rglob("*.npz")):
        with np.load(f, allow_pickle=False) as z:
            out[str(f.relative_to(workdir))] = {k: z[k] for k in z.files}
    return out


def test_the_demo_dag_runs_on_slurm_like_locally(tmp_path):
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    local, cluster = tmp_path / "local", tmp_path / "cluster"
    small_config(local)
    small_config(cluster)
    # the local reference run goes alongside the cluster run, which mostly waits on queue polls
    local_run = subprocess.Popen(snakemake_command("--cores", "1", *TARGETS, cwd=local), cwd=local,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # the repository's SLURM profile, with the CPUs per GPU cut to the test node's 2 CPUs
        profile = yaml.safe_load((REPO / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())
        assert set(GPU_RULES) <= set(profile["set-resources"]) and profile["slurm-status-command"] == "squeue"
        for rule in profile["set-resources"].values():
            rule["cpus_per_gpu"] = 1
        (tmp_path / "profile").mkdir()
        (tmp_path / "profile" / "config.yaml").write_text(yaml.safe_dump(profile))
        with slurm_cluster() as env:
            command = snakemake_command(*TARGETS, "--workflow-profile", str(tmp_path / "profile"), "--slurm-no-account",
                                        "--slurm-init-seconds-before-status-checks", "1", "--jobs", "4", cwd=cluster)
            proc = subprocess.run(command, capture_output=True, text=True, cwd=cluster, env=env, timeout=1500)
            local_output = local_run.communicate(timeout=1500)[0]
            assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
            assert local_run.returncode == 0, local_output[-4000:]
            # the jobs really went through SLURM, the GPU rules to the gpu partition with a GPU
            jobs = subprocess.run(["squeue", "-h", "-t", "all", "-O",
                                   "JobID:12,Partition:12,tres-per-job:30,tres-per-node:30,State:14,Comment:120"],
                                  capture_output=True, text=True, env=env).stdout.split("\n")
            jobs = [j.split() for j in jobs if j.strip()]
    finally:
        if local_run.poll() is None:  # the test failed early: do not leave the reference run behind
            local_run.kill()
            local_run.wait()
    assert len(jobs) >= 10 and all(j[4] == "COMPLETED" for j in jobs), jobs
    gpu_jobs = [j for j in jobs if j[1] == "gpu"]
    assert gpu_jobs and all("gpu" in j[2] + j[3] for j in gpu_jobs), jobs  # each asked for the fake GPU
    assert any(j[1] == "cpu" and "gpu" not in j[2] + j[3] for j in jobs)
    # the plugin comments each job with its rule: the work went through SLURM, the bookkeeping did not
    queued = {j[5].removeprefix("rule_").split("_wildcards_")[0] for j in jobs}
    assert {"world_image_shard", *GPU_RULES} <= queued, queued
    assert not queued & LOCAL_RULES, queued
    ours, theirs = npz_outputs(cluster), npz_outputs(local)
    assert ours.keys() == theirs.keys() and len(ours) > 10
    for name, arrays in ours.items():
        assert arrays.keys() == theirs[name].keys(), name
        for key, value in arrays.items():
            np.testing.assert_array_equal(value, theirs[name][key], err_msg=f"{name}:{key}")
