"""Incremental reruns: after one complete run, each change plans exactly the jobs that depend on it,
asserted through Snakemake's Python API (the dry run's job set, by rule and count).

The workflow runs once per module on the tiny demo world plus one real-format dataset (the SPIN
fixture photo), with parser weights from a file (as with official weights: no demo-parser rule).
Each test works on its own copy of that finished working directory."""

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import REPO
from test_workflow import EVAL_ONE, SMALL_WORLD, TINY_TRAIN, TRAIN_ALL, snakemake

REAL = REPO.parent / "shared" / "fixtures" / "real"

pytestmark = pytest.mark.slow

# new parser weights: every parser shard and what reads them (prior, packs), never the part labels
WEIGHTS_CHANGED = {"parsing_shard": 5, "parsing_index": 5, "parsing_check": 1, "parsing_figure": 1, "prior_map": 2,
                   "prior_reduce": 1, "prior_check": 1, "prior_figure": 1, "pack_split": 5, "dsr_figure": 1, **TRAIN_ALL,
                   "all": 1}


def planned_jobs(workdir: Path, targets=("all",)) -> dict[str, int]:
    """Jobs a run of `targets` would execute now, by rule, from Snakemake's API (a dry run)."""
    from snakemake.api import ConfigSettings, DAGSettings, OutputSettings, ResourceSettings, SnakemakeApi, StorageSettings
    from snakemake.settings.types import Quietness

    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        workflow = api.workflow(resource_settings=ResourceSettings(cores=2),
                                config_settings=ConfigSettings(configfiles=[workdir / "config.yaml"]),
                                storage_settings=StorageSettings(), snakefile=REPO / "workflow" / "Snakefile", workdir=workdir)
        dag = workflow.dag(DAGSettings(targets=set(targets)))
        dag.execute_workflow(executor="dryrun")
        return dict(Counter(job.rule.name for job in dag.workflow_api._workflow.dag._finished))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    if not REAL.is_dir():
        pytest.skip(f"real fixtures not found at {REAL}")
    from models.graphonomy import build
    from pipeline.datasets import read_bbox_json, read_openpose_json
    from pipeline.io import save_npz

    root = tmp_path_factory.mktemp("finished")
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["world"].update(SMALL_WORLD)
    config["parsing"]["scales"] = [1.0]
    config["parsing"]["weights"] = "parser.pth"
    config["prior"] = {"shard_size": 2, "resolution": 128}
    config["train"].update(TINY_TRAIN)
    center, scale = read_bbox_json(REAL / "spin_im1010_bbox.json")
    save_npz(root / "spin_example.npz", {
        "imgname": np.array(["spin_im1010.jpg"]), "center": center[None], "scale": np.array([scale]),
        "openpose": read_openpose_json(REAL / "spin_im1010_openpose.json")[:1], "has_smpl": np.zeros(1),
        "pose": np.zeros((1, 72)), "shape": np.zeros((1, 10)),
    })
    config["datasets"] = {"spin_example": {"annotations": "spin_example.npz", "images": str(REAL)}}
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    torch.manual_seed(0)
    torch.save(build("transfer", width=0.0625).state_dict(), root / "parser.pth")
    snakemake("--cores", "2", "all", cwd=root)
    assert planned_jobs(root) == {}
    return root


@pytest.fixture
def work(finished, tmp_path):
    """A private copy of the finished run (timestamps and Snakemake's metadata kept)."""
    dst = tmp_path / "run"
    shutil.copytree(finished, dst, symlinks=True)
    return dst


def edit_config(work: Path, change) -> None:
    config = yaml.safe_load((work / "config.yaml").read_text())
    change(config)
    (work / "config.yaml").write_text(yaml.safe_dump(config))


