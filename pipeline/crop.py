"""The crop frame: the square of side 200 * scale pixels around `center`, resampled to `res` pixels.

Every per-pixel label of the pipeline is stored in this frame, so one affine augmentation
applies to image and labels alike. Coordinates put pixel centres on integers (pixel (i, j) is the
point x=j, y=i), and the crop maps the square's area exactly onto the crop's pixels:

    x_crop = (x - center_x) * res / (200 * scale) + (res - 1) / 2
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

PIXELS_PER_SCALE = 200.0  # SPIN's convention: scale = box side / 200


def bbox_to_center_scale(box_xywh, rescale: float = 1.2) -> tuple[np.ndarray, float]:
    """SPIN's person box -> (center (2,), scale): the box's centre, and its longer side * rescale / 200."""
    x, y, w, h = (float(v) for v in box_xywh)
    return np.array([x + w / 2.0, y + h / 2.0]), max(w, h) * rescale / PIXELS_PER_SCALE


def crop_matrix(center, scale: float, res: int) -> np.ndarray:
    """(3, 3) homogeneous map from image pixels to crop pixels."""
    s = res / (PIXELS_PER_SCALE * float(scale))
    cx, cy = float(center[0]), float(center[1])
    return np.array([[s, 0.0, (res - 1) / 2.0 - s * cx], [0.0, s, (res - 1) / 2.0 - s * cy], [0.0, 0.0, 1.0]])


def context_crop_matrix(center, scale: float, context: float, res: int) -> np.ndarray:
    """The crop of the same person box enlarged by `context` (the packed image crop, the parser's input
    crop), at `res` pixels: its centre is the label crop's, its side `context` times the label crop's."""
    return crop_matrix(center, scale * context, res)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a (3, 3) affine map to (..., 2) pixel coordinates."""
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def source_points(matrix: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """(H_out, W_out, 2) input-pixel coordinates of every output pixel centre, `matrix` mapping input
    pixels to output pixels."""
    h_out, w_out = out_size
    ys, xs = np.meshgrid(np.arange(h_out, dtype=np.float64), np.arange(w_out, dtype=np.float64), indexing="ij")
    return transform_points(np.stack([xs, ys], axis=-1), np.linalg.inv(matrix))


def sampling_grid(matrix: np.ndarray, out_size: tuple[int, int], in_size: tuple[int, int]) -> np.ndarray:
    """The grid for `F.grid_sample(..., align_corners=True)` (which puts -1/+1 on the centres of the edge
    pixels) that resamples an input of `in_size` (height, width) into `out_size`."""
    src = source_points(matrix, out_size)
    h_in, w_in = in_size
    return np.stack([2 * src[..., 0] / max(w_in - 1, 1) - 1, 2 * src[..., 1] / max(h_in - 1, 1) - 1], axis=-1)


def warp(image: np.ndarray, matrix: np.ndarray, out_size: tuple[int, int], nearest: bool, fill: float = 0) -> np.ndarray:
    """Resample `image` (H, W) or (H, W, C) into an output of `out_size` (height, width), where `matrix`
    maps input pixels to output pixels. Nearest for label maps (values kept exactly), bilinear for images."""
    h_out, w_out = out_size
    h_in, w_in = image.shape[:2]
    if nearest:
        src = source_points(matrix, out_size)
        xi, yi = np.rint(src[..., 0]).astype(np.int64), np.rint(src[..., 1]).astype(np.int64)
        valid = (xi >= 0) & (xi < w_in) & (yi >= 0) & (yi < h_in)
        out = np.full((h_out, w_out) + image.shape[2:], fill, dtype=image.dtype)
        out[valid] = image[yi[valid], xi[valid]]
        return out
    grid = sampling_grid(matrix, out_size, (h_in, w_in))
    img = torch.from_numpy(image.astype(np.float32))  # a copy: images from PIL are read-only
    img = img.unsqueeze(-1) if img.ndim == 2 else img
    sampled = F.grid_sample(img.permute(2, 0, 1)[None] - fill, torch.as_tensor(grid, dtype=torch.float32)[None],
                            mode="bilinear", padding_mode="zeros", align_corners=True)[0].permute(1, 2, 0) + fill
    out = sampled.numpy().reshape((h_out, w_out) + image.shape[2:])
    return np.clip(np.rint(out), 0, 255).astype(image.dtype) if image.dtype == np.uint8 else out.astype(image.dtype)
