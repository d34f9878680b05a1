"""The Snakemake workflow itself: lint, dry run and a real run of the default targets."""

import csv
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import REPO


def snakemake_command(*args, cwd) -> list[str]:
    """The command line that runs the checkout's workflow with `cwd` as its working directory."""
    return [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(cwd), *args]


def snakemake(*args, cwd, check=True):
    """Run the checkout's workflow with `cwd` as its working directory (results, logs, .snakemake)."""
    proc = subprocess.run(snakemake_command(*args, cwd=cwd), capture_output=True, text=True, cwd=cwd)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


SMALL_WORLD = {
    "shard_size": 4,
    "splits": {"train": {"count": 6, "no_smpl_fraction": 0.2}, "val": {"count": 3}, "test": {"count": 3},
               "occluded": {"count": 3, "occluders": [1, 2]}},
    "scans": {"count": 3, "shard_size": 2, "views": 4, "resolution": 128},
}
# every run two steps of a tiny network; a two-step model cannot beat the baseline, so the check reports only
TINY_RUN = {"steps": 2, "width_mult": 0.0625, "batch_size": 4, "val_every": 2, "checkpoint_every": 1, "log_every": 1,
            "augment": {"output_resolution": 64}}
TINY_TRAIN = {"runs": {run: json.loads(json.dumps({**TINY_RUN, **({"start_dsr_epochs": 0} if run == "dsr" else {})}))
                       for run in ("pare_stage1", "pare", "hmr", "dsr")},  # copies: no YAML aliases between runs
              "num_workers": 0, "check": {"fail": False}}
# what a change of the demo training split's packed file retrains, and then evaluates again (three models on
# the demo test and occluded splits, the occluded split's sensitivity maps, the table)
TRAIN_ALL = {"train_pare": 2, "train_hmr": 1, "train_dsr": 1, "train_check": 1, "train_figure": 1, "evaluate": 6,
             "eval_sensitivity": 3, "eval_table": 1}
# what a retrained model evaluates again
EVAL_ONE = {"evaluate": 2, "eval_sensitivity": 1, "eval_table": 1}
REPORT = {}  # the run test's report, for the Chromium test


