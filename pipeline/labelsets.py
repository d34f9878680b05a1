"""Label sets of the per-pixel maps: SMPL body parts and the CIHP human-parsing labels (Graphonomy order),
and DSR's format of the clothing labels: keypoint-box cleaning, the minimal-clothing flags and the
8 merged classes its semantic-rendering loss compares.

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
IGNORE = 255  # a pixel no label claims: outside the keypoint box (parser), or beyond the image (augmentation)
CIHP_IGNORE = IGNORE
CIHP_FLIP_PAIRS = ((14, 15), (16, 17), (18, 19))  # (left, right): arm, leg, shoe (the person's own sides)


def cihp_flip_permutation() -> np.ndarray:
    """perm[label] = label after a horizontal flip."""
    perm = np.arange(256, dtype=np.uint8)
    for a, b in CIHP_FLIP_PAIRS:
        perm[a], perm[b] = b, a
    return perm


# DSR's minimal-clothing labels (bare skin or tight shoes: where the body surface is visible), in the
# order of the stored flags (DSR's code lists them as leftShoe, rightShoe, leftArm, rightArm, face).
MIN_CLOTHING_LABELS = (CIHP["Face"], CIHP["Left-arm"], CIHP["Right-arm"], CIHP["Left-shoe"], CIHP["Right-shoe"])

def min_clothing_flip_permutation() -> np.ndarray:
    """perm[k] = the index in MIN_CLOTHING_LABELS of flag k's label after a horizontal flip."""
    flipped = cihp_flip_permutation()
    return np.array([MIN_CLOTHING_LABELS.index(int(flipped[label])) for label in MIN_CLOTHING_LABELS])


# DSR's 8 merged classes for its clothing loss (its GRPH_MERGE_MAP): each CIHP label's merged class.
DSR_MERGED_LABELS = ("background", "head", "upperclothes", "pants", "leftArm", "rightArm", "leftLeg", "rightLeg")
_DSR_MERGE = {
    "background": ("Background",),
    "head": ("Hat", "Hair", "Sunglasses", "Scarf", "Face"),
    "upperclothes": ("Glove", "UpperClothes", "Dress", "Coat", "Torso-skin"),  # DSR names label 10 "jumpsuits" (LIP)
    "pants": ("Socks", "Pants", "Skirt"),
    "leftArm": ("Left-arm",),
    "rightArm": ("Right-arm",),
    "leftLeg": ("Left-leg", "Left-shoe"),
    "rightLeg": ("Right-leg", "Right-shoe"),
}


def dsr_merge_lut() -> np.ndarray:
    """(256,) uint8: lut[cihp label] = DSR merged class (0..7); 255 (ignored) stays 255."""
    lut = np.full(256, CIHP_IGNORE, dtype=np.uint8)
    for merged, names in enumerate(_DSR_MERGE.values()):
        for name in names:
            lut[CIHP[name]] = merged
    return lut


def clean_labels(raw: np.ndarray, box: np.ndarray | None) -> np.ndarray:
    """DSR's cleaning: pixels outside the keypoint box become 255 (ignored); without a box, all of them."""
    cleaned = np.full_like(raw, CIHP_IGNORE)
    if box is None or not np.isfinite(box).all():
        return cleaned
    h, w = raw.shape
    x0, y0 = max(int(np.ceil(box[0])), 0), max(int(np.ceil(box[1])), 0)
    x1, y1 = min(int(np.floor(box[2])), w - 1), min(int(np.floor(box[3])), h - 1)
    if x1 >= x0 and y1 >= y0:
        cleaned[y0:y1 + 1, x0:x1 + 1] = raw[y0:y1 + 1, x0:x1 + 1]
    return cleaned


def minimal_clothing_valid(cleaned: np.ndarray, min_pixels: int) -> np.ndarray:
    """(5,) bool per MIN_CLOTHING_LABELS: present with more than `min_pixels` pixels."""
    return np.array([(cleaned == label).sum() > min_pixels for label in MIN_CLOTHING_LABELS])


def cleaned_from_shard(labels: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Cleaned maps (N, R, R) from stored raw labels and boxes (NaN box: nothing is kept)."""
    return np.stack([clean_labels(l, None if np.isnan(b).any() else b) for l, b in zip(labels, boxes)])


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
