"""Config validation: defaults from the schema, and errors that name the offending key."""

import copy
import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from pipeline.config import ConfigError, validate_config


def default_config():
    with open(REPO / "config.yaml") as f:
        return yaml.safe_load(f)


def test_default_config_is_valid_and_defaults_are_filled():
    config = validate_config(default_config())
    assert config["body"]["h36m_regressor"] is None
    minimal = validate_config({})
    assert minimal["body"]["demo"]["grid_spacing"] == pytest.approx(0.02)
    assert minimal["seed"] == 0


@pytest.mark.parametrize(
    "edit, named",
    [
        (lambda c: c.update(bogus_key=1), "bogus_key"),
        (lambda c: c["body"]["demo"].update(spacing=0.01), "body.demo.spacing"),
        (lambda c: c["body"]["demo"].update(grid_spacing="fine"), "body.demo.grid_spacing"),
        (lambda c: c["body"].update(gender="other"), "body.gender"),
        (lambda c: c.update(seed=-1), "seed"),
        (lambda c: c["body"].update(num_betas=2.5), "body.num_betas"),
    ],
)
def test_errors_name_the_key(edit, named):
    config = copy.deepcopy(default_config())
    edit(config)
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    assert named in str(err.value)


def test_every_problem_is_reported_at_once():
    config = default_config()
    config["unknown_a"] = 1
    config["body"]["gender"] = 3
    with pytest.raises(ConfigError, match="2 problems") as err:
        validate_config(config)
    assert "unknown_a" in str(err.value) and "body.gender" in str(err.value)


def test_snakemake_stops_before_any_job_naming_the_key(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--directory", str(tmp_path),
         "--snakefile", str(REPO / "workflow" / "Snakefile"), "--configfile", str(REPO / "config.yaml"),
         "--config", "typo_key=1"],
        capture_output=True, text=True, cwd=REPO,
    )
    assert proc.returncode != 0
    assert "typo_key" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()
