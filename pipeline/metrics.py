"""Agreement measures every check uses: per-label IoU, mIoU and pixel accuracy between label maps.
Pure functions of arrays; the checks (`pipeline.partseg`, `pipeline.parsing`, `pipeline.prior`) read
files and write reports around them."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def per_label_iou(predicted: np.ndarray, truth: np.ndarray, labels: Iterable[int],
                  valid: np.ndarray | None = None) -> dict[int, float]:
    """IoU of each label in `labels` between two stacks of label maps, over the `valid` pixels (all
    when None); a label absent from both is left out (its IoU is undefined, not 0)."""
    ious = {}
    for label in labels:
        p, t = predicted == label, truth == label
        if valid is not None:
            p, t = p & valid, t & valid
        union = (p | t).sum()
        if union:
            ious[int(label)] = float((p & t).sum() / union)
    return ious


def segmentation_scores(predicted: np.ndarray, truth: np.ndarray, labels: Iterable[int],
                        ignore: int | None = None) -> dict:
    """mIoU over `labels`, per-label IoU and pixel accuracy; pixels `predicted` marks `ignore` are left
    out of all three (a cleaned pseudo-label map marks pixels it makes no claim about)."""
    valid = None if ignore is None else predicted != ignore
    ious = per_label_iou(predicted, truth, labels, valid)
    accuracy = (predicted == truth).mean() if valid is None else (predicted[valid] == truth[valid]).mean()
    return {"miou": float(np.mean(list(ious.values()))), "per_label_iou": ious, "pixel_accuracy": float(accuracy)}
