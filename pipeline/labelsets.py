"""Label sets of the per-pixel maps: SMPL body parts and the CIHP human-parsing labels (Graphonomy order).

Left and right are the person's own (CIHP's convention): a horizontal image flip swaps them.
"""

from __future__ import annotations

import numpy as np

from pipeline.skeleton import SMPL_PART_NAMES

# Part maps: 0 background, 1 + SMPL part id (1..24).
PART_BACKGROUND = 0
NUM_PART_CLASSES = 1 + len(SMPL_PART_NAMES)

CIHP_LABELS = (
    "Background", "Hat", "Hair", "Glove", "Sunglasses", "UpperClothes", "Dress", "Coat", "Socks",
    "Pants", "Torso-skin", "Scarf", "Skirt", "Face", "Left-arm", "Right-arm", "Left-leg", "Right-leg",
    "Left-shoe", "Right-shoe",
)
CIHP = {name: i for i, name in enumerate(CIHP_LABELS)}
NUM_CIHP_CLASSES = len(CIHP_LABELS)
CIHP_IGNORE = 255  # outside the keypoint box after cleaning
CIHP_FLIP_PAIRS = ((14, 15), (16, 17), (18, 19))  # (left, right): arm, leg, shoe (the person's own sides)


def cihp_flip_permutation() -> np.ndarray:
    """perm[label] = label after a horizontal flip."""
    perm = np.arange(256, dtype=np.uint8)
    for a, b in CIHP_FLIP_PAIRS:
        perm[a], perm[b] = b, a
    return perm


def palette(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 colours for label overlays (the PASCAL VOC bit-pattern palette); 0 is black."""
    colours = np.zeros((num_classes, 3), dtype=np.uint8)
    for label in range(num_classes):
        c, value = label, [0, 0, 0]
        for shift in range(7, -1, -1):
            for channel in range(3):
                value[channel] |= ((c >> channel) & 1) << shift
            c >>= 3
        colours[label] = value
    return colours
