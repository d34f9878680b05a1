"""Occlusion sensitivity (PARE, Sec. 4.3): how much each joint's error grows when a grey square hides part
of the input.

    python -m trainers.sensitivity CHECKPOINT ANNOTATIONS.npz IMAGES BODY.npz OUT.npz --kind demo \
        --figure OUT.png [--samples 32] [--size 40 --stride 40]

A square of `size` px (at 224 px; scaled with the network's input) slides with `stride` over the crop:
ceil((224 - 40) / 40) + 1 = 6 positions a side, 36 in all, the window clipped at the border, filled with
the ImageNet mean (0 after normalisation, PARE's `--pixel 0`). Every position of a sample is scored in
batches (forwards of at most --batch-size images), not one forward per patch. The result: per sample, position and joint the error (MPJPE and
PA-MPJPE, mm; the benchmark's protocol), the unoccluded errors, and a figure per model: for each joint
the mean error map over the samples laid on their mean crop, and the mean over joints.
"""

from __future__ import annotations

import argparse
import logging
import math

import numpy as np
import torch

from pipeline.io import atomic_output

log = logging.getLogger(__name__)


def windows(resolution: int = 224, size: int = 40, stride: int = 40) -> tuple[int, list[tuple[int, int, int, int]]]:
    """(positions per side, [(top, bottom, left, right)] row-major): PARE's sliding occluder, clipped at the border."""
    n = int(math.ceil((resolution - size) / stride + 1))
    out = []
    for i in range(n):
        for j in range(n):
            top, left = i * stride, j * stride
            out.append((top, min(resolution, top + size), left, min(resolution, left + size)))
    return n, out


def occluded_copies(image: torch.Tensor, boxes: list[tuple[int, int, int, int]], value: float = 0.0) -> torch.Tensor:
    """(P, 3, R, R): the normalised image (3, R, R) once per window, the window filled with `value`."""
    copies = image.unsqueeze(0).repeat(len(boxes), 1, 1, 1)
    for k, (t, b, l, r) in enumerate(boxes):
        copies[k, :, t:b, l:r] = value
    return copies


@torch.no_grad()
def occlusion_sensitivity(net: torch.nn.Module, resolution: int, bench, kind: str, body, bodies: dict | None = None,
                          gender: str = "neutral", device="cpu", max_samples: int | None = 32, size: int = 40,
                          stride: int = 40, samples_per_batch: int = 2, batch_size: int | None = None,
                          progress: bool = True) -> dict:
    """{"rows", "base_per_joint" (S, J), "base_pa_per_joint", "per_joint" (S, n, n, J), "pa_per_joint", "grid",
    "mean_crop" (R, R, 3) uint8, "skipped"}. `size` and `stride` are at 224 px and scale with `resolution`.
    batch_size: the most images per forward (None: the 37 inputs of `samples_per_batch` samples in one; on CPUs
    a smaller batch is faster, as bench/evaluate.py measures; 1, one forward per occluded image, is its
    baseline), same results at any size."""
    from tqdm import tqdm

    from models.smpl_head import SMPLHead
    from pipeline.body.model import BodyModel
    from trainers.benchmarks import BenchmarkRows, EvalImages, row_genders
    from trainers.evaluate import ground_truth, score_batch
    from trainers.packed import normalize_images

    device = torch.device(device)
    rows = bench.rows if max_samples is None else bench.rows[:max_samples]
    sub = BenchmarkRows(bench.annotations, bench.kind, rows, bench.outside, dict(bench.skipped))
    scale = resolution / 224.0
    n, boxes = windows(resolution, max(1, round(size * scale)), max(1, round(stride * scale)))
    head = SMPLHead(body if isinstance(body, BodyModel) else BodyModel(body), resolution=resolution).to(device)
    bodies = {g: b.to(device) for g, b in (bodies or {"neutral": head.body}).items()}
    genders = dict(zip(rows.tolist(), row_genders(bench.annotations, rows, gender)))
    net = net.to(device).eval()
    data = EvalImages(sub, resolution)
    skipped: dict[int, str] = {}
    kept, crops, base, base_pa, maps, pa_maps = [], [], [], [], [], []

    def errors(images: torch.Tensor, row_ids: torch.Tensor) -> dict:
        if batch_size and batch_size < len(images):
            parts = [errors_of(images[k:k + batch_size], row_ids[k:k + batch_size])
                     for k in range(0, len(images), batch_size)]
            return {key: torch.cat([p[key] for p in parts]) for key in ("per_joint", "pa_per_joint")}
        return errors_of(images, row_ids)

    def errors_of(images, row_ids):
        out = head.predict(net(images))
        gt = ground_truth(sub, row_ids, genders, bodies, device)
        return score_batch(kind, out, gt.get("joints"), gt.get("vertices"), gt.get("s"))

    for lo in tqdm(range(0, len(data), samples_per_batch), desc=f"occlusion sensitivity {bench.annotations.name}",
                   disable=not progress, mininterval=5):
        items = [data[k] for k in range(lo, min(lo + samples_per_batch, len(data)))]
        for it in items:
            if not it["ok"]:
                skipped[it["row"]] = it["problem"]
        items = [it for it in items if it["ok"]]
        if not items:
            continue
        images = normalize_images(torch.stack([it["image"] for it in items]).to(device))
        row_ids = torch.tensor([it["row"] for it in items])
        # each sample unoccluded, then at every window: one batch
        stacked = torch.cat([torch.cat([images[k:k + 1], occluded_copies(images[k], boxes)]) for k in range(len(items))])
        e = errors(stacked, row_ids.repeat_interleave(len(boxes) + 1))
        pj = e["per_joint"].reshape(len(items), len(boxes) + 1, -1).cpu().numpy()
        pa = e["pa_per_joint"].reshape(len(items), len(boxes) + 1, -1).cpu().numpy()
        base.append(pj[:, 0]), base_pa.append(pa[:, 0])
        maps.append(pj[:, 1:].reshape(len(items), n, n, -1)), pa_maps.append(pa[:, 1:].reshape(len(items), n, n, -1))
        kept.extend(int(r) for r in row_ids)
        crops.extend(it["image"].numpy().transpose(1, 2, 0) for it in items)
    if not kept:
        raise ValueError(f"{bench.annotations.path}: no sample could be read for the occlusion analysis ({skipped})")
    mean_crop = np.mean(np.stack(crops).astype(np.float32), axis=0).round().astype(np.uint8)
    return {"rows": np.array(kept), "base_per_joint": np.concatenate(base), "base_pa_per_joint": np.concatenate(base_pa),
            "per_joint": np.concatenate(maps), "pa_per_joint": np.concatenate(pa_maps),
            "grid": np.array(boxes).reshape(n, n, 4), "mean_crop": mean_crop, "skipped": skipped}


