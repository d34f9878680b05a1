"""Evaluation throughput: batched evaluation and the batched occlusion analysis against their per-sample
baselines, same model, same rows, same run.

- evaluation: trainers.evaluate.evaluate_rows at each of --batch-sizes (8 and 32) with --workers image readers
  (crops read, warped and normalised in DataLoader workers; inference, SMPL ground truth and metrics on
  the batch) against the per-sample loop (batch 1, images read in the loop: what evaluation scripts that
  score one image at a time do). Figures: images/s of each and the largest difference of their per-row
  MPJPE and PA-MPJPE (they must agree);
- occlusion sensitivity: trainers.sensitivity.occlusion_sensitivity scoring the 37 inputs (unoccluded and
  36 occluded copies) of --samples-per-batch samples together, at most a batch size per forward, against
  one forward per occluded image (batch_size=1).
  Figures: samples/s of each and the largest difference of their per-joint maps.

The data: --rows JPEG photos with random SMPL rows in 3DPW's SPIN format (imgname, center, scale, pose,
shape, gender), scored against the demo body's neutral ground truth; the models are seeded random at full
size (speed does not depend on the weights): HMR (ResNet-50, SPIN/DSR) and optionally PARE (HRNet-W32).

    python bench/evaluate.py [--models hmr pare] [--rows 64] [--batch-sizes 8 32] [--workers 2]
                             [--samples 4] [--device cpu|cuda]

Last line: one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def make_benchmark(root: Path, rows: int, body, seed: int = 0) -> Path:
    """A 3DPW-format file of `rows` photos (random texture, 480 x 360) and random SMPL rows."""
    rng = np.random.default_rng(seed)
    names = [f"imageFiles/bench_seq_00/image_{i:05d}.jpg" for i in range(rows)]
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (360, 480, 3), dtype=np.uint8)).save(path, quality=90)
    pose = rng.normal(0, 0.3, (rows, 72)).astype(np.float32)
    pose[:, :3] = rng.normal(0, 1.0, (rows, 3))
    np.savez(root / "bench_3dpw.npz", imgname=np.array(names), center=rng.uniform(180, 300, (rows, 2)),
             scale=rng.uniform(1.0, 1.6, rows), pose=pose, shape=rng.normal(0, 1, (rows, 10)).astype(np.float32),
             gender=np.array(["m", "f"] * (rows // 2) + ["m"] * (rows % 2)))
    return root / "bench_3dpw.npz"


def timed(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main() -> None:
    from models.hmr import HMR
    from models.pare import PARE
    from pipeline.body.demo import build_demo_body
    from pipeline.body.model import BodyModel
    from trainers.benchmarks import load_benchmark
    from trainers.evaluate import evaluate_rows
    from trainers.sensitivity import occlusion_sensitivity

    models = {"hmr": HMR, "pare": PARE}
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["hmr"], choices=list(models))
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--samples", type=int, default=4, help="samples of the occlusion analysis")
    parser.add_argument("--samples-per-batch", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    body = BodyModel(build_demo_body())
    figures: dict = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
                     "rows": args.rows, "workers": args.workers,
                     "sensitivity_samples": args.samples, "models": {}}
    if device.type == "cuda":
        figures["gpu"] = torch.cuda.get_device_name(device)
    with tempfile.TemporaryDirectory() as tmp:
        ann = make_benchmark(Path(tmp), args.rows, body)
        bench = load_benchmark(ann, tmp, "3dpw")
        for name in args.models:
            torch.manual_seed(0)
            net = models[name]().eval().to(device)
            evaluate_rows(net, 224, bench, "3dpw", body, device=device, batch_size=2, progress=False)  # warm-up
            base, base_s = timed(lambda: evaluate_rows(net, 224, bench, "3dpw", body, device=device, batch_size=1,
                                                       workers=0, progress=False), device)
            row = {"params_m": round(sum(p.numel() for p in net.parameters()) / 1e6, 2),
                   "baseline_images_per_s": round(len(base["rows"]) / base_s, 3), "batched": {}}
            for b in args.batch_sizes:
                ours, ours_s = timed(lambda: evaluate_rows(net, 224, bench, "3dpw", body, device=device, batch_size=b,
                                                           workers=args.workers, progress=False), device)
                assert ours["rows"].tolist() == base["rows"].tolist() and not ours["skipped"]
                row["batched"][b] = {"eval_images_per_s": round(len(ours["rows"]) / ours_s, 3),
                                     "eval_speedup": round(base_s / ours_s, 2),
                                     "max_mpjpe_diff_mm": float(np.abs(ours["mpjpe"] - base["mpjpe"]).max()),
                                     "max_pa_mpjpe_diff_mm": float(np.abs(ours["pa_mpjpe"] - base["pa_mpjpe"]).max())}
            patch, patch_s = timed(lambda: occlusion_sensitivity(
                net, 224, bench, "3dpw", body, device=device, max_samples=args.samples, batch_size=1,
                progress=False), device)
            row["sensitivity_positions"] = patch["per_joint"].shape[1] * patch["per_joint"].shape[2]
            row["sensitivity_baseline_samples_per_s"] = round(len(patch["rows"]) / patch_s, 3)
            for b in args.batch_sizes:
                sens, sens_s = timed(lambda: occlusion_sensitivity(
                    net, 224, bench, "3dpw", body, device=device, max_samples=args.samples,
                    samples_per_batch=args.samples_per_batch, batch_size=b, progress=False), device)
                row["batched"][b].update({
                    "sensitivity_samples_per_s": round(len(sens["rows"]) / sens_s, 3),
                    "sensitivity_speedup": round(patch_s / sens_s, 2),
                    "sensitivity_max_map_diff_mm": float(np.abs(sens["per_joint"] - patch["per_joint"]).max())})
            for b, r in row["batched"].items():
                print(f"{name} batch {b}: evaluation {r['eval_images_per_s']} images/s ({args.workers} readers) vs "
                      f"{row['baseline_images_per_s']} one at a time: x{r['eval_speedup']} (per-row MPJPE agree to "
                      f"{r['max_mpjpe_diff_mm']:.2g} mm); occlusion analysis {r['sensitivity_samples_per_s']} samples/s "
                      f"({row['sensitivity_positions']} positions) vs {row['sensitivity_baseline_samples_per_s']} one "
                      f"forward per patch: x{r['sensitivity_speedup']}", file=sys.stderr)
            figures["models"][name] = row
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
