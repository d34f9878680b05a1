"""One regressor on one benchmark: batched inference on the rows' crops and the field's metrics.

    python -m trainers.evaluate CHECKPOINT ANNOTATIONS.npz IMAGES BODY.npz OUT.json --kind 3dpw \
        [--gender neutral|gendered --male smpl_male.npz --female smpl_female.npz] [--samples OUT.npz]

CHECKPOINT is one of this project's training checkpoints (results/train/<run>/best.pt) or a published one:
PARE's `pare_checkpoint.ckpt` / `pare_w_3dpw_checkpoint.ckpt`, DSR's `dsr_*_checkpoint.pt`, SPIN's
`model_checkpoint.pt` (read without executing code; the family is told from the weight names). The rows,
their ground truth and the joint protocol come from the benchmark kind (trainers.benchmarks). The JSON holds
the means (MPJPE, PA-MPJPE, and PVE or PCK/AUC), the per-joint means, the counts and every skipped row with
its reason; --samples keeps the per-row errors.
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.io import atomic_output
from trainers.benchmarks import GENDERS, KINDS, BenchmarkRows, EvalImages, collate, load_benchmark, row_genders
from trainers.pose_metrics import joint_errors, joint_errors_from_s, mpi_joint_errors, pve

log = logging.getLogger(__name__)

LSP14_NAMES = ("right ankle", "right knee", "right hip", "left hip", "left knee", "left ankle", "right wrist",
               "right elbow", "right shoulder", "left shoulder", "left elbow", "left wrist", "neck", "head top")
MPI17_NAMES = LSP14_NAMES + ("pelvis", "spine", "head")


def load_regressor(path: str | Path) -> tuple[str, torch.nn.Module, int]:
    """(family, network in eval mode, input resolution) of a checkpoint: ours (its settings name the model and
    resolution), or a published PARE / SPIN / DSR file (224 px)."""
    from models import checkpoint, hmr, pare
    from trainers.train_check import load_trained

    try:
        return load_trained(path)
    except (ValueError, KeyError, AttributeError, RuntimeError, TypeError, pickle.UnpicklingError) as ours_error:
        raw = checkpoint.read_state_dict(path, what="regressor weights",
                                         source_hint="a PARE .ckpt, a SPIN/DSR .pt or this project's best.pt")
        state, _ = checkpoint.network_state(raw, trainer_extras=pare.TRAINER_EXTRAS + hmr.TRAINER_EXTRAS,
                                            network_extras=pare.NETWORK_EXTRAS + hmr.NETWORK_EXTRAS, source=path)
        family, _ = checkpoint.detect_family(state)
        if family == "pare":
            return "pare", pare.from_pretrained(path).eval(), 224
        if family == "hmr":
            return "hmr", hmr.from_pretrained(path).eval(), 224
        raise ValueError(f"{path}: a {family} checkpoint, not a regressor (PARE, SPIN, DSR or this project's "
                         f"training); as ours it failed with: {ours_error}") from None


def score_batch(kind: str, out, gt_joints: torch.Tensor | None, gt_vertices: torch.Tensor | None,
                gt_s: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Per-row errors (mm) of one batch: `out` the prediction's RegressorOutput; SMPL truth as H36M-17 joints
    and vertices, or the dataset's S (B, 24, 4)."""
    spec = KINDS[kind]
    pred = out.h36m_joints.float()
    if spec.joints == "mpi17":
        return mpi_joint_errors(pred, gt_s)
    if spec.truth == "S":
        return joint_errors_from_s(pred, gt_s, per_joint=True)
    e = joint_errors(pred, gt_joints, per_joint=True)
    e["pve"] = pve(out.vertices.float(), gt_vertices, pred[:, 0], gt_joints[:, 0])
    return e


