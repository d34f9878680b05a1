"""Training-loader throughput: packed files vs a SPIN/PARE/DSR-style per-sample loader, same samples,
same augmentation draws, same run, 2 DataLoader workers.

- packed: `trainers.packed.PackedDataset` on a file written by `pipeline.pack` (JPEG crops 1.25x the
  label crop, label maps in the crop frame, one HDF5 read per field);
- baseline: what the published loaders do per sample: annotations from the .npz in memory, then
  decode the full photo (JPEG), crop it with the sample's scale/rotation/flip, decode the part-label
  and parser-label PNGs of the full photo, crop them, clean the parser labels with the keypoint box.
  Both loaders use the same warps and the same sampler (seeds), so they produce the same samples
  (`*_labels_equal`: agreement over pixels both label; `image_mean_abs_diff`: JPEG and resampling
  differences, plus black where rotation leaves the packed crop's 1.25x context).

Photos: the demo world's, upscaled to `--long-side` pixels (default 1920, the size of 3DPW's frames;
H36M's are 1000 x 1000, COCO's about 640 x 480) with the annotations scaled to match, because a
loader's cost is the size of what it decodes; the demo's own 384 px photos are measured too
(`native_*` figures). Also measured: the same packed file with raw uint8 crops (size and speed, the
JPEG-vs-raw trade-off), packing throughput, and each loader's milliseconds per sample in one process
without a DataLoader (`ms_per_sample`, `baseline_ms_per_sample`: no worker or transfer overhead).

    python bench/loader.py [--rows 300] [--batches 20] [--batch-size 32] [--workers 2]

Needs the demo world and its labels: `snakemake --cores 2 pack`. Last line: one JSON object.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.crop import crop_matrix, transform_points, warp  # noqa: E402
from trainers.augment import AugmentSettings, colour_gain, draw_params, label_to_output_matrix, pil_warp  # noqa: E402
from trainers.packed import MixedBatchSampler, PackedDataset  # noqa: E402


class PerSampleDataset(torch.utils.data.Dataset):
    """The per-sample loader of SPIN/PARE/DSR: full photo and full-size label PNGs decoded per sample."""

    def __init__(self, annotations: str, images: str, labels: str, augment: AugmentSettings, label_res: int = 224):
        from pipeline.datasets import load_annotations

        self.ann = load_annotations(annotations, image_root=images)
        self.arrays = {k: self.ann[k] for k in ("center", "scale", "openpose", "part", "pose", "shape")}
        self.labels = Path(labels)
        self.boxes = np.load(self.labels / "boxes.npy")
        self.augment, self.R = augment, label_res

    def __len__(self):
        return len(self.ann)

    def __getitem__(self, item):
        from PIL import Image

        from pipeline.labelsets import clean_labels

        _, j, seed, step = item
        s, R = self.augment, self.R
        O = s.output_resolution
        p = draw_params(s, np.random.default_rng(seed), step)
        to_label = crop_matrix(self.arrays["center"][j], float(self.arrays["scale"][j]), R)
        M = label_to_output_matrix(p, R, O) @ to_label
        with Image.open(self.ann.image_path(j)) as im:
            im = im.convert("RGB") if im.mode != "RGB" else im
            image = np.array(colour_gain(pil_warp(im, M, O, nearest=False, fill=(0, 0, 0)), p.gains))
        with Image.open(self.labels / f"{j:06d}_parts.png") as im:
            parts = np.array(pil_warp(im, M, O, nearest=True, fill=255))
        with Image.open(self.labels / f"{j:06d}_cihp.png") as im:
            full = np.array(im)
        box = self.boxes[j]  # label-crop frame -> full-image frame, cleaning as DSR does per sample
        corners = transform_points(box.reshape(2, 2), np.linalg.inv(to_label)).ravel()
        parser = clean_labels(full, corners)
        parser = np.array(pil_warp(Image.fromarray(parser), M, O, nearest=True, fill=255))
        kp = np.concatenate([self.arrays["openpose"][j], self.arrays["part"][j]]).astype(np.float32)
        kp[:, :2] = transform_points(kp[:, :2].astype(np.float64), M) * (2.0 / (O - 1)) - 1.0
        return {"image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
                "part_labels": torch.from_numpy(parts), "parser_labels": torch.from_numpy(parser),
                "keypoints": torch.from_numpy(kp), "pose": torch.from_numpy(self.arrays["pose"][j].astype(np.float32))}


def upscaled_world(src_ann: str, src_images: str, parts_index: str, parsing_index: str, rows: int, long_side: int | None,
                   out: Path, label_res: int = 224) -> tuple[str, str, str, str, str]:
    """Photos (optionally upscaled), annotations scaled to match, per-photo label PNGs in the photo's
    frame (the layout of the per-sample loaders), and the part-label and parser shards cut to the rows
    used, with their index files (for packing). Returns (annotations, images, labels, parts index,
    parser index)."""
    from PIL import Image

    from pipeline import parsing as parsing_stage
    from pipeline import partseg
    from pipeline.datasets import load_annotations
    from pipeline.shards import load_shards

    out.mkdir(parents=True)
    ann = load_annotations(src_ann, image_root=src_images)
    rows = min(rows, len(ann))
    parts_shard = load_shards(parts_index, ("index", "parts", "absent", "skipped", "camera_source", "cam_t", "reason", "imgname"))
    parsing = load_shards(parsing_index, ("index", "labels", "box", "min_clothing_valid", "no_keypoints", "skipped", "reason", "imgname"))
    np.savez(out / "parts-0.npz", resolution=np.array(label_res), **{k: v[:rows] for k, v in parts_shard.items()})
    np.savez(out / "parse-0.npz", resolution=np.array(label_res), **{k: v[:rows] for k, v in parsing.items()})
    partseg.write_index([str(out / "parts-0.npz")], str(out / "parts.json"))
    parsing_stage.write_index([str(out / "parse-0.npz")], str(out / "parsing.json"))
    parts = parts_shard["parts"]
    images, labels = out / "images", out / "labels"
    images.mkdir()
    labels.mkdir()
    arrays = {k: np.asarray(v)[:rows].copy() for k, v in ann.arrays.items()}
    factors = np.ones(rows)
    for j in range(rows):
        with Image.open(ann.image_path(j)) as im:
            im = im.convert("RGB")
            factor = 1.0 if long_side is None else long_side / max(im.size)
            size = (round(im.width * factor), round(im.height * factor))
            big = im.resize(size, Image.BICUBIC) if factor != 1.0 else im
        factors[j] = factor
        name = f"{j:06d}.jpg"
        big.save(images / name, quality=95)
        arrays["imgname"][j] = name
    # PIL's resize maps pixel u to factor * u + (factor - 1) / 2 (pixel centres on integers)
    for key in ("center", "openpose", "part"):
        if key in arrays:
            a = arrays[key].astype(np.float64)
            shape = (rows,) + (1,) * (a.ndim - 1)
            a[..., :2] = a[..., :2] * factors.reshape(shape) + ((factors - 1) / 2).reshape(shape)
            arrays[key] = a
    arrays["scale"] = arrays["scale"] * factors
    if "cam_intrinsics" in arrays:
        K = arrays["cam_intrinsics"].copy()
        K[:, :2, :2] *= factors[:, None, None]
        K[:, :2, 2] = K[:, :2, 2] * factors[:, None] + ((factors - 1) / 2)[:, None]
        arrays["cam_intrinsics"] = K
    for j in range(rows):  # labels back in the photo's frame, as the per-sample loaders store them
        with Image.open(images / arrays["imgname"][j]) as im:
            size = im.size
        M = crop_matrix(arrays["center"][j], arrays["scale"][j], label_res)
        for key, lab in (("parts", parts[j]), ("cihp", parsing["labels"][j])):
            full = warp(lab, np.linalg.inv(M), (size[1], size[0]), nearest=True, fill=255)
            Image.fromarray(full).save(labels / f"{j:06d}_{key}.png")
    np.save(labels / "boxes.npy", parsing["box"][:rows])
    np.savez(out / "annotations.npz", **arrays)
    return str(out / "annotations.npz"), str(images), str(labels), str(out / "parts.json"), str(out / "parsing.json")


def _agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Equal pixels among those both loaders label (the per-sample loader has no labels where the crop
    leaves the photo; the packed file keeps the ones rendered there)."""
    both = (a != 255) & (b != 255)
    return float((a[both] == b[both]).float().mean()) if both.any() else 1.0


