"""Do a backbone's frozen features carry what the demo check needs? (README, "Training the regressors",
demo preset: why the demo trainings do not beat the mean pose.)

For each backbone, with its weights frozen, on the demo world's crops at the demo preset's size, without
augmentation:
- linear probes of the pooled features (mean and max over the map): which of the world's pose templates
  the crop shows, and which of eight 45-degree bins the body's yaw falls in (exact, and within one bin);
- a ridge regression of the 24 rotation matrices (lambda chosen on a held-out fifth of the training rows),
  scored with the mean shape;
- HMR's head (SPIN's iterative head, models.hmr.HMRHead) trained alone on the cached features for
  --steps steps (Adam, batch 16): with the papers' losses (trainers.losses.regressor_losses, default
  weights), without the 3D-joint term, and with the true yaw (cosine, sine) appended to the features.

Scores are on the validation split's rows with SMPL: template and yaw accuracy, and MPJPE / PA-MPJPE (mm,
LSP-14 of H36M-17, as trainers.train validates). The baseline is measured in the same run on the same rows:
the mean pose and shape (trainers.train_check.MeanPose), and, for the probes, always answering the
commonest class of the training rows.

Backbones: `scratch` (the preset's quarter-width ResNet-50, randomly initialised: what the demo trainings
start from), `parser` and `parser-encoder` (the trained demo parser's DeepLab features and its encoder,
`deeplab_xception[-encoder]` from --parser).

    python bench/demo_features.py [--results results] [--parser results/parsing/weights/demo_parser.pth]
                                  [--backbones scratch parser parser-encoder] [--steps 1000]
                                  [--resolution 128] [--width-mult 0.25] [--threads 2]

Needs the built demo world and its packed splits (`snakemake --cores 2 results/packed/demo_val.h5`, and the
parser's weights for the parser backbones). About 1.5 minutes per backbone on 2 CPU cores at 1,000 steps.
Last line: one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models import checkpoint, graphonomy  # noqa: E402
from models.backbones import build_backbone, load_pretrained_backbone  # noqa: E402
from models.hmr import HMRHead  # noqa: E402
from models.rotations import axis_angle_to_rotmat, mean_rotation, rot6d_to_rotmat  # noqa: E402
from models.smpl_head import Prediction, SMPLHead  # noqa: E402
from pipeline.body.model import BodyModel, load_body_model  # noqa: E402
from trainers.augment import AugmentSettings  # noqa: E402
from trainers.losses import LossWeights, regressor_losses  # noqa: E402
from trainers.packed import PackedDataset, normalize_images  # noqa: E402
from trainers.pose_metrics import joint_errors  # noqa: E402
from trainers.train import mean_params_from_packed  # noqa: E402
from trainers.train_check import MeanPose  # noqa: E402

BACKBONES = {"scratch": "resnet50", "parser": "deeplab_xception", "parser-encoder": "deeplab_xception-encoder"}
YAW_BINS = 8
BATCH = ("pose", "betas", "has_smpl", "keypoints", "joints3d", "has_joints3d")


def load_split(results: Path, split: str, resolution: int) -> dict:
    """A demo split's usable rows: the packed crops without augmentation, the training tensors, the
    world's template names and the body's yaw bin."""
    packed = results / "packed" / f"demo_{split}.h5"
    world = results / "world" / "demo"
    for path in (packed, world / f"{split}.npz", world / f"{split}_gt.npz"):
        if not path.exists():
            raise SystemExit(f"{path} is missing: build the demo world and its packed splits first "
                             f"(snakemake --cores 2 results/packed/demo_{split}.h5)")
    data = PackedDataset([str(packed)], AugmentSettings(output_resolution=resolution, enabled=False))
    arrays = data.files[0].arrays
    with np.load(world / f"{split}.npz") as a, np.load(world / f"{split}_gt.npz") as g:
        names, templates = a["imgname"].astype(str), g["template"].astype(str)
    with h5py.File(packed, "r") as f:
        packed_names = np.array([n.decode() if isinstance(n, bytes) else str(n) for n in f["annotations/imgname"][()]])
    if len(packed_names) != len(names) or (packed_names != names).any():
        raise SystemExit(f"{packed} and {world / f'{split}.npz'} list other images: rebuild the packed split")
    rows = [int(r) for r in data.files[0].usable if arrays["has_smpl"][r] > 0.5]
    batches = [data.batch([(0, r, 0, 0) for r in rows[lo:lo + 64]]) for lo in range(0, len(rows), 64)]
    split_data = {k: torch.cat([b[k] for b in batches]) for k in ("image", *BATCH)}
    forward = axis_angle_to_rotmat(split_data["pose"][:, :3].float())[:, :, 2]  # the body's z axis, camera frame
    yaw = torch.atan2(forward[:, 0], forward[:, 2])
    split_data["yaw"] = yaw
    split_data["yaw_bin"] = ((yaw + np.pi) / (2 * np.pi) * YAW_BINS).long().clamp(0, YAW_BINS - 1)
    split_data["template_name"] = templates[rows]
    return split_data


@torch.no_grad()
def features(net: torch.nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, max) over each feature map of the frozen backbone (eval mode: running statistics), (N, C)
    each. HMR's head pools by the mean; the probes see both."""
    net.eval()
    maps = [net(normalize_images(images[lo:lo + 50])) for lo in range(0, len(images), 50)]
    return torch.cat([m.mean((2, 3)) for m in maps]), torch.cat([m.amax((2, 3)) for m in maps])


