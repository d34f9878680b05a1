"""Body-model forward throughput on CPU: one batch of 64 against 64 single-sample calls (the baseline,
as per-sample data loaders call SMPL), same bodies, same run.

    python bench/body.py [--model results/body/demo_body.npz] [--batch 64] [--repeats 10] [--device cpu]

Last line: one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.body.demo import load_or_build  # noqa: E402
from pipeline.body.model import BodyModel  # noqa: E402


def timed(fn, repeats: int, device: str) -> float:
    """Median wall time of `fn` in seconds (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="body model file; default: build the demo body in memory")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    data = load_or_build(args.model)
    model = BodyModel(data).to(args.device)
    gen = torch.Generator().manual_seed(0)
    betas = torch.randn(args.batch, model.num_betas, generator=gen).to(args.device)
    pose = (0.3 * torch.randn(args.batch, 69, generator=gen)).to(args.device)
    orient = torch.randn(args.batch, 3, generator=gen).to(args.device)

    def batched():
        with torch.inference_mode():
            return model(betas=betas, body_pose=pose, global_orient=orient).vertices

    def one_by_one():
        with torch.inference_mode():
            return [model(betas=betas[i : i + 1], body_pose=pose[i : i + 1], global_orient=orient[i : i + 1]).vertices
                    for i in range(args.batch)]

    torch.testing.assert_close(torch.cat(one_by_one()), batched())  # same bodies either way
    t_batch = timed(batched, args.repeats, args.device)
    t_loop = timed(one_by_one, max(1, args.repeats // 2), args.device)
    figures = {
        "device": args.device,
        "model": data.name,
        "vertices": data.num_vertices,
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "forward_ms": round(1000 * t_batch, 2),
        "bodies_per_s": round(args.batch / t_batch, 1),
        "baseline_one_by_one_ms": round(1000 * t_loop, 2),
        "baseline_bodies_per_s": round(args.batch / t_loop, 1),
        "speedup": round(t_loop / t_batch, 2),
    }
    print(f"batched forward of {args.batch} ({data.num_vertices} vertices) on {args.device}: {figures['forward_ms']} ms "
          f"({figures['bodies_per_s']} bodies/s); one by one: {figures['baseline_one_by_one_ms']} ms "
          f"({figures['baseline_bodies_per_s']} bodies/s); speedup {figures['speedup']}x")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
