"""The training check (trained models against the mean-pose baseline) and the training curves figure."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from test_pack import make_pack, packed_inputs  # noqa: F401 - the packed-inputs fixture


@pytest.fixture(scope="module")
def packed(tmp_path_factory, split, body_file, packed_inputs):  # noqa: F811
    out, _ = make_pack(tmp_path_factory.mktemp("check_pack"), split, body_file, packed_inputs)
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory, packed, body_file):
    """A 2-step HMR whose output layers are then zeroed: it answers every image with its mean parameters."""
    from trainers.augment import AugmentSettings
    from trainers.train import TrainSettings, load_training_state, save_training_state, train

    out = tmp_path_factory.mktemp("trained")
    s = TrainSettings(model="hmr", out_dir=str(out / "hmr"), train_files=[str(packed)], val_file=None, body=str(body_file),
                      width_mult=0.0625, batch_size=4, steps=2, num_workers=0, device="cpu",
                      augment=AugmentSettings(output_resolution=64))
    train(s)
    state = load_training_state(out / "hmr" / "best.pt")
    for key in ("head.decpose.weight", "head.decpose.bias", "head.decshape.weight", "head.decshape.bias",
                "head.deccam.weight", "head.deccam.bias"):
        state["model"][key].zero_()
    from models.hmr import HMR

    model = HMR(width_mult=0.0625)
    model.load_state_dict(state["model"])
    save_training_state(out / "zeroed.pt", model, torch.optim.Adam(model.parameters()), torch.amp.GradScaler("cuda", enabled=False),
                        2, 0.0, s)
    return out


def test_a_model_that_answers_the_mean_scores_the_baseline_and_fails(tmp_path, packed, body_file, trained):
    """The baseline is the mean of the training rows (the regressors' start): a model that only returns
    its mean parameters has the baseline's errors exactly, so it gains nothing and fails the check."""
    from trainers.train_check import main, run_check

    result = run_check(str(packed), str(body_file), [str(trained / "zeroed.pt")], [str(packed)], 0.2, device="cpu")
    model = result["models"]["hmr"]
    assert result["rows"] > 0 and result["baseline"]["mpjpe"] > 0
    assert model["mpjpe"] == pytest.approx(result["baseline"]["mpjpe"], rel=1e-4)
    assert model["pa_mpjpe"] == pytest.approx(result["baseline"]["pa_mpjpe"], rel=1e-4)
    assert abs(model["gain_mpjpe"]) < 1e-3 and not model["passed"] and not result["passed"]
    # the same answer for every image: no spread, while the truth's rotations vary
    assert model["spread_root"] < 1e-6 and model["spread_body"] < 1e-6
    out = tmp_path / "train.json"
    with pytest.raises(SystemExit, match="hmr did not beat the mean-pose baseline by 20%"):
        main([str(packed), str(body_file), str(out), "--models", str(trained / "zeroed.pt"), "--train-files", str(packed),
              "--device", "cpu"])
    assert json.loads(out.read_text())["passed"] is False  # written before failing, for the user to read
    assert main([str(packed), str(body_file), str(out), "--models", str(trained / "zeroed.pt"), "--train-files", str(packed),
                 "--device", "cpu", "--no-fail", "--min-gain", "0.5"]) == 0
    assert json.loads(out.read_text())["min_gain"] == 0.5


def test_a_model_better_than_the_baseline_passes(packed, body_file, trained, monkeypatch):
    """Gains are 1 - model / baseline per metric; a model passes when both reach min_gain."""
    import trainers.train as train_module
    from trainers.train_check import run_check

    real = train_module.evaluate

    def halved(model, head, path, device, batch_size=32, predict=None):
        errors = real(model, head, path, device, batch_size, predict)
        if type(model).__name__ == "MeanPose":
            return errors
        return {**errors, "mpjpe": errors["mpjpe"] / 2, "pa_mpjpe": errors["pa_mpjpe"] * 0.7}

    monkeypatch.setattr(train_module, "evaluate", halved)
    result = run_check(str(packed), str(body_file), [str(trained / "zeroed.pt")], [str(packed)], 0.25, device="cpu")
    model = result["models"]["hmr"]
    assert model["gain_mpjpe"] == pytest.approx(0.5, abs=1e-4) and model["gain_pa_mpjpe"] == pytest.approx(0.3, abs=1e-4)
    assert model["passed"] and result["passed"]
    assert not run_check(str(packed), str(body_file), [str(trained / "zeroed.pt")], [str(packed)], 0.35, device="cpu")["passed"]


def test_training_curves_figure(tmp_path, trained):
    from trainers.train_figure import draw, read_metrics

    columns = read_metrics(trained / "hmr" / "metrics.csv")
    assert list(columns["total"][0]) == [2] and np.isfinite(columns["total"][1]).all()
    other = tmp_path / "pare" / "metrics.csv"
    other.parent.mkdir()
    other.write_text("step,total,part,val_mpjpe,val_pa_mpjpe\n1,5.0,0.5,,\n2,4.0,0.4,300,150\n3,3.0,0.3,,\n4,2.5,0.2,250,120\n")
    draw(tmp_path / "curves.png", [trained / "hmr" / "metrics.csv", other])
    figure = np.asarray(Image.open(tmp_path / "curves.png"))
    assert figure.shape == (22 + 2 * 320, 2 * 480, 3)
    # each run has its own colour in the loss panel (orange: the second run)
    loss_panel = figure[22:22 + 320, :480]
    assert (np.abs(loss_panel.astype(int) - (255, 127, 14)).sum(-1) < 30).sum() > 20


def test_prediction_spread_compares_the_answers_variation_with_the_truths():
    from models.rotations import axis_angle_to_rotmat
    from trainers.train import prediction_spread

    g = torch.Generator().manual_seed(0)
    true = axis_angle_to_rotmat(torch.randn(50, 24, 3, generator=g))
    same = true[:1].expand(50, -1, -1, -1)
    s = prediction_spread(same, true)
    assert s["spread_root"] == 0.0 and s["spread_body"] == 0.0
    assert s["true_spread_root"] > 0.2 and s["true_spread_body"] > 0.2
    mine = prediction_spread(true, true)
    assert mine["spread_root"] == mine["true_spread_root"] and mine["spread_body"] == mine["true_spread_body"]
    only_root = true.clone()
    only_root[:, 1:] = true[0, 1:]
    assert prediction_spread(only_root, true)["spread_body"] == 0.0 < prediction_spread(only_root, true)["spread_root"]