@pytest.fixture
def workdir(tmp_path):
    """A throwaway working directory with the default config shrunk to a tiny world."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["world"].update(SMALL_WORLD)
    config["parsing"]["demo"] = {"steps": 20, "input_resolution": 96, "batch_size": 4}
    config["parsing"]["scales"] = [1.0, 0.75]
    config["prior"] = {"shard_size": 2, "resolution": 128}
    config["train"].update(TINY_TRAIN)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def test_lint_is_clean(workdir):
    proc = snakemake("--lint", cwd=workdir)
    assert "Congratulations" in proc.stdout + proc.stderr


def test_dry_run_plans_all(workdir):
    proc = snakemake("-n", "--cores", "8", "all", cwd=workdir)
    for rule, count in (("demo_body", 1), ("body_figure", 1), ("world_image_shard", 5), ("world_split", 4),
                        ("world_scan_shard", 2), ("world_scan_index", 1), ("world_figure", 1),
                        ("partseg_shard", 4), ("partseg_index", 4), ("partseg_check", 1), ("partseg_figure", 1),
                        ("parsing_demo_weights", 1), ("parsing_shard", 4), ("parsing_index", 4), ("parsing_check", 1),
                        ("parsing_figure", 1), ("prior_map", 2), ("prior_reduce", 1), ("prior_check", 1),
                        ("prior_figure", 1), ("pack_split", 4), *TRAIN_ALL.items()):
        assert re.search(rf"^{rule}\s+{count}$", proc.stdout, re.M), (rule, proc.stdout[-1500:])


def test_the_demo_parser_trains_at_one_size_and_labels_at_another(workdir):
    """parsing.demo.input_resolution is the training crop; every stage that parses (pseudo-labels and the
    prior's views) runs the demo parser at parsing.demo.inference_resolution (default 160; null: the
    training size) and at parsing.demo.scales (default 0.75/1/1.25; null: the preset's), unless
    parsing.scales overrides them."""

    config = yaml.safe_load((workdir / "config.yaml").read_text())

    def plan_commands():
        """The trainer's and the parsing stages' command lines, planned for `config` as changed so far."""
        (workdir / "config.yaml").write_text(yaml.safe_dump(config))
        plan = snakemake("-n", "-p", "--cores", "2", "all", cwd=workdir).stdout.splitlines()
        train = [line for line in plan if "trainers.demo_parser" in line]
        parse = [line for line in plan if "pipeline.parsing shard" in line or "pipeline.prior map" in line]
        assert len(train) == 1 and len(parse) == 4 + 2, plan[-40:]
        return train[0], parse

    train, parse = plan_commands()
    assert "--resolution 96 " in train
    assert all(re.search(r"--input-resolution 160\b", line) for line in parse), parse
    config["parsing"]["demo"]["inference_resolution"] = None
    train, parse = plan_commands()
    assert "--resolution 96 " in train
    assert all(re.search(r"--input-resolution 96\b", line) for line in parse), parse
    assert all(re.search(r"--scales 1.0 0.75( |$)", line) for line in parse), parse  # the workdir's parsing.scales
    config["parsing"]["scales"], config["parsing"]["demo"]["scales"] = None, [0.75, 1, 1.25]
    _, parse = plan_commands()
    assert all(re.search(r"--preset dsr .*--scales 0.75 1 1.25( |$)", line) for line in parse), parse
    config["parsing"]["demo"]["scales"] = None
    _, parse = plan_commands()
    assert all("--preset dsr" in line and "--scales" not in line for line in parse), parse


@pytest.mark.slow
def test_run_builds_body_model_world_and_figures(workdir):
    snakemake("--cores", "2", "all", cwd=workdir)
    from pipeline.body.model import BodyModel

    model = BodyModel.from_file(workdir / "results/body/demo_body.npz")
    assert model.data.name == "demo_body" and model.data.num_vertices > 2000
    figure = np.asarray(Image.open(workdir / "results/figures/body_model.png"))
    assert figure.shape[1] == 4 * figure.shape[0]
    assert (figure < 250).any(axis=-1).mean() > 0.05  # the body covers part of every panel
    assert (workdir / "logs/demo_body/demo_body.log").read_text().count("demo body (seed 0)") == 1
    assert (workdir / "benchmarks/demo_body/demo_body.tsv").exists()
    from pipeline.datasets import load_annotations

    for split, count in (("train", 6), ("test", 3), ("occluded", 3)):
        ann = load_annotations(workdir / f"results/world/demo/{split}.npz")
        assert len(ann) == count and all(ann.image_path(i).is_file() for i in range(count))
        with np.load(workdir / f"results/world/demo/{split}_gt.npz") as gt:
            assert gt["crop_parts"].shape == (count, 224, 224)
    index = json.loads((workdir / "results/world/scans/index.json").read_text())["scans"]
    assert len(index) == 3 and all((workdir / "results/world/scans" / s["mesh"]).is_file() for s in index)
    assert np.asarray(Image.open(workdir / "results/figures/world_samples.png")).shape[0] == 12 * 224  # 3 rows per split
    check = json.loads((workdir / "results/checks/partseg.json").read_text())
    assert check["pixel_agreement"] >= 0.99 and check["samples"] == 6 + 3 + 3 + 3 - check_absent(workdir)
    assert set(check["per_part_iou"]) >= {"head", "leftHand", "rightFoot"}
    parsing = json.loads((workdir / "results/checks/parsing.json").read_text())
    assert parsing["samples"] == 9 and 0 <= parsing["miou"] <= 1 and "meets_goal" in parsing  # a 20-step parser: no bar
    index = json.loads((workdir / "results/parsing/demo_train/index.json").read_text())
    assert index["counts"]["rows"] == 6 and index["counts"]["skipped"] == 0
    prior_check = json.loads((workdir / "results/checks/prior.json").read_text())
    assert prior_check["scans_with_ground_truth"] == 3 and 0 <= prior_check["argmax_agreement"] <= 1
    with np.load(workdir / "results/prior/clothing_prior.npz") as z:
        assert int(z["num_views"]) == 3 * 4 and list(z["scans"]) == ["scan_00000", "scan_00001", "scan_00002"]
        assert z["face_prior"].shape == (len(model.faces), 20) and np.allclose(z["vertex_prior"].sum(1), 1, atol=1e-5)
    assert np.asarray(Image.open(workdir / "results/figures/prior.png")).shape[1] > 600
    assert np.asarray(Image.open(workdir / "results/figures/dsr_rendering.png")).shape[1] == 4 * 224
    from pipeline.pack import verify

    for split in ("train", "val", "test", "occluded"):
        assert verify(workdir / f"results/packed/demo_{split}.h5") == ([], [])
    # the trainings: published results, their log and benchmark, the check against the baseline, the curves
    for run, rule in (("pare_stage1", "train_pare"), ("pare", "train_pare"), ("hmr", "train_hmr"), ("dsr", "train_dsr")):
        for name in ("last.pt", "best.pt", "metrics.csv", "summary.json"):
            assert (workdir / f"results/train/{run}/{name}").is_file(), (run, name)
        assert json.loads((workdir / f"results/train/{run}/summary.json").read_text())["step"] == 2
        assert (workdir / f"benchmarks/{rule}/{run}.tsv").is_file() and "done" in (workdir / f"logs/{rule}/{run}.log").read_text()
    assert "initialised from results/train/pare_stage1/best.pt" in (workdir / "logs/train_pare/pare.log").read_text()
    train_check = json.loads((workdir / "results/checks/train.json").read_text())
    assert set(train_check["models"]) == {"pare", "hmr", "dsr"} and train_check["rows"] == 3
    assert train_check["baseline"]["mpjpe"] > 0 and all(m["mpjpe"] > 0 for m in train_check["models"].values())
    assert np.asarray(Image.open(workdir / "results/figures/train_curves.png")).shape[1] == 2 * 480
    # the evaluation: each model on the demo test and occluded splits, the table, the sensitivity maps
    with open(workdir / "results/eval/table.csv") as f:
        table = list(csv.DictReader(f))
    assert sorted((r["model"], r["benchmark"]) for r in table) == sorted(
        (m, b) for m in ("pare", "hmr", "dsr") for b in ("demo_occluded", "demo_test"))
    for row in table:
        result = json.loads((workdir / f"results/eval/{row['model']}/{row['benchmark']}.json").read_text())
        assert result["scored"] == 3 and result["skipped"] == 0 and result["kind"] == "demo"
        assert float(row["mpjpe"]) == pytest.approx(result["mpjpe"]) and result["pve"] > 0 and row["paper"] == ""
        with np.load(workdir / f"results/eval/{row['model']}/{row['benchmark']}_samples.npz") as z:
            assert z["per_joint"].shape == (3, 14)
    for model in ("pare", "hmr", "dsr"):
        with np.load(workdir / f"results/eval/{model}/sensitivity/demo_occluded.npz") as z:
            assert z["per_joint"].shape == (3, 6, 6, 14)
        assert Image.open(workdir / f"results/eval/{model}/sensitivity/demo_occluded.png").size[0] == 4 * 200
    assert "| pare | demo_test | 3 | 0 |" in (workdir / "results/eval/table.md").read_text()
    # the report holds every registered figure and table
    snakemake("--report", "report.html", cwd=workdir)
    html = (workdir / "report.html").read_text()
    for name in ("body_model.png", "world_samples.png", "train_curves.png", "eval.png", "table.csv", "demo_occluded.png",
                 "Occlusion sensitivity", "Evaluation", "Training"):
        assert name in html, name
    REPORT["html"] = workdir / "report.html"
    # nothing left to do on a second run
    assert "Nothing to be done" in snakemake("-n", "--cores", "2", "all", cwd=workdir).stdout
    _published_checkpoint_is_evaluated_beside_the_paper(workdir)
    # growing the train split reruns its last shard, its merge and the figure; nothing else
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["world"]["splits"]["train"]["count"] = 7
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    plan = snakemake("-n", "--cores", "2", "all", cwd=workdir).stdout
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", plan.split("Job stats:")[1].split("total")[0], re.M))
    # the demo parser is trained on the train split, so every split's clothing labels follow it
    assert jobs == {"world_image_shard": "1", "world_split": "1", "world_figure": "1", "partseg_shard": "1",
                    "partseg_index": "1", "partseg_check": "1", "partseg_figure": "1", "parsing_demo_weights": "1",
                    "parsing_shard": "4", "parsing_index": "4", "parsing_check": "1", "parsing_figure": "1",
                    "prior_map": "2", "prior_reduce": "1", "prior_check": "1", "prior_figure": "1", "pack_split": "4",
                    "dsr_figure": "1", **{k: str(v) for k, v in TRAIN_ALL.items()}, "all": "1"}, plan[-2000:]
    assert "output: results/partseg/demo_train/shard-0000.npz" in plan and "results/partseg/demo_test/shard" not in plan.split("rule partseg_check")[0]
    assert "output: results/world/demo/shards/train-0001" in plan
    assert "output: results/world/demo/shards/train-0000" not in plan


def _published_checkpoint_is_evaluated_beside_the_paper(workdir):
    """The "reproduce the papers' tables" path, no training: PARE's released .ckpt layout (the official trainer's
    file; a freshly initialised network in it) configured under evaluation.checkpoints, on a benchmark of kind
    3dpw (the demo test split's SPIN-format file), lands in the table beside PARE's published 3DPW numbers."""
    from test_published_checkpoints import fixture, tensors, write_lightning

    from models.pare import PARE
    from trainers.evaluate import run

    state = tensors(fixture("pare_checkpoint_keys.txt"))
    torch.manual_seed(0)
    state.update({f"model.{k}": v for k, v in PARE().state_dict().items()})
    write_lightning(workdir / "pare_checkpoint.ckpt", state, legacy=False)
    original = (workdir / "config.yaml").read_text()
    config = yaml.safe_load(original)
    config["evaluation"].update({
        "models": ["pare_released"], "sensitivity": {"enabled": False},
        "checkpoints": {"pare_released": {"path": "pare_checkpoint.ckpt", "paper": "pare"}},
        "benchmarks": {"pw3d_like": {"annotations": "results/world/demo/test.npz", "images": "results/world/demo",
                                     "kind": "3dpw"}}})
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake("--cores", "2", "results/eval/table.csv", cwd=workdir)
    with open(workdir / "results/eval/table.csv") as f:
        table = {(r["model"], r["benchmark"]): r for r in csv.DictReader(f)}
    assert set(table) == {("pare_released", b) for b in ("pw3d_like", "demo_test", "demo_occluded")}
    row = table[("pare_released", "pw3d_like")]
    assert row["paper"] == "pare" and (float(row["paper_mpjpe"]), float(row["paper_pa_mpjpe"])) == (82.0, 50.9)
    assert table[("pare_released", "demo_test")]["paper"] == ""  # the demo splits have no published numbers
    result = json.loads((workdir / "results/eval/pare_released/pw3d_like.json").read_text())
    assert result["model"] == "pare" and result["kind"] == "3dpw" and result["scored"] == 3
    by_hand, _ = run(str(workdir / "pare_checkpoint.ckpt"), str(workdir / "results/world/demo/test.npz"),
                     str(workdir / "results/world/demo"), str(workdir / "results/body/demo_body.npz"), "3dpw")
    assert np.isfinite(result["mpjpe"]) and result["mpjpe"] == pytest.approx(by_hand["mpjpe"], rel=1e-4)
    (workdir / "config.yaml").write_text(original)


def test_the_report_renders_in_headless_chromium(tmp_path):
    """The run test's report opened in a browser: its scripts build the page (the DOM names the categories)
    and the screenshot is not blank."""
    import shutil

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium is not installed (bash scripts/setup.sh --dev installs Debian's chromium)")
    if "html" not in REPORT:
        pytest.skip("the workflow run test did not build the report (run it first, in the same session)")
    url = REPORT["html"].as_uri()
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000", "--window-size=1280,900"]
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for category in ("Evaluation", "Training"):
        assert category in dom.stdout, dom.stdout[-3000:]
    shot = tmp_path / "report.png"
    proc = subprocess.run([*flags, f"--screenshot={shot}", url], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (900, 1280) and pixels.std() > 10  # drawn, not a blank page


def test_a_prior_of_papers_size_splits_into_shard_jobs(workdir):
    """2,500 scans x 10 views (DSR's AGORA prior): 250 map jobs of 10 scans, one reduce."""
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["world"]["scans"].update({"count": 2500, "shard_size": 500, "views": 10})
    config["prior"] = {"shard_size": 10}
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    plan = snakemake("-n", "--cores", "8", "prior", cwd=workdir).stdout
    assert re.search(r"^prior_map\s+250$", plan, re.M) and re.search(r"^prior_reduce\s+1$", plan, re.M), plan[-1500:]
    assert "--indices 2490 2500" in plan


def check_absent(workdir):
    """Rows of the demo datasets without SMPL (not compared with the ground truth)."""
    return sum(json.loads((workdir / f"results/partseg/demo_{s}/index.json").read_text())["counts"]["absent"]
               for s in ("train", "test", "occluded"))


def test_parsing_without_weights_or_world_fails_with_guidance(workdir):
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["world"]["enabled"] = False
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake("-n", "--cores", "1", "all", cwd=workdir, check=False)
    assert proc.returncode != 0 and "parsing.weights" in proc.stdout + proc.stderr


def test_real_smpl_config_without_files_fails_with_guidance(workdir):
    proc = snakemake("-n", "--cores", "1", "all", "--config", f"body={{'model_dir': '{workdir}/smpl'}}", cwd=workdir, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "SMPL_NEUTRAL.pkl" in out and "smpl.is.tue.mpg.de" in out


@pytest.mark.slow
def test_a_configured_real_dataset_gets_labels_through_the_workflow(workdir):
    """A SPIN-format file made from the real fixtures (no SMPL fit: the row is recorded as absent)."""
    real = REPO.parent / "shared" / "fixtures" / "real"
    if not real.is_dir():
        pytest.skip(f"real fixtures not found at {real}")
    from pipeline.datasets import read_bbox_json, read_openpose_json
    from pipeline.io import save_npz

    center, scale = read_bbox_json(real / "spin_im1010_bbox.json")
    save_npz(workdir / "spin_example.npz", {
        "imgname": np.array(["spin_im1010.jpg"]), "center": center[None], "scale": np.array([scale]),
        "openpose": read_openpose_json(real / "spin_im1010_openpose.json")[:1], "has_smpl": np.zeros(1),
        "pose": np.zeros((1, 72)), "shape": np.zeros((1, 10)),
    })
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["world"]["enabled"] = False
    config["datasets"] = {"spin_example": {"annotations": "spin_example.npz", "images": str(real)}}
    config["parsing"]["enabled"] = False  # no demo world to train a parser on, no official weights: parts only
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    # the demo training preset names the demo world's splits: without the world, training says what to set
    failed = snakemake("-n", "--cores", "2", "all", cwd=workdir, check=False)
    assert failed.returncode != 0 and "unknown dataset 'demo_train'" in failed.stdout + failed.stderr
    config["train"]["enabled"] = False
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    plan = snakemake("-n", "--cores", "2", "all", cwd=workdir).stdout
    assert "world_image_shard" not in plan and "partseg_check" not in plan and "parsing" not in plan
    snakemake("--cores", "2", "all", cwd=workdir)
    index = json.loads((workdir / "results/partseg/spin_example/index.json").read_text())
    assert index["counts"] == {"rows": 1, "labelled": 0, "absent": 1, "skipped": 0}
    assert index["without_labels"][0]["imgname"] == "spin_im1010.jpg"
