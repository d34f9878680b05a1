"""Image datasets of the demo world, written in shards.

A shard directory holds `images/NNNNNN.jpg`, full-frame ground truth `gt/NNNNNN_{parts,cihp,instance}.png`,
its annotation rows `annotations.npz` and crop-frame ground truth `gt_crop.npz`. The merge writes
the split's annotation file `<split>.npz` (SPIN/EFT format, image names relative to the dataset
folder) and `<split>_gt.npz` (stacked crop-frame maps, paths of the full-frame maps, scene facts).
Each sample's randomness comes from (seed, split, index) alone, so the shard size never changes
the data.
"""

from __future__ import annotations

import json
import shutil
import zlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from pipeline.body.model import BodyModel
from pipeline.io import save_npz
from pipeline.world.scene import SceneContext, WorldSettings, annotation_row, generate_sample

GT_MAPS = ("parts", "cihp", "instance")
JPEG_QUALITY = 92


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


def write_image_shard(body_file: str | Path, out_dir: str | Path, split: str, indices: range, seed: int,
                      settings: WorldSettings, progress: bool = True) -> None:
    """Generate the samples `indices` of a split into `out_dir` (written under a temporary name, then renamed)."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    (tmp / "gt").mkdir()
    ctx = SceneContext.create(BodyModel.from_file(body_file))
    rows: dict[str, list] = {}
    crops: dict[str, list] = {k: [] for k in GT_MAPS}
    meta: list[dict] = []
    for index in tqdm(indices, desc=f"{split} {indices.start}-{indices.stop - 1}", disable=not progress, mininterval=5):
        sample = generate_sample(ctx, settings, sample_rng(seed, split, index))
        name = f"{index:06d}"
        Image.fromarray(sample.image).save(tmp / "images" / f"{name}.jpg", quality=JPEG_QUALITY)
        for key in GT_MAPS:
            Image.fromarray(sample.full[key]).save(tmp / "gt" / f"{name}_{key}.png")
            crops[key].append(sample.crop[key])
        row = {"imgname": np.str_(f"images/{name}.jpg"), **annotation_row(sample)}
        for key, value in row.items():
            rows.setdefault(key, []).append(value)
        meta.append({"index": index, "height": sample.image.shape[0], "width": sample.image.shape[1], **sample.meta})
    save_npz(tmp / "annotations.npz", {k: np.stack(v) for k, v in rows.items()})
    save_npz(tmp / "gt_crop.npz", {k: np.stack(v) for k, v in crops.items()})
    (tmp / "meta.json").write_text(json.dumps({"split": split, "indices": [indices.start, indices.stop], "seed": seed,
                                               "settings": asdict(settings), "samples": meta}, indent=1))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)


def merge_split(shard_dirs: list[str | Path], dataset_root: str | Path, out_annotations: str | Path, out_gt: str | Path) -> int:
    """Concatenate shards into the split's annotation file and ground-truth file; returns the row count."""
    dataset_root = Path(dataset_root)
    rows: dict[str, list] = {}
    gt: dict[str, list] = {}
    metas: list[dict] = []
    for shard_dir in map(Path, shard_dirs):
        prefix = shard_dir.relative_to(dataset_root).as_posix()
        with np.load(shard_dir / "annotations.npz", allow_pickle=False) as z:
            for key in z.files:
                value = z[key]
                if key == "imgname":
                    value = np.array([f"{prefix}/{name}" for name in value])
                rows.setdefault(key, []).append(value)
        with np.load(shard_dir / "gt_crop.npz", allow_pickle=False) as z:
            for key in GT_MAPS:
                gt.setdefault(f"crop_{key}", []).append(z[key])
        samples = json.loads((shard_dir / "meta.json").read_text())["samples"]
        for s in samples:
            for key in GT_MAPS:
                gt.setdefault(f"full_{key}", []).append(f"{prefix}/gt/{s['index']:06d}_{key}.png")
        metas.extend(samples)
    save_npz(out_annotations, {k: np.concatenate(v) for k, v in rows.items()})
    facts = {
        "index": np.array([m["index"] for m in metas]),
        "template": np.array([m["template"] for m in metas]),
        "upper": np.array([m["upper"] for m in metas]),
        "lower": np.array([m["lower"] for m in metas]),
        "second_person": np.array([m["second_person"] for m in metas]),
        "occluded_fraction": np.array([m["occluded_fraction"] for m in metas]),
    }
    save_npz(out_gt, {**{k: np.concatenate(v) if k.startswith("crop_") else np.array(v) for k, v in gt.items()}, **facts})
    return len(metas)
