"""The workflow's training runs from the config: presets with overrides, the files a run reads, its
settings (only what the model reads) and its launch command."""

import json
import shlex

import pytest
import yaml

from conftest import REPO


def config(**train):
    from pipeline.config import validate_config

    c = yaml.safe_load((REPO / "config.yaml").read_text())
    c["train"] = {**c.get("train", {}), **train}
    validate_config(c, REPO / "workflow" / "schemas" / "config.schema.yaml")
    return c


def settings_of(c, run, **kw):
    from trainers.runs import run_settings, run_spec

    names = list(run_spec(c["train"], run)["datasets"])
    base = dict(packed=lambda n: f"p/{n}.h5", train_files=[f"p/{n}.h5" for n in names], val_file="p/val.h5",
                body="body.npz", prior="prior.npz", init=None, out_dir=f"results/train/{run}",
                parser_weights="parser.pth", parser_width=0.25)
    return run_settings(c, run, **{**base, **kw})


def test_both_presets_define_every_run_with_valid_settings():
    from trainers.runs import MODEL_RUNS, load_presets

    presets = load_presets()
    for name in ("demo", "paper"):
        c = config(preset=name)
        for run in (r for runs in MODEL_RUNS.values() for r in runs):
            s = settings_of(c, run)
            assert s["model"] == presets[name][run]["model"]
            assert sum(s["ratios"]) > 0 and len(s["ratios"]) == len(s["train_files"])
    paper = config(preset="paper")
    assert settings_of(paper, "pare")["ratios"] == [0.3, 0.6, 0.6, 0.6, 0.1]  # PARE's mix
    assert settings_of(paper, "dsr")["ratios"] == [0.5, 0.3, 0.2] and settings_of(paper, "dsr")["start_dsr_epochs"] == 2
    assert settings_of(paper, "pare_stage1")["loss"]["part"] == 1.0 and settings_of(paper, "pare")["loss"]["part"] == 0.0
    # a backbone may start from the parser (backbone_init: parser), at the parser's width
    parser_start = config(runs={"hmr": {"backbone": "deeplab_xception-encoder", "backbone_init": "parser"}})
    assert (settings_of(parser_start, "hmr")["backbone_init"], settings_of(parser_start, "hmr")["width_mult"]) == ("parser.pth", 0.25)
    stage2 = settings_of(parser_start, "pare", init="results/train/pare_stage1/best.pt")
    assert stage2["backbone_init"] is None and stage2["init"] == "results/train/pare_stage1/best.pt"
    with pytest.raises(ValueError, match="no parser weights"):
        settings_of(parser_start, "hmr", parser_weights=None)
    with pytest.raises(ValueError, match="deeplab_xception"):
        settings_of(config(runs={"hmr": {"backbone": "resnet50", "backbone_init": "parser"}}), "hmr")
    loss = settings_of(paper, "hmr")["loss"]  # the papers' weights, from the schema
    assert (loss["keypoints"], loss["keypoints_3d"], loss["pose"], loss["betas"], loss["total"]) == (5, 5, 1, 0.001, 60)


def test_overrides_merge_key_by_key_and_replace_a_mix_whole():
    c = config(runs={"hmr": {"steps": 7, "augment": {"flip_prob": 0.0}, "datasets": {"demo_test": 1.0}}})
    s = settings_of(c, "hmr")
    assert s["steps"] == 7 and s["augment"]["flip_prob"] == 0.0
    assert s["augment"]["output_resolution"] == 128  # the preset's other augmentation keys stay
    assert s["train_files"] == ["p/demo_test.h5"] and s["ratios"] == [1.0]


def test_a_model_reads_only_its_own_settings():
    """A DSR loss setting is not part of HMR's or PARE's settings (a change to it retrains DSR only)."""
    a, b = config(), config()
    b["dsr_losses"]["sigma"] = 3e-5
    b["train"]["loss"]["dsr_mc"] = 0.5
    for run in ("pare_stage1", "pare", "hmr"):
        assert settings_of(a, run) == settings_of(b, run), run
    assert settings_of(a, "dsr") != settings_of(b, "dsr")
    c = config()
    c["train"]["loss"]["part"] = 2.0  # PARE's part loss: nothing of HMR's or DSR's
    assert settings_of(c, "dsr") == settings_of(a, "dsr") and settings_of(c, "hmr") == settings_of(a, "hmr")
    assert settings_of(c, "pare_stage1") != settings_of(a, "pare_stage1")
    assert settings_of(a, "hmr")["prior"] is None


def test_bad_runs_are_named():
    from trainers.runs import init_source, run_spec

    with pytest.raises(ValueError, match="unknown training settings|unexpected keyword|stepz"):
        settings_of(config(runs={"hmr": {"stepz": 3}}), "hmr")
    with pytest.raises(ValueError, match="train.runs.hmr.datasets"):
        run_spec(config(runs={"hmr": {"datasets": {}}})["train"], "hmr")
    with pytest.raises(ValueError, match="does not train"):
        init_source({"init": "pare_stage1"}, "pare", ["hmr", "pare"])
    with pytest.raises(ValueError, match="is not a file"):
        init_source({"init": "/nowhere/spin.pt"}, "dsr", ["dsr"])
    assert init_source({"init": "pare_stage1"}, "pare", ["pare_stage1", "pare"]) == ("pare_stage1", "results/train/pare_stage1/best.pt")
    assert init_source({"init": None}, "dsr", ["dsr"]) == (None, None)


def test_launch_commands_for_one_gpu_several_and_several_nodes():
    from trainers.runs import launch_command

    settings = json.dumps({"model": "hmr", "note": "it's quoted"})
    one = launch_command(1, 1, settings)
    assert shlex.split(one) == ["python", "-m", "trainers.train", "--settings-json", settings]
    four = shlex.split(launch_command(4, 1, settings))
    assert four[:6] == ["torchrun", "--standalone", "--nnodes", "1", "--nproc-per-node", "4"] and four[-1] == settings
    nodes = launch_command(4, 2, settings)
    assert "srun --nodes 2 --ntasks-per-node 1 torchrun --nnodes 2 --nproc-per-node 4" in nodes
    assert "--rdzv-backend c10d" in nodes and "SLURM_JOB_ID" in nodes