@torch.no_grad()
def calibrate_batch_norm(net: torch.nn.Module, images: torch.Tensor) -> None:
    """Running statistics of a randomly initialised backbone from the training crops (cumulative averages),
    so that its eval-mode features are on the scale training sees."""
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    net.train()
    for lo in range(0, len(images), 50):
        net(normalize_images(images[lo:lo + 50]))
    net.eval()


def parser_width(path: Path) -> float:
    """The demo parser's width multiplier, read from its weights as the parser loader reads it."""
    state = checkpoint.strip_prefix(checkpoint.read_state_dict(path, what="demo parser weights",
                                                               source_hint="results/parsing/weights/demo_parser.pth"))
    return graphonomy.width_of(state)


def standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    mean, std = train.mean(0), train.std(0) + 1e-6
    return [(x - mean) / std for x in (train, *others)]


def linear_probe(x_train, y_train, x_val, classes: int, seed: int) -> torch.Tensor:
    """Validation predictions of a softmax classifier on standardised features (full batch, Adam)."""
    torch.manual_seed(seed)
    x_train, x_val = standardise(x_train, x_val)
    layer = torch.nn.Linear(x_train.shape[1], classes)
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(300):
        loss = F.cross_entropy(layer(x_train), y_train)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return layer(x_val).argmax(1)


@torch.no_grad()
def pose_errors(smpl: SMPLHead, rotmat, betas, gt_joints: torch.Tensor) -> dict[str, float]:
    """Mean MPJPE and PA-MPJPE (mm) of predicted parameters against ground-truth H36M-17 joints."""
    e = joint_errors(smpl.body(betas=betas, rotmat=rotmat).h36m_joints, gt_joints)
    return {k: round(float(e[k].mean()), 1) for k in ("mpjpe", "pa_mpjpe")}


def ridge_rotations(x_train, r_train, x_val) -> tuple[torch.Tensor, float]:
    """Rotation matrices (N, 24, 3, 3) for the validation features from a ridge regression; lambda picked
    on the last fifth of the training rows, then refitted on all of them."""
    def fit(x, y, lam):
        x = torch.cat([x, torch.ones(len(x), 1)], 1).double()
        w = torch.linalg.solve(x.T @ x + lam * torch.eye(x.shape[1], dtype=x.dtype), x.T @ y.double())
        return lambda z: (torch.cat([z, torch.ones(len(z), 1)], 1).double() @ w).float()

    x_train, x_val = standardise(x_train, x_val)
    y = r_train.reshape(len(r_train), -1)
    cut = len(x_train) * 4 // 5
    held = {lam: (fit(x_train[:cut], y[:cut], lam)(x_train[cut:]) - y[cut:]).square().mean().item()
            for lam in (1.0, 10.0, 100.0, 1000.0, 10000.0)}
    lam = min(held, key=held.get)
    matrices = fit(x_train, y, lam)(x_val).reshape(-1, 24, 3, 3)
    return mean_rotation(matrices[None], dim=0), lam  # the nearest rotation of each (a mean of one)