def test_rerun_after_one_datasets_annotations_change_touches_only_that_dataset(work):
    with np.load(work / "spin_example.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["center"] = arrays["center"] + 3.0
    np.savez(work / "spin_example.npz", **arrays)
    assert planned_jobs(work) == {"partseg_shard": 1, "partseg_index": 1, "parsing_shard": 1, "parsing_index": 1,
                                  "pack_split": 1, "all": 1}


def test_rerun_after_new_parser_weights_redoes_parsing_prior_and_packs_not_part_labels(work):
    from models.graphonomy import build

    torch.manual_seed(1)
    torch.save(build("transfer", width=0.0625).state_dict(), work / "parser.pth")
    jobs = planned_jobs(work)
    assert jobs == WEIGHTS_CHANGED
    assert not any(rule.startswith(("partseg", "world", "demo_body")) for rule in jobs)


def test_rerun_after_a_prior_parameter_change_redoes_the_prior_and_the_packs_only(work):
    edit_config(work, lambda c: c["prior"].update(background_probability=0.02))
    # the packs hold the prior, so every training reads a changed file
    assert planned_jobs(work) == {"prior_reduce": 1, "prior_check": 1, "prior_figure": 1, "pack_split": 5, "dsr_figure": 1,
                                  **TRAIN_ALL, "all": 1}


def test_rerun_after_a_packing_setting_change_repacks_and_retrains_only(work):
    # the packing options that come from the config are compared (they are not a function of input)
    edit_config(work, lambda c: c.setdefault("pack", {}).update(jpeg_quality=80))
    assert planned_jobs(work) == {"pack_split": 5, "dsr_figure": 1, **TRAIN_ALL, "all": 1}


def test_rerun_after_a_dsr_loss_setting_change_redraws_its_figure_and_retrains_dsr_only(work):
    edit_config(work, lambda c: c.setdefault("dsr_losses", {}).update(sigma=2e-5))
    assert planned_jobs(work) == {"dsr_figure": 1, "train_dsr": 1, "train_check": 1, "train_figure": 1, **EVAL_ONE, "all": 1}


def test_rerun_after_a_training_setting_change_retrains_that_model_and_what_starts_from_it(work):
    edit_config(work, lambda c: c["train"].setdefault("loss", {}).update(part=2.0))  # PARE's stage 1, and stage 2 from it
    assert planned_jobs(work) == {"train_pare": 2, "train_check": 1, "train_figure": 1, **EVAL_ONE, "all": 1}
    edit_config(work, lambda c: c["train"].pop("loss"))
    edit_config(work, lambda c: c["train"]["runs"]["hmr"].update(lr=1e-3))
    assert planned_jobs(work) == {"train_hmr": 1, "train_check": 1, "train_figure": 1, **EVAL_ONE, "all": 1}
    edit_config(work, lambda c: c["train"]["runs"]["hmr"].pop("lr"))
    edit_config(work, lambda c: c["train"]["check"].update(min_gain=0.5))  # the check alone
    assert planned_jobs(work) == {"train_check": 1, "all": 1}


def test_rerun_nothing_after_an_unrelated_config_change(work):
    # with parser weights configured the demo parser's settings do not matter; nor do the check goals
    edit_config(work, lambda c: c["parsing"].setdefault("demo", {}).update(steps=5))
    # how a training runs (loader processes), not what it computes
    edit_config(work, lambda c: c["train"].update(num_workers=1))
    # nor how an evaluation runs
    edit_config(work, lambda c: c["evaluation"].update(num_workers=0, batch_size=7))
    assert planned_jobs(work) == {}


def test_rerun_after_an_evaluation_setting_change_evaluates_again_only(work):
    edit_config(work, lambda c: c["evaluation"].setdefault("sensitivity", {}).update(stride=30))  # the maps alone
    assert planned_jobs(work) == {"eval_sensitivity": 3, "all": 1}
    edit_config(work, lambda c: c["evaluation"]["sensitivity"].update(stride=40))
    edit_config(work, lambda c: c["evaluation"].update(demo_splits=["test"], sensitivity={"benchmarks": ["demo_test"]}))
    # fewer benchmarks: the table again, the new split's maps; the other results stay
    assert planned_jobs(work) == {"eval_sensitivity": 3, "eval_table": 1, "all": 1}


def test_incremental_touch_reruns_only_where_snakemake_cannot_checksum(work):
    """A moved timestamp on an input below Snakemake's --max-checksum-file-size (1 MB) is compared by
    checksum: `touch` on annotations is no change. Above it (parser weights) the timestamp decides."""
    import os
    import time

    later = time.time() + 60
    os.utime(work / "spin_example.npz", (later, later))
    assert planned_jobs(work) == {}
    assert (work / "parser.pth").stat().st_size > 1_000_000
    os.utime(work / "parser.pth", (later, later))
    assert planned_jobs(work) == WEIGHTS_CHANGED
