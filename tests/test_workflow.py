"""The Snakemake workflow itself: lint, dry run and a real run of the default targets."""

import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO


def snakemake(*args, cwd, check=True):
    """Run the checkout's workflow with `cwd` as its working directory (results, logs, .snakemake)."""
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(cwd), *args]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=cwd)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture
def workdir(tmp_path):
    """A throwaway working directory with the default config, so runs never touch the checkout."""
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    return tmp_path


def test_lint_is_clean(workdir):
    proc = snakemake("--lint", cwd=workdir)
    assert "Congratulations" in proc.stdout + proc.stderr


def test_dry_run_plans_all(workdir):
    proc = snakemake("-n", "--cores", "8", "all", cwd=workdir)
    assert "demo_body" in proc.stdout and "body_figure" in proc.stdout


@pytest.mark.slow
def test_default_run_builds_body_model_and_figure(workdir):
    snakemake("--cores", "2", "all", cwd=workdir)
    from pipeline.body.model import BodyModel

    model = BodyModel.from_file(workdir / "results/body/demo_body.npz")
    assert model.data.name == "demo_body" and model.data.num_vertices > 2000
    figure = np.asarray(Image.open(workdir / "results/figures/body_model.png"))
    assert figure.shape[1] == 4 * figure.shape[0]
    assert (figure < 250).any(axis=-1).mean() > 0.05  # the body covers part of every panel
    assert (workdir / "logs/demo_body/demo_body.log").read_text().count("demo body (seed 0)") == 1
    assert (workdir / "benchmarks/demo_body/demo_body.tsv").exists()
    # nothing left to do on a second run
    assert "Nothing to be done" in snakemake("-n", "--cores", "2", "all", cwd=workdir).stdout + ""


def test_real_smpl_config_without_files_fails_with_guidance(workdir):
    proc = snakemake("-n", "--cores", "1", "all", "--config", f"body={{'model_dir': '{workdir}/smpl'}}", cwd=workdir, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "SMPL_NEUTRAL.pkl" in out and "smpl.is.tue.mpg.de" in out