def ground_truth(bench: BenchmarkRows, rows: torch.Tensor, genders: dict[int, str], bodies: dict, device) -> dict:
    """{"joints", "vertices"} from SMPL (each row with its gender's body), or {"s"}."""
    from models.rotations import axis_angle_to_rotmat

    ann = bench.annotations
    idx = rows.numpy()
    if bench.kind.truth == "S":
        return {"s": torch.as_tensor(np.asarray(ann["S"])[idx], dtype=torch.float32, device=device)}
    pose = torch.as_tensor(np.asarray(ann["pose"])[idx], dtype=torch.float32, device=device)
    betas = torch.as_tensor(np.asarray(ann["shape"])[idx], dtype=torch.float32, device=device)
    rotmat = axis_angle_to_rotmat(pose.reshape(-1, 24, 3))
    joints = torch.zeros(len(idx), 17, 3, device=device)
    vertices = None
    for gender in sorted({genders[int(r)] for r in idx}):
        sel = torch.tensor([genders[int(r)] == gender for r in idx], device=device)
        body = bodies[gender]
        res = body(betas=betas[sel, :body.num_betas], rotmat=rotmat[sel])
        if vertices is None:
            vertices = torch.zeros(len(idx), res.vertices.shape[1], 3, device=device)
        joints[sel], vertices[sel] = res.h36m_joints.float(), res.vertices.float()
    return {"joints": joints, "vertices": vertices}


@torch.no_grad()
def evaluate_rows(net: torch.nn.Module, resolution: int, bench: BenchmarkRows, kind: str, body, bodies: dict | None = None,
                  gender: str = "neutral", device: str | torch.device = "cpu", batch_size: int = 8, workers: int = 0,
                  progress: bool = True) -> dict:
    """Per-row errors of `net` on the benchmark's rows: {"rows", "imgname", metric arrays...} and the skips.
    `body` is the network's body model (its SMPL head); `bodies` the ground truth's by gender."""
    from tqdm import tqdm

    from models.smpl_head import SMPLHead
    from pipeline.body.model import BodyModel
    from trainers.packed import normalize_images

    device = torch.device(device)
    head = SMPLHead(body if isinstance(body, BodyModel) else BodyModel(body), resolution=resolution).to(device)
    bodies = {g: b.to(device) for g, b in (bodies or {"neutral": head.body}).items()}
    genders = dict(zip(bench.rows.tolist(), row_genders(bench.annotations, bench.rows, gender)))
    missing = sorted({g for g in genders.values()} - set(bodies))
    if missing:
        raise ValueError(f"{bench.annotations.path}: rows need the {' and '.join(missing)} body model(s) for gendered "
                         f"ground truth: give them (--male/--female; SMPL's gendered files), or use gender neutral")
    net = net.to(device).eval()
    loader = torch.utils.data.DataLoader(EvalImages(bench, resolution), batch_size=batch_size, num_workers=workers,
                                         collate_fn=collate, shuffle=False)
    skipped = dict(bench.skipped)
    results: dict[str, list] = {}
    rows_done: list[np.ndarray] = []
    for batch in tqdm(loader, desc=f"evaluate {bench.annotations.name}", disable=not progress, mininterval=5):
        for r, ok, problem in zip(batch["row"].tolist(), batch["ok"].tolist(), batch["problem"]):
            if not ok:
                skipped[r] = problem
        keep = batch["ok"]
        if not keep.any():
            continue
        rows = batch["row"][keep]
        images = normalize_images(batch["image"][keep].to(device))
        out = head.predict(net(images))
        gt = ground_truth(bench, rows, genders, bodies, device)
        e = score_batch(kind, out, gt.get("joints"), gt.get("vertices"), gt.get("s"))
        for k, v in e.items():
            results.setdefault(k, []).append(v.cpu().numpy())
        rows_done.append(rows.numpy())
    rows = np.concatenate(rows_done) if rows_done else np.zeros(0, np.int64)
    per_row = {k: np.concatenate(v) for k, v in results.items()}
    return {"rows": rows, "imgname": np.asarray(bench.imgnames)[rows].astype(str), **per_row, "skipped": skipped}


def summarise(per_row: dict, kind: str) -> dict:
    """Means over the scored rows (mm; PCK and AUC as fractions) and per-joint means."""
    names = MPI17_NAMES if KINDS[kind].joints == "mpi17" else LSP14_NAMES
    n = len(per_row["rows"])
    out = {"scored": n}
    for k in ("mpjpe", "pa_mpjpe", "pve", "pck", "auc"):
        if k in per_row:
            out[k] = float(per_row[k].mean()) if n else None
    for k in ("per_joint", "pa_per_joint"):
        if k in per_row and n:
            out[k] = dict(zip(names, (float(v) for v in per_row[k].mean(0))))
    return out


