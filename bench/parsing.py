"""Parsing throughput, full-size Graphonomy (transfer model), same images, same run.

- production: `multiscale_logits` through the TorchScript-optimised network (`OptimizedNetwork`),
  `--batch` images per forward (1: the fastest on CPU), under inference mode; the one-time tracing
  per input shape (amortised over a shard of images) is reported apart as `compile_s`;
- baseline: the official script's procedure, one image at a time and one scale at a time (a batch of
  the image and its mirror), the model as loaded.
Both use the official per-scale resize (PIL bilinear) and Graphonomy's scales (1, 0.5, 0.75, 1.25,
1.5, 1.75) with flips, unless --scales is given. `pixels_equal` is the share of identical labels.

    python bench/parsing.py [--images 4] [--size 384] [--batch 4] [--weights inference.pth] [--device cpu]

Without --weights the model has seeded random weights (speed does not depend on them). Last line: one
JSON object with the figures.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.graphonomy import build, from_pretrained  # noqa: E402
from pipeline.human_parser import PRESETS, OptimizedNetwork, multiscale_logits  # noqa: E402


def demo_images(n: int, size: int) -> np.ndarray:
    """Person crops from the demo world (people, clutter) at `size` pixels, made in memory."""
    from pipeline.body.demo import build_demo_body
    from pipeline.body.model import BodyModel
    from pipeline.crop import crop_matrix, warp
    from pipeline.world.images import sample_rng
    from pipeline.world.scene import SceneContext, WorldSettings, generate_sample

    ctx = SceneContext.create(BodyModel(build_demo_body()))
    crops = []
    for i in range(n):
        s = generate_sample(ctx, WorldSettings(), sample_rng(0, "bench_parsing", i))
        crops.append(warp(s.image, crop_matrix(s.center, s.scale, size), (size, size), nearest=False))
    return np.stack(crops)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=384, help="square crop side (512 as in training takes ~2x longer)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--scales", type=float, nargs="+", default=PRESETS["graphonomy"]["scales"])
    parser.add_argument("--weights", help="official inference.pth; default: seeded random weights")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = (from_pretrained(args.weights) if args.weights else build("transfer")).eval().to(args.device)
    images = demo_images(args.images, args.size)

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    with torch.inference_mode():
        multiscale_logits(model, images[:1], (1.0,))  # warm-up
        sync()
        start = time.perf_counter()
        baseline = [multiscale_logits(model, images[i:i + 1], args.scales).argmax(1) for i in range(len(images))]
        sync()
        baseline_s = time.perf_counter() - start

        fast_model = OptimizedNetwork(copy.deepcopy(model))
        multiscale_logits(fast_model, images[:args.batch], args.scales)  # traces once per input shape
        sync()
        start = time.perf_counter()
        fast = [multiscale_logits(fast_model, images[i:i + args.batch], args.scales).argmax(1)
                for i in range(0, len(images), args.batch)]
        sync()
        fast_s = time.perf_counter() - start

    baseline_labels, fast_labels = torch.cat(baseline).cpu(), torch.cat(fast).cpu()
    figures = {
        "device": args.device,
        "images": len(images),
        "size": args.size,
        "scales": list(args.scales),
        "batch": args.batch,
        "weights": "official" if args.weights else "random",
        "images_per_s": round(len(images) / fast_s, 3),
        "baseline_images_per_s": round(len(images) / baseline_s, 3),
        "speedup": round(baseline_s / fast_s, 3),
        "compile_s": round(fast_model.compile_seconds, 2),
        "pixels_equal": round(float((baseline_labels == fast_labels).float().mean()), 6),
    }
    print(f"{args.size}px, scales {list(args.scales)} + flip, {len(images)} images on {args.device}: batched "
          f"{figures['images_per_s']} images/s, official procedure {figures['baseline_images_per_s']} images/s, "
          f"speedup {figures['speedup']}x, identical pixels {100 * figures['pixels_equal']:.3f}%")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
