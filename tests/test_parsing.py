"""Parsing inference and DSR's cleaning, checked against stub networks with known outputs."""

import numpy as np
import pytest
import torch

from pipeline.human_parser import ParsingSettings, assign_sides, flip_logits, keypoint_box, multiscale_logits, to_network_input
from pipeline.labelsets import (CIHP, CIHP_IGNORE, MIN_CLOTHING_LABELS, clean_labels, cihp_flip_permutation,
                                minimal_clothing_valid)
from pipeline.skeleton import JOINTS49_NAMES


def test_flip_swaps_left_and_right_labels_on_a_label_map():
    labels = np.zeros((4, 6), np.uint8)
    labels[:, 0] = CIHP["Left-arm"]
    labels[:, 1] = CIHP["Left-shoe"]
    labels[:, 5] = CIHP["Right-leg"]
    flipped = cihp_flip_permutation()[labels[:, ::-1]]
    assert (flipped[:, 5] == CIHP["Right-arm"]).all() and (flipped[:, 4] == CIHP["Right-shoe"]).all()
    assert (flipped[:, 0] == CIHP["Left-leg"]).all()
    # the logits version agrees with the label-map version, and is its own inverse
    logits = torch.nn.functional.one_hot(torch.as_tensor(labels, dtype=torch.long), 20).permute(2, 0, 1).float()
    np.testing.assert_array_equal(flip_logits(logits).argmax(0).numpy(), flipped)
    torch.testing.assert_close(flip_logits(flip_logits(logits)), logits)


class ConstantNet(torch.nn.Module):
    """Logit map c for channel c, whatever the input (at the input's size)."""

    def forward(self, x):
        b, _, h, w = x.shape
        return torch.arange(20, dtype=x.dtype).view(1, 20, 1, 1).expand(b, 20, h, w).clone()


class FirstChannelNet(torch.nn.Module):
    """Every channel repeats the input's first channel (blue, after the BGR swap): mirror-equivariant."""

    def forward(self, x):
        return x[:, :1].expand(-1, 20, -1, -1).clone()


def test_multiscale_merge_with_known_outputs():
    images = torch.randint(0, 256, (3, 40, 56, 3), dtype=torch.uint8)
    scales = (1.0, 0.5, 0.75, 1.5)
    total = multiscale_logits(ConstantNet(), images, scales, flip=True)
    assert total.shape == (3, 20, 40, 56)
    expected = torch.arange(20, dtype=torch.float32)
    for a, b in ((14, 15), (16, 17), (18, 19)):  # flipped logits are channel-swapped, then averaged
        expected[a] = expected[b] = (a + b) / 2
    torch.testing.assert_close(total, len(scales) * expected.view(1, 20, 1, 1).expand_as(total))
    without_flip = multiscale_logits(ConstantNet(), images, scales, flip=False)
    torch.testing.assert_close(without_flip[:, 15], torch.full((3, 40, 56), 15.0 * len(scales)))


def test_flip_averaging_is_aligned_and_inputs_are_bgr_in_unit_range():
    images = torch.randint(0, 256, (2, 32, 48, 3), dtype=torch.uint8)
    x = to_network_input(images)
    assert x.min() >= -1 and x.max() <= 1
    torch.testing.assert_close(x[:, 0], images[..., 2].float() * 2 / 255 - 1)  # channel 0 is blue
    merged = multiscale_logits(FirstChannelNet(), images, (1.0,), flip=True)
    torch.testing.assert_close(merged, x[:, :1].expand(-1, 20, -1, -1))  # a misaligned flip would blur this


def test_cleaning_keeps_the_keypoint_box_and_flags_small_minimal_clothing():
    raw = np.full((224, 224), CIHP["UpperClothes"], np.uint8)
    raw[100:110, 100:105] = CIHP["Face"]  # 50 pixels: too few
    raw[150:170, 40:60] = CIHP["Left-arm"]  # 400 pixels
    keypoints = np.array([[60.0, 50.0, 0.9], [160.0, 180.0, 0.8], [5.0, 5.0, 0.2]])  # the last is not confident
    box = keypoint_box(keypoints, threshold=0.3, grow=30.0)
    np.testing.assert_allclose(box, [30, 20, 190, 210])
    cleaned = clean_labels(raw, box)
    assert (cleaned[:20] == CIHP_IGNORE).all() and (cleaned[:, 191:] == CIHP_IGNORE).all()
    assert (cleaned[20:211, 30:191] == raw[20:211, 30:191]).all()
    valid = dict(zip(MIN_CLOTHING_LABELS, minimal_clothing_valid(cleaned, 60)))
    assert valid[CIHP["Left-arm"]] and not valid[CIHP["Face"]] and not valid[CIHP["Right-shoe"]]


def test_no_confident_keypoint_is_flagged_not_fatal():
    keypoints = np.array([[10.0, 10.0, 0.1], [0.0, 0.0, 0.0]])
    assert keypoint_box(keypoints, 0.3, 30.0) is None
    assert (clean_labels(np.zeros((8, 8), np.uint8), None) == CIHP_IGNORE).all()