def figure(result: dict, path: str, title: str, joint_names: tuple[str, ...]) -> None:
    """Per joint, the mean MPJPE (mm) with the square at each position, over the mean crop; and the mean over joints."""
    from pipeline.figures import colour_bar, heatmap_tile, save_grid

    maps = result["per_joint"].mean(0)  # (n, n, J)
    base = result["base_per_joint"].mean(0)  # (J,)
    vmin, vmax = float(maps.min()), float(maps.max())
    panels = [(name, maps[..., j], base[j]) for j, name in enumerate(joint_names)]
    panels.append(("mean of the joints", maps.mean(-1), base.mean()))
    tiles = [heatmap_tile(result["mean_crop"], m, result["grid"], vmin, vmax,
                          f"{name}\nunoccluded {b:.0f}, max {m.max():.0f} mm") for name, m, b in panels]
    tiles.append(colour_bar(vmin, vmax, "MPJPE (mm), square there"))
    per_row = 4
    while len(tiles) % per_row:
        tiles.append(np.full_like(tiles[0], 255))
    save_grid(tiles, path, per_row=per_row, banner=title)


def main(argv: list[str] | None = None) -> int:
    from pipeline.cli import start_logging
    from pipeline.config import resolve_device
    from trainers.benchmarks import GENDERS, KINDS, load_benchmark
    from trainers.evaluate import LSP14_NAMES, MPI17_NAMES, load_bodies, load_regressor

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("annotations")
    p.add_argument("images")
    p.add_argument("body")
    p.add_argument("out", help="the maps (.npz)")
    p.add_argument("--figure", required=True, help="the figure (.png)")
    p.add_argument("--kind", required=True, choices=sorted(KINDS))
    p.add_argument("--name", help="the benchmark's name in the figure")
    p.add_argument("--gender", default="neutral", choices=GENDERS)
    p.add_argument("--male")
    p.add_argument("--female")
    p.add_argument("--samples", type=int, default=32, help="the first N scored rows (0: all)")
    p.add_argument("--size", type=int, default=40, help="the square's side at 224 px")
    p.add_argument("--stride", type=int, default=40, help="its step at 224 px")
    p.add_argument("--samples-per-batch", type=int, default=2, help="samples whose 37 inputs are scored together")
    p.add_argument("--batch-size", type=int, default=0, help="the most images per forward (0: all of those samples)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = p.parse_args(argv)
    start_logging()
    dev = torch.device(resolve_device(args.device))
    bench = load_benchmark(args.annotations, args.images, args.kind, name=args.name)
    family, net, resolution = load_regressor(args.checkpoint)
    body, bodies = load_bodies(args.body, args.male, args.female)
    result = occlusion_sensitivity(net, resolution, bench, args.kind, body, bodies, args.gender, dev,
                                   args.samples or None, args.size, args.stride, args.samples_per_batch,
                                   batch_size=args.batch_size or None)
    names = MPI17_NAMES if KINDS[args.kind].joints == "mpi17" else LSP14_NAMES
    for row, reason in result["skipped"].items():
        log.warning("skipped row %d: %s", row, reason)
    mean_map = result["per_joint"].mean((0, 3))
    log.info("%s on %s: %d samples, %dx%d positions; unoccluded MPJPE %.1f mm, with the square %.1f to %.1f mm",
             family, args.name or args.annotations, len(result["rows"]), *mean_map.shape,
             result["base_per_joint"].mean(), mean_map.min(), mean_map.max())
    arrays = {k: v for k, v in result.items() if k != "skipped"} | {"joint_names": np.array(names)}
    with atomic_output(args.out) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    figure(result, args.figure, f"Occlusion sensitivity: {family} ({args.checkpoint}) on {args.name or args.kind}, "
           f"{len(result['rows'])} samples", names)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
