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


def heat_colours(values: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """(..., 3) uint8: a blue-cyan-yellow-red ramp of `values` scaled from vmin to vmax."""
    t = np.clip((np.asarray(values, np.float64) - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0)
    stops = np.array([[0, 0, 160], [0, 200, 255], [255, 230, 0], [215, 25, 28]], np.float64)
    pos = t * (len(stops) - 1)
    k = np.minimum(pos.astype(int), len(stops) - 2)
    frac = (pos - k)[..., None]
    return (stops[k] * (1 - frac) + stops[k + 1] * frac).round().astype(np.uint8)


def heatmap_tile(image: np.ndarray, cells: np.ndarray, boxes: np.ndarray, vmin: float, vmax: float, title: str,
                 size: int = 200, alpha: float = 0.55) -> np.ndarray:
    """An RGB tile (size + 30, size, 3): `image` (R, R, 3) with each cell value (n, n) coloured over its
    window (`boxes` (n, n, 4): top, bottom, left, right in image pixels), and a two-line title above."""
    base = image.astype(np.float64).copy()
    colours = heat_colours(cells, vmin, vmax)
    for i in range(cells.shape[0]):
        for j in range(cells.shape[1]):
            t, b, l, r = (int(v) for v in boxes[i, j])
            base[t:b, l:r] = (1 - alpha) * base[t:b, l:r] + alpha * colours[i, j]
    tile = Image.fromarray(base.round().astype(np.uint8)).resize((size, size), Image.NEAREST)
    canvas = Image.new("RGB", (size, size + 30), (255, 255, 255))
    canvas.paste(tile, (0, 30))
    draw = ImageDraw.Draw(canvas)
    for k, line in enumerate(title.split("\n")[:2]):
        draw.text((4, 3 + 13 * k), line, fill=(0, 0, 0))
    return np.asarray(canvas)


def colour_bar(vmin: float, vmax: float, label: str, width: int = 200, height: int = 230) -> np.ndarray:
    """A vertical colour scale tile for heatmap_tile's colours, labelled at both ends."""
    img = Image.new("RGB", (width, height), (255, 255, 255))
    ramp = heat_colours(np.linspace(vmax, vmin, height - 60)[:, None].repeat(24, 1), vmin, vmax)
    img.paste(Image.fromarray(ramp), (20, 40))
    draw = ImageDraw.Draw(img)
    draw.text((4, 8), label, fill=(0, 0, 0))
    draw.text((50, 40), f"{vmax:.0f}", fill=(0, 0, 0))
    draw.text((50, height - 32), f"{vmin:.0f}", fill=(0, 0, 0))
    return np.asarray(img)


def bar_chart(groups: dict[str, dict[str, float]], title: str, ylabel: str, size: tuple[int, int] = (640, 320),
              references: dict[str, dict[str, float]] | None = None) -> np.ndarray:
    """Grouped bars as an RGB tile: per group (e.g. a benchmark) one bar per series (e.g. a model), with an
    optional reference value per (group, series) drawn as a black tick (e.g. a paper's number)."""
    w, h = size
    left, right, top, bottom = 50, 12, 24, 46
    img = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.text((left, 5), title, fill=(0, 0, 0))
    references = references or {}
    series = sorted({s for g in groups.values() for s in g})
    values = [v for g in groups.values() for v in g.values() if np.isfinite(v)]
    values += [v for g in references.values() for v in g.values() if np.isfinite(v)]
    if not groups or not series or not values:
        draw.text((left, h // 2), "no data", fill=(120, 120, 120))
        return np.asarray(img)
    y1 = max(values) * 1.1 or 1.0
    draw.rectangle([left, top, w - right, h - bottom], outline=(0, 0, 0))
    span = (w - left - right) / len(groups)
    bar = span * 0.8 / len(series)

    def y_at(v):
        return h - bottom - v / y1 * (h - top - bottom)

    for gi, (group, vals) in enumerate(groups.items()):
        x0 = left + gi * span + span * 0.1
        for si, name in enumerate(series):
            if name in vals and np.isfinite(vals[name]):
                colour = PALETTE[si % len(PALETTE)]
                draw.rectangle([x0 + si * bar, y_at(vals[name]), x0 + (si + 1) * bar - 2, h - bottom], fill=colour)
                draw.text((x0 + si * bar, y_at(vals[name]) - 11), f"{vals[name]:.0f}", fill=(0, 0, 0))
            ref = references.get(group, {}).get(name)
            if ref is not None:
                draw.line([(x0 + si * bar - 2, y_at(ref)), (x0 + (si + 1) * bar, y_at(ref))], fill=(0, 0, 0), width=3)
        draw.text((x0, h - bottom + 4), group[:int(span / 6)], fill=(0, 0, 0))
    for si, name in enumerate(series):
        draw.text((left + 4 + 110 * si, h - 16), name, fill=PALETTE[si % len(PALETTE)])
    draw.text((4, top), f"{y1:.3g}", fill=(0, 0, 0))
    draw.text((4, h - bottom - 10), "0", fill=(0, 0, 0))
    draw.text((4, (top + h - bottom) // 2), ylabel[:8], fill=(0, 0, 0))
    return np.asarray(img)
