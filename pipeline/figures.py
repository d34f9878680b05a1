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


PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127)]


def line_chart(series: dict[str, tuple[np.ndarray, np.ndarray]], title: str, xlabel: str, ylabel: str,
               size: tuple[int, int] = (480, 320), log_y: bool = False,
               hlines: dict[str, float] | None = None) -> np.ndarray:
    """A line chart as an RGB tile (H, W, 3): one coloured line per named (x, y) series, dashed grey
    horizontal reference lines (`hlines`, e.g. a baseline), axes with their ranges, a legend."""
    w, h = size
    left, right, top, bottom = 58, 12, 24, 34
    img = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.text((left, 5), title, fill=(0, 0, 0))
    hlines = hlines or {}
    xs = [np.asarray(x, np.float64) for x, _ in series.values() if len(x)]
    ys = [np.asarray(y, np.float64) for _, y in series.values() if len(y)] + [np.asarray(list(hlines.values()), np.float64)]
    ys = [y[np.isfinite(y) & ((y > 0) if log_y else True)] for y in ys]
    if not any(len(x) for x in xs) or not any(len(y) for y in ys):
        draw.text((left, h // 2), "no data", fill=(120, 120, 120))
        return np.asarray(img)
    f = (lambda v: np.log10(v)) if log_y else (lambda v: v)
    x0, x1 = min(x.min() for x in xs if len(x)), max(x.max() for x in xs if len(x))
    y0, y1 = (min(f(y).min() for y in ys if len(y)), max(f(y).max() for y in ys if len(y)))
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    pad = 0.05 * (y1 - y0)
    y0, y1 = y0 - pad, y1 + pad

    def at(x, y):
        return (left + (x - x0) / (x1 - x0) * (w - left - right), top + (y1 - f(y)) / (y1 - y0) * (h - top - bottom))

    draw.rectangle([left, top, w - right, h - bottom], outline=(0, 0, 0))
    for label, value in hlines.items():
        if not log_y or value > 0:
            _, yy = at(x0, value)
            for xx in range(left, w - right, 8):
                draw.line([(xx, yy), (min(xx + 4, w - right), yy)], fill=(120, 120, 120))
            draw.text((left + 4, yy - 11), f"{label} {value:.4g}", fill=(90, 90, 90))
    for k, (name, (x, y)) in enumerate(series.items()):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        keep = np.isfinite(y) & ((y > 0) if log_y else True)
        points = [at(a, b) for a, b in zip(x[keep], y[keep])]
        colour = PALETTE[k % len(PALETTE)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for px, py in points if len(points) < 30 else []:
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)
        draw.text((w - right - 110, top + 4 + 12 * k), name, fill=colour)
    lo, hi = (10 ** (y0 + pad), 10 ** (y1 - pad)) if log_y else (y0 + pad, y1 - pad)
    draw.text((4, top), f"{hi:.3g}", fill=(0, 0, 0))
    draw.text((4, h - bottom - 10), f"{lo:.3g}", fill=(0, 0, 0))
    draw.text((4, (top + h - bottom) // 2), ylabel[:9], fill=(0, 0, 0))
    draw.text((left, h - bottom + 4), f"{x0:.6g}", fill=(0, 0, 0))
    draw.text((w - right - 40, h - bottom + 4), f"{x1:.6g}", fill=(0, 0, 0))
    draw.text(((left + w) // 2 - 3 * len(xlabel), h - bottom + 16), xlabel, fill=(0, 0, 0))
    return np.asarray(img)
