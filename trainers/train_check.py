"""The trained regressors against the mean-pose baseline on a test split (results/checks/train.json).

    python -m trainers.train_check TEST.h5 BODY.npz OUT.json --models results/train/pare/best.pt ... \
        --train-files results/packed/demo_train.h5 [--min-gain 0.2] [--mean-params smpl_mean_params.npz]

Each model's best checkpoint predicts every test row with SMPL parameters (no augmentation); MPJPE and
PA-MPJPE (mm, LSP-14 of the H36M-17 regressor, pelvis-centred: trainers.pose_metrics) against the body
model on the ground-truth parameters. The baseline answers every image with the mean pose and shape of
the training rows (the regressors' own starting point, MeanParams): the camera does not enter these
pelvis-centred 3D errors, so its best camera changes nothing. A model passes when both its errors are at
most (1 - min_gain) x the baseline's; the command fails naming the models that do not, unless --no-fail.
Each model's `spread_root` / `spread_body`: how much its predicted rotations vary between the test images,
as a fraction of how much the true ones do (near 0: the model answers every image alike; a warning says so).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from models.smpl_head import MeanParams, Prediction, SMPLHead
from pipeline.body.model import BodyModel, load_body_model
from pipeline.config import resolve_device
from pipeline.io import atomic_output

log = logging.getLogger(__name__)

COLLAPSED_SPREAD = 0.25  # answers varying less than this fraction of the truth's spread: the image is ignored


class MeanPose(torch.nn.Module):
    """Answers every crop with the mean parameters: the baseline a trained regressor must beat."""

    def __init__(self, mean: MeanParams):
        super().__init__()
        from models.rotations import rot6d_to_rotmat

        pose6d = torch.as_tensor(mean.pose, dtype=torch.float32).reshape(1, 24, 6)
        self.register_buffer("pose6d", pose6d)
        self.register_buffer("rotmat", rot6d_to_rotmat(pose6d.reshape(-1, 6)).reshape(1, 24, 3, 3))
        self.register_buffer("betas", torch.as_tensor(mean.shape, dtype=torch.float32).reshape(1, -1))
        self.register_buffer("cam", torch.as_tensor(mean.cam, dtype=torch.float32).reshape(1, 3))

    def forward(self, images: torch.Tensor) -> Prediction:
        b = len(images)
        return Prediction(rotmat=self.rotmat.expand(b, -1, -1, -1), betas=self.betas.expand(b, -1),
                          cam=self.cam.expand(b, -1), pose6d=self.pose6d.expand(b, -1, -1))


def load_trained(path: str | Path) -> tuple[str, torch.nn.Module, int]:
    """(model name, network, input resolution) of one of our training checkpoints."""
    from models import hmr, pare
    from trainers.train import load_training_state

    settings = load_training_state(Path(path))["settings"]
    model = settings["model"]
    net = pare.from_pretrained(path) if model == "pare" else hmr.from_pretrained(path)
    return model, net.eval(), int(settings["augment"]["output_resolution"])


def _relative(gain: float) -> str:
    return f"{100 * gain:.0f}% below" if gain >= 0 else f"{-100 * gain:.0f}% above"


def run_check(test: str, body_file: str, models: list[str], train_files: list[str], min_gain: float,
              mean_params: str | None = None, device: str = "auto", batch_size: int = 32) -> dict:
    from trainers.train import evaluate, mean_params_from_packed

    dev = torch.device(resolve_device(device))
    body = BodyModel(load_body_model(body_file)).to(dev)
    mean = MeanParams.from_npz(mean_params) if mean_params else mean_params_from_packed(train_files)
    baseline_net = MeanPose(mean).to(dev)
    baseline = evaluate(baseline_net, SMPLHead(body, resolution=224), test, dev, batch_size)
    log.info("mean-pose baseline on %s (%d rows): MPJPE %.1f mm, PA-MPJPE %.1f mm", test, baseline["rows"],
             baseline["mpjpe"], baseline["pa_mpjpe"])
    result = {"test_file": test, "rows": baseline["rows"], "min_gain": min_gain,
              "baseline": {"mpjpe": baseline["mpjpe"], "pa_mpjpe": baseline["pa_mpjpe"],
                           "what": "mean pose and shape of the training rows (the camera does not enter these errors)"},
              "models": {}}
    for path in models:
        name, net, resolution = load_trained(path)
        errors = evaluate(net.to(dev), SMPLHead(body, resolution=resolution), test, dev, batch_size)
        gains = {k: 1.0 - errors[k] / baseline[k] for k in ("mpjpe", "pa_mpjpe")}
        passed = all(g >= min_gain for g in gains.values())
        # how much the answers vary between images, as a fraction of how much the truth does
        spread = {part: errors[f"spread_{part}"] / max(errors[f"true_spread_{part}"], 1e-12) for part in ("root", "body")}
        result["models"][name] = {"checkpoint": str(path), "mpjpe": errors["mpjpe"], "pa_mpjpe": errors["pa_mpjpe"],
                                  "gain_mpjpe": gains["mpjpe"], "gain_pa_mpjpe": gains["pa_mpjpe"], "passed": passed,
                                  "spread_root": spread["root"], "spread_body": spread["body"]}
        log.info("%s: MPJPE %.1f mm (%s the baseline's), PA-MPJPE %.1f mm (%s): %s", name, errors["mpjpe"],
                 _relative(gains["mpjpe"]), errors["pa_mpjpe"], _relative(gains["pa_mpjpe"]),
                 "passes" if passed else "FAILS")
        if min(spread.values()) < COLLAPSED_SPREAD:
            log.warning("%s answers nearly alike for every image: its rotations vary %.0f%% (root) and %.0f%% (other "
                        "joints) as much as the truth's between the test images; it has not learned to read them "
                        "(train longer, or from pretrained backbone weights)", name, 100 * spread["root"],
                        100 * spread["body"])
    result["passed"] = all(m["passed"] for m in result["models"].values())
    return result


def main(argv: list[str] | None = None) -> int:
    from pipeline.cli import start_logging

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("test", help="packed test split (.h5)")
    parser.add_argument("body", help="body model file (.npz)")
    parser.add_argument("out", help="the check's JSON")
    parser.add_argument("--models", nargs="+", required=True, help="our training checkpoints (best.pt)")
    parser.add_argument("--train-files", nargs="+", required=True, help="packed training files (the mean parameters)")
    parser.add_argument("--min-gain", type=float, default=0.2)
    parser.add_argument("--mean-params", help="SPIN's smpl_mean_params.npz instead of the training files' mean")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--no-fail", action="store_true", help="report without failing")
    args = parser.parse_args(argv)
    start_logging()
    result = run_check(args.test, args.body, args.models, args.train_files, args.min_gain, args.mean_params, args.device)
    with atomic_output(args.out) as tmp:
        tmp.write_text(json.dumps(result, indent=1) + "\n")
    failed = [name for name, m in result["models"].items() if not m["passed"]]
    if failed and not args.no_fail:
        raise SystemExit(f"train check: {', '.join(failed)} did not beat the mean-pose baseline by {args.min_gain:.0%} "
                         f"in MPJPE and PA-MPJPE on {args.test} (see {args.out}); train longer (train.runs.<run>.steps) "
                         f"or set train.check.fail false to report only")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