def throughput(dataset, sampler, workers: int, whole_batches: bool, keep: int = 6) -> tuple[float, list]:
    """Samples per second from the arrival of the first batch to the last (worker start-up excluded),
    and the first `keep` batches (for comparing the loaders' outputs)."""
    if whole_batches:  # the packed loader's way: a worker builds a whole batch per call
        loader = torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=workers)
    else:  # the published loaders' way: per-sample fetch, collated
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers)
    batches, n, start = [], 0, None
    for batch in loader:
        if start is None:
            start = time.perf_counter()
        else:
            n += len(batch["image"])
        if len(batches) < keep:
            batches.append(batch)
        del batch
    return n / (time.perf_counter() - start), batches


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--annotations", default="results/world/demo/train.npz")
    ap.add_argument("--images", default="results/world/demo")
    ap.add_argument("--parts", default="results/partseg/demo_train/index.json")
    ap.add_argument("--parsing", default="results/parsing/demo_train/index.json")
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--long-side", type=int, default=1920)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    for path in (args.annotations, args.parts, args.parsing):
        if not Path(path).exists():
            sys.exit(f"{path} not found: run `snakemake --cores 2 pack` first (the benchmark reads the demo world's labels)")
    torch.set_num_threads(1)
    from pipeline import pack

    augment = AugmentSettings(occlusion_prob=0.0)  # occluders cost the same in both loaders
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for tag, long_side in (("", args.long_side), ("native_", None)):
            world = tmp / f"world{tag}"
            ann, images, labels, parts_index, parsing_index = upscaled_world(
                args.annotations, args.images, args.parts, args.parsing, args.rows, long_side, world)
            rows = len(np.load(ann)["scale"])
            files = {}
            for fmt in ("jpeg", "raw") if not tag else ("jpeg",):
                out = world / f"packed-{fmt}.h5"
                start = time.perf_counter()
                pack.pack_split("bench", ann, images, str(out), pack.PackSettings(image_format=fmt), parts_index,
                                parsing_index, progress=False)
                seconds = time.perf_counter() - start
                mb = out.stat().st_size / 1e6
                files[fmt] = out
                figures[f"{tag}pack_{fmt}_mb"] = round(mb, 2)
                if fmt == "jpeg":
                    figures[f"{tag}pack_mb_per_s"] = round(mb / seconds, 2)
                    figures[f"{tag}pack_rows_per_s"] = round(rows / seconds, 1)
            sampler = MixedBatchSampler([rows], None, args.batch_size, seed=0, steps=args.batches + 1)
            baseline = PerSampleDataset(ann, images, labels, augment)
            figures[f"{tag}baseline_samples_per_s"], base_batches = throughput(baseline, sampler, args.workers, whole_batches=False)
            for fmt, out in files.items():
                data = PackedDataset([str(out)], augment)
                key = "samples_per_s" if fmt == "jpeg" else "raw_samples_per_s"
                figures[f"{tag}{key}"], packed_batches = throughput(data, sampler, args.workers, whole_batches=True)
                if fmt == "jpeg":
                    same = [_agreement(a["part_labels"], b["part_labels"]) for a, b in zip(base_batches, packed_batches)]
                    cihp = [_agreement(a["parser_labels"], b["parser_labels"]) for a, b in zip(base_batches, packed_batches)]
                    img = [float((a["image"].float() - b["image"].float()).abs().mean()) for a, b in zip(base_batches, packed_batches)]
                    figures[f"{tag}part_labels_equal"] = round(float(np.mean(same)), 4)
                    figures[f"{tag}parser_labels_equal"] = round(float(np.mean(cihp)), 4)
                    figures[f"{tag}image_mean_abs_diff"] = round(float(np.mean(img)), 2)
            # one process, no DataLoader: the loaders' own cost per sample
            items = [b for batch in sampler for b in batch][: 4 * args.batch_size]
            for key, data in (("baseline_ms_per_sample", baseline), ("ms_per_sample", PackedDataset([str(files["jpeg"])], augment))):
                data[items[0]]
                start = time.perf_counter()
                for it in items:
                    data[it]
                figures[f"{tag}{key}"] = round((time.perf_counter() - start) / len(items) * 1000, 2)
            figures[f"{tag}speedup"] = round(figures[f"{tag}samples_per_s"] / figures[f"{tag}baseline_samples_per_s"], 2)
            figures[f"{tag}photo_long_side"] = long_side or "native"
            print(f"{tag or 'upscaled '}photos: packed {figures[f'{tag}samples_per_s']:.0f} samples/s, per-sample "
                  f"{figures[f'{tag}baseline_samples_per_s']:.0f} samples/s, speedup {figures[f'{tag}speedup']:.1f}", flush=True)
    for k, v in list(figures.items()):
        if isinstance(v, float):
            figures[k] = round(v, 2)
    figures.update({"workers": args.workers, "batch_size": args.batch_size, "batches": args.batches, "rows": args.rows,
                    "goal_speedup": 5.0, "meets_goal": figures["speedup"] >= 5.0})
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
