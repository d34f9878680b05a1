"""Report figure of the demo world: sample photos beside their ground-truth clothing and part maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pipeline.datasets import load_annotations
from pipeline.io import atomic_output
from pipeline.labelsets import NUM_CIHP_CLASSES, NUM_PART_CLASSES, palette

TILE = 224


def _fit(image: Image.Image) -> Image.Image:
    """Letterbox into a TILE x TILE square."""
    scale = TILE / max(image.size)
    resized = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.NEAREST)
    canvas = Image.new("RGB", (TILE, TILE), (255, 255, 255))
    canvas.paste(resized, ((TILE - resized.width) // 2, (TILE - resized.height) // 2))
    return canvas


def _overlay(photo: np.ndarray, labels: np.ndarray, colours: np.ndarray) -> np.ndarray:
    mixed = photo.astype(np.float64)
    hit = labels > 0
    mixed[hit] = 0.35 * mixed[hit] + 0.65 * colours[labels[hit]]
    return mixed.astype(np.uint8)


def world_figure(split_files: list[tuple[str | Path, str | Path]], out: str | Path, per_split: int = 3) -> None:
    """Rows of (photo with keypoints, clothing labels, body parts) for the first samples of each split."""
    cihp_colours, part_colours = palette(NUM_CIHP_CLASSES), palette(NUM_PART_CLASSES)
    rows = []
    for annotations_file, gt_file in split_files:
        ann = load_annotations(annotations_file)
        with np.load(gt_file, allow_pickle=False) as gt:
            cihp_paths, part_paths = gt["full_cihp"], gt["full_parts"]
        for i in range(min(per_split, len(ann))):
            photo = np.asarray(Image.open(ann.image_path(i)).convert("RGB"))
            cihp = np.asarray(Image.open(ann.image_root / str(cihp_paths[i])))
            parts = np.asarray(Image.open(ann.image_root / str(part_paths[i])))
            with_points = Image.fromarray(photo)
            draw = ImageDraw.Draw(with_points)
            for x, y, v in ann["part"][i]:
                if v > 0:
                    draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=(255, 255, 0), outline=(0, 0, 0))
            tiles = [with_points, Image.fromarray(_overlay(photo, cihp, cihp_colours)),
                     Image.fromarray(_overlay(photo, parts, part_colours))]
            rows.append(np.concatenate([np.asarray(_fit(t)) for t in tiles], axis=1))
    with atomic_output(out) as tmp:
        Image.fromarray(np.concatenate(rows, axis=0)).save(tmp, format="PNG")
