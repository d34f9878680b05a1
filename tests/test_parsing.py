"""Parsing inference and DSR's cleaning, checked against stub networks with known outputs."""

import numpy as np
import pytest
import torch

from pipeline.labelsets import CIHP, CIHP_IGNORE, cihp_flip_permutation
from pipeline.parsing import (
    MIN_CLOTHING_LABELS,
    ParsingSettings,
    clean_labels,
    flip_logits,
    keypoint_box,
    minimal_clothing_valid,
    multiscale_logits,
    to_network_input,
)


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


def test_presets():
    dsr = ParsingSettings.preset("dsr")
    assert dsr.scales == (0.5, 0.75, 1.0, 1.5) and dsr.flip and dsr.single_scale_above == 1080
    assert ParsingSettings.preset("graphonomy").scales[0] == 1.0
    with pytest.raises(ValueError, match="unknown parsing preset"):
        ParsingSettings.preset("other")