def load_bodies(body_file: str, male: str | None = None, female: str | None = None) -> tuple:
    """(the networks' body, the ground truth's bodies by gender): neutral is the networks' own."""
    from pipeline.body.model import BodyModel, load_body_model

    body = BodyModel(load_body_model(body_file))
    return body, {"neutral": body} | {g: BodyModel(load_body_model(f)) for g, f in (("male", male), ("female", female)) if f}


def run(checkpoint: str, annotations: str, images: str, body_file: str, kind: str, gender: str = "neutral",
        male: str | None = None, female: str | None = None, device: str = "auto", batch_size: int = 8,
        workers: int = 0, name: str | None = None) -> tuple[dict, dict]:
    """(the JSON's content, the per-row arrays) of one checkpoint on one benchmark."""
    from pipeline.config import resolve_device

    dev = torch.device(resolve_device(device))
    bench = load_benchmark(annotations, images, kind, name=name)
    family, net, resolution = load_regressor(checkpoint)
    body, bodies = load_bodies(body_file, male, female)
    start = time.perf_counter()
    per_row = evaluate_rows(net, resolution, bench, kind, body, bodies, gender, dev, batch_size, workers)
    seconds = time.perf_counter() - start
    skipped = per_row.pop("skipped")
    reasons: dict[str, int] = {}
    for reason in skipped.values():
        key = "missing or unreadable image" if reason.startswith(("missing image", "corrupt image")) else reason
        reasons[key] = reasons.get(key, 0) + 1
    result = {"checkpoint": str(checkpoint), "model": family, "benchmark": name or Path(annotations).stem,
              "kind": kind, "annotations": str(annotations), "gender": gender, "resolution": resolution,
              "rows_in_file": len(bench.annotations), "outside_subset": bench.outside,
              "skipped": len(skipped), "skip_reasons": reasons,
              "skipped_rows": {str(r): reason for r, reason in sorted(skipped.items())},
              **summarise(per_row, kind), "seconds": seconds,
              "images_per_second": len(per_row["rows"]) / seconds if seconds > 0 else None, "device": str(dev)}
    return result, per_row


def main(argv: list[str] | None = None) -> int:
    from pipeline.cli import start_logging

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("annotations", help="the benchmark's .npz (SPIN/PARE format)")
    p.add_argument("images", help="the folder its imgname entries are relative to")
    p.add_argument("body", help="the body model (.npz) of the networks' SMPL head and of neutral ground truth")
    p.add_argument("out", help="the result's JSON")
    p.add_argument("--kind", required=True, choices=sorted(KINDS))
    p.add_argument("--name", help="the benchmark's name in the results (default: the file's stem)")
    p.add_argument("--gender", default="neutral", choices=GENDERS)
    p.add_argument("--male", help="SMPL male body (.npz), for gendered ground truth")
    p.add_argument("--female", help="SMPL female body (.npz), for gendered ground truth")
    p.add_argument("--samples", help="the per-row errors (.npz)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=8, help="images per forward (8 is fastest on CPUs)")
    p.add_argument("--workers", type=int, default=0)
    args = p.parse_args(argv)
    start_logging()
    result, per_row = run(args.checkpoint, args.annotations, args.images, args.body, args.kind, args.gender,
                          args.male, args.female, args.device, args.batch_size, args.workers, args.name)
    if result["scored"] == 0:
        raise SystemExit(f"{args.annotations}: no row of benchmark {result['benchmark']} could be scored "
                         f"({result['skip_reasons'] or 'none in its subset'}); see the images folder {args.images}")
    log.info("%s on %s (%d rows scored, %d skipped, %d outside the subset): MPJPE %.1f mm, PA-MPJPE %.1f mm%s",
             result["model"], result["benchmark"], result["scored"], result["skipped"], result["outside_subset"],
             result["mpjpe"], result["pa_mpjpe"],
             f", PVE {result['pve']:.1f} mm" if "pve" in result else
             f", PCK {100 * result['pck']:.1f}%, AUC {100 * result['auc']:.1f}%")
    for reason, count in result["skip_reasons"].items():
        log.warning("skipped %d rows: %s", count, reason)
    if args.samples:
        with atomic_output(args.samples) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **per_row)
    with atomic_output(args.out) as tmp:
        tmp.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
