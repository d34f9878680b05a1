"""Regressor inference throughput: PARE (HRNet-W32-conv, the released architecture) and HMR (ResNet-50,
SPIN/DSR), full size, 224 x 224 crops, same images, same run.

- ours: models.inference.RegressorRunner in its default mode for the device (CPU: traced, frozen and
  optimised TorchScript; CUDA: channels-last with cudnn.benchmark), batched (--batches, default 1, 8
  and 64), under inference mode; the one-time tracing per input shape is reported apart (`compile_s`);
- baseline: the same model run eagerly, one image at a time, under no_grad (what the official demo
  scripts do per detected person).
Both read the same images; `max_rotmat_diff` is the largest difference of their rotation matrices.
On CUDA, `ms_per_image` at batch 1 is the figure to hold against PARE's published 14.8 ms/image
(RTX 2080Ti).

    python bench/regressor.py [--models pare hmr] [--images 64] [--batches 1 8 64] [--device cpu|cuda]
                              [--modes script channels_last eager]

Weights are seeded random (speed does not depend on them). Last line: one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.hmr import HMR  # noqa: E402
from models.inference import RegressorRunner  # noqa: E402
from models.pare import PARE  # noqa: E402

MODELS = {"pare": PARE, "hmr": HMR}


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--modes", nargs="+", default=["auto"], help="RegressorRunner modes to measure")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    images = torch.randn(args.images, 3, 224, 224)
    figures: dict = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
                     "images": args.images, "models": {}}
    if device.type == "cuda":
        figures["gpu"] = torch.cuda.get_device_name(device)

    for name in args.models:
        model = MODELS[name]().eval().to(device)
        on_device = images.to(device)
        with torch.no_grad():
            model(on_device[:1])  # warm-up
            reference = []
            baseline_s = timed(lambda: reference.extend(model(on_device[i:i + 1]).rotmat for i in range(len(images))),
                               device)
        reference = torch.cat(reference)
        row = {"params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
               "baseline_images_per_s": round(len(images) / baseline_s, 3),
               "baseline_ms_per_image": round(1000 * baseline_s / len(images), 2), "ours": {}}
        for mode in args.modes:
            for batch in args.batches:
                runner = RegressorRunner(_copy(model, name), device, mode=mode, batch_size=batch)
                runner(on_device[:batch])  # warm-up: traces the shapes of this batch size
                if len(images) % batch:
                    runner(on_device[: len(images) % batch])
                out = []
                seconds = timed(lambda: out.append(runner(on_device)), device)
                key = f"{runner.mode}_b{batch}"
                row["ours"][key] = {
                    "images_per_s": round(len(images) / seconds, 3),
                    "ms_per_image": round(1000 * seconds / len(images), 2),
                    "speedup": round(baseline_s / seconds, 3),
                    "compile_s": round(runner.compile_seconds, 2),
                    "max_rotmat_diff": float((out[0].rotmat - reference).abs().max()),
                }
                print(f"{name} {key}: {row['ours'][key]['images_per_s']} images/s "
                      f"({row['ours'][key]['ms_per_image']} ms/image), baseline {row['baseline_images_per_s']} "
                      f"images/s, speedup {row['ours'][key]['speedup']}x", flush=True)
        figures["models"][name] = row
    print(json.dumps(figures))


def _copy(model: torch.nn.Module, name: str) -> torch.nn.Module:
    """A separate instance with the same weights (a runner may convert its model's layout in place)."""
    twin = MODELS[name]()
    twin.load_state_dict(model.state_dict())
    return twin


if __name__ == "__main__":
    main()