def train_head(x_train, batch, x_val, smpl: SMPLHead, mean, weights: LossWeights, steps: int, seed: int):
    """HMR's head alone on cached (N, C) features; returns the validation prediction's (rotmat, betas)."""
    torch.manual_seed(seed)
    head = HMRHead(x_train.shape[1], mean)
    opt = torch.optim.Adam(head.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(len(x_train), (16,), generator=generator)
        pose, shape, cam = head(x_train[idx, :, None, None])
        pose6d = pose.reshape(-1, 24, 6)
        pred = Prediction(rotmat=rot6d_to_rotmat(pose6d), betas=shape, cam=cam, pose6d=pose6d)
        loss, _ = regressor_losses(pred, smpl.predict(pred), {k: batch[k][idx] for k in BATCH}, weights)
        opt.zero_grad()
        loss.backward()
        opt.step()
    head.eval()
    with torch.no_grad():
        pose, shape, _ = head(x_val[:, :, None, None])
    return rot6d_to_rotmat(pose.reshape(-1, 24, 6)), shape


def accuracy(pred: torch.Tensor, truth: torch.Tensor) -> float:
    return round(float((pred == truth).float().mean()), 3)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default="results", help="the workflow's results folder")
    p.add_argument("--parser", default=None, help="demo parser weights (default: <results>/parsing/weights/demo_parser.pth)")
    p.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    p.add_argument("--steps", type=int, default=1000, help="HMR head training steps per variant")
    p.add_argument("--resolution", type=int, default=128, help="crop size (the demo preset's: 128)")
    p.add_argument("--width-mult", type=float, default=0.25, help="the from-scratch ResNet-50's width")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = Path(args.results)
    parser_weights = Path(args.parser) if args.parser else results / "parsing" / "weights" / "demo_parser.pth"
    if any(b.startswith("parser") for b in args.backbones) and not parser_weights.exists():
        raise SystemExit(f"{parser_weights} is missing: build it (snakemake --cores 2 {parser_weights}), "
                         f"point --parser at it, or leave the parser backbones out (--backbones scratch)")

    start = time.time()
    train, val = load_split(results, "train", args.resolution), load_split(results, "val", args.resolution)
    body = results / "body" / "demo_body.npz"
    smpl = SMPLHead(BodyModel(load_body_model(body)), resolution=224)
    mean = mean_params_from_packed([str(results / "packed" / "demo_train.h5")])
    names = sorted(set(train["template_name"]))
    t_train = torch.tensor([names.index(n) for n in train["template_name"]])
    t_val = torch.tensor([names.index(n) if n in names else -1 for n in val["template_name"]])
    gt_r = {s: axis_angle_to_rotmat(d["pose"].float().reshape(-1, 24, 3)) for s, d in (("train", train), ("val", val))}
    with torch.no_grad():
        gt_val = smpl.body(betas=val["betas"].float(), rotmat=gt_r["val"]).h36m_joints
    mean_pred = MeanPose(mean)(val["image"][:1])
    n = len(val["pose"])
    mean_betas = mean_pred.betas.expand(n, -1)
    baseline = {
        "mean_pose": pose_errors(smpl, mean_pred.rotmat.expand(n, -1, -1, -1), mean_betas, gt_val),
        "template_commonest": accuracy(torch.full_like(t_val, int(t_train.bincount().argmax())), t_val),
        "yaw_commonest": accuracy(torch.full_like(val["yaw_bin"], int(train["yaw_bin"].bincount().argmax())),
                                  val["yaw_bin"]),
    }
    print(f"{len(t_train)} training and {n} validation rows at {args.resolution} px; baseline (mean pose): "
          f"MPJPE {baseline['mean_pose']['mpjpe']} mm, PA-MPJPE {baseline['mean_pose']['pa_mpjpe']} mm", flush=True)
    train_batch = {k: train[k] for k in BATCH}
    yaw_features = [torch.stack([d["yaw"].cos(), d["yaw"].sin()], 1) for d in (train, val)]
    figures = {}
    for name in args.backbones:
        t0 = time.time()
        torch.manual_seed(args.seed)
        if name.startswith("parser"):
            net, _ = build_backbone(BACKBONES[name], width_mult=parser_width(parser_weights))
            load_pretrained_backbone(net, parser_weights)
        else:
            net, _ = build_backbone(BACKBONES[name], width_mult=args.width_mult)
            calibrate_batch_norm(net, train["image"])
        pooled_maps = [features(net, d["image"]) for d in (train, val)]
        maps = [avg for avg, _ in pooled_maps]  # HMR's head input
        pooled = [torch.cat([avg, peak], 1) for avg, peak in pooled_maps]  # the probes' input
        yaw_pred = linear_probe(pooled[0], train["yaw_bin"], pooled[1], YAW_BINS, args.seed)
        off = (yaw_pred - val["yaw_bin"]).abs()
        off = torch.minimum(off, YAW_BINS - off)
        rotations, lam = ridge_rotations(pooled[0], gt_r["train"], pooled[1])
        row = {
            "channels": maps[0].shape[1],
            "template_accuracy": accuracy(linear_probe(pooled[0], t_train, pooled[1], len(names), args.seed), t_val),
            "yaw_accuracy": accuracy(yaw_pred, val["yaw_bin"]),
            "yaw_within_one_bin": round(float((off <= 1).float().mean()), 3),
            "ridge": pose_errors(smpl, rotations, mean_betas, gt_val) | {"lambda": lam},
        }
        for variant, weights, extra in (("head_paper_losses", LossWeights(), False),
                                        ("head_without_3d", LossWeights(keypoints_3d=0.0), False),
                                        ("head_true_yaw", LossWeights(), True)):
            x = [torch.cat([m, y], 1) for m, y in zip(maps, yaw_features)] if extra else maps
            rotmat, betas = train_head(x[0], train_batch, x[1], smpl, mean, weights, args.steps, args.seed)
            row[variant] = pose_errors(smpl, rotmat, betas, gt_val)
        row["seconds"] = round(time.time() - t0, 1)
        figures[name] = row
        print(f"{name}: {json.dumps(row)}", flush=True)
    summary = {"resolution": args.resolution, "steps": args.steps, "train_rows": len(t_train), "val_rows": n,
               "baseline": baseline, "backbones": figures, "seconds": round(time.time() - start, 1)}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