def _keypoints(layout: str, positions: dict) -> np.ndarray:
    names = [n[3:] for n in JOINTS49_NAMES[:25]] if layout == "openpose" else list(JOINTS49_NAMES[25:])
    kp = np.zeros((len(names), 3))
    for name, (x, y) in positions.items():
        kp[names.index(name)] = (x, y, 0.9)
    return kp


def test_sides_follow_the_keypoint_limbs():
    """A person seen from behind: the parser called the arm on the image's left "Left-arm", but the
    keypoints put the person's left arm on the image's right. Arm, leg and shoe pixels take the side
    of the nearer limb; other labels are untouched; a pair without both limbs stays as parsed."""
    raw = np.full((224, 224), CIHP["UpperClothes"], np.uint8)
    raw[60:120, 20:40] = CIHP["Left-arm"]     # image-left arm, labelled left
    raw[60:120, 180:200] = CIHP["Left-arm"]   # image-right arm, also labelled left
    raw[130:200, 80:100] = CIHP["Right-leg"]  # image-left leg
    raw[130:200, 120:140] = CIHP["Right-leg"]
    op = _keypoints("openpose", {"RShoulder": (40, 55), "RElbow": (30, 90), "RWrist": (30, 120),
                                 "LShoulder": (180, 55), "LElbow": (190, 90), "LWrist": (190, 120),
                                 "RHip": (90, 130), "RKnee": (90, 165), "RAnkle": (90, 200),
                                 "LHip": (130, 130), "LKnee": (130, 165), "LAnkle": (130, 200)})
    part = _keypoints("part", {"Right Shoulder": (40, 55), "Right Elbow": (30, 90), "Right Wrist": (30, 120),
                               "Left Shoulder": (180, 55), "Left Elbow": (190, 90), "Left Wrist": (190, 120),
                               "Right Hip": (90, 130), "Right Knee": (90, 165), "Right Ankle": (90, 200),
                               "Left Hip": (130, 130), "Left Knee": (130, 165), "Left Ankle": (130, 200)})
    for kp in (op, part):
        fixed, changed = assign_sides(raw, kp, 0.3)
        assert (fixed[60:120, 20:40] == CIHP["Right-arm"]).all() and (fixed[60:120, 180:200] == CIHP["Left-arm"]).all()
        assert (fixed[130:200, 80:100] == CIHP["Right-leg"]).all() and (fixed[130:200, 120:140] == CIHP["Left-leg"]).all()
        assert changed == 60 * 20 + 70 * 20
        untouched = ~np.isin(raw, [CIHP["Left-arm"], CIHP["Right-leg"]])
        assert (fixed[untouched] == raw[untouched]).all()
    one_sided = op.copy()
    one_sided[[5, 6, 7], 2] = 0.1  # the left arm's keypoints are not confident
    fixed, _ = assign_sides(raw, one_sided, 0.3)
    arms = np.isin(raw, [CIHP["Left-arm"], CIHP["Right-arm"]])
    assert (fixed[arms] == raw[arms]).all() and (fixed[130:200, 120:140] == CIHP["Left-leg"]).all()
    with pytest.raises(ValueError, match="17 joints"):
        assign_sides(raw, np.zeros((17, 3)), 0.3)


def test_presets():
    dsr = ParsingSettings.preset("dsr")
    assert dsr.scales == (0.5, 0.75, 1.0, 1.5) and dsr.flip and dsr.single_scale_above == 1080
    assert ParsingSettings.preset("graphonomy").scales[0] == 1.0
    with pytest.raises(ValueError, match="unknown parsing preset"):
        ParsingSettings.preset("other")


def test_dsr_merged_classes_follow_dsr_and_keep_ignored_pixels():
    from pipeline.labelsets import DSR_MERGED_LABELS, dsr_merge_lut

    lut = dsr_merge_lut()
    merged = {name: [label for label in range(20) if lut[label] == k] for k, name in enumerate(DSR_MERGED_LABELS)}
    # DSR's GRPH_MERGE_MAP, in CIHP label ids
    assert merged == {"background": [0], "head": [1, 2, 4, 11, 13], "upperclothes": [3, 5, 6, 7, 10],
                      "pants": [8, 9, 12], "leftArm": [14], "rightArm": [15], "leftLeg": [16, 18], "rightLeg": [17, 19]}
    assert lut[CIHP_IGNORE] == CIHP_IGNORE


def test_minimal_clothing_flags_swap_sides_with_a_flip():
    from pipeline.labelsets import min_clothing_flip_permutation

    cleaned = np.zeros((40, 40), np.uint8)
    cleaned[:, :10] = CIHP["Left-arm"]  # 400 px on the left
    cleaned[:2, 30:] = CIHP["Right-shoe"]  # 20 px, too few
    flags = minimal_clothing_valid(cleaned, 60)
    mirrored = minimal_clothing_valid(cihp_flip_permutation()[cleaned[:, ::-1]], 60)
    assert flags.tolist() == [False, True, False, False, False]
    assert mirrored.tolist() == flags[min_clothing_flip_permutation()].tolist() == [False, False, True, False, False]
