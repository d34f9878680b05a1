"""Report figures shared by the stages: tiles laid out in a grid, an optional caption banner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pipeline.io import atomic_output


def save_grid(tiles: list[np.ndarray], out: str | Path, per_row: int = 2, banner: str | None = None) -> None:
    """Write equally sized RGB tiles (H, W, 3) as rows of `per_row` (a short last row is dropped),
    under a one-line white banner when given."""
    rows = [np.concatenate(tiles[r:r + per_row], axis=1) for r in range(0, len(tiles) - per_row + 1, per_row)]
    grid = np.concatenate(rows, axis=0)
    if banner:
        strip = Image.new("RGB", (grid.shape[1], 22), (255, 255, 255))
        ImageDraw.Draw(strip).text((6, 5), banner, fill=(0, 0, 0))
        grid = np.concatenate([np.asarray(strip), grid], axis=0)
    with atomic_output(out) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
