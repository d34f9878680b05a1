"""The agreement measures every check uses, on maps whose answers are counted by hand."""

import numpy as np
import pytest

from pipeline.metrics import per_label_iou, segmentation_scores


def test_iou_per_label_and_pixel_accuracy_on_a_counted_case():
    truth = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [0, 0, 0, 0]])
    predicted = np.array([[1, 1, 1, 2], [1, 2, 2, 2], [0, 0, 0, 3]])
    scores = segmentation_scores(predicted, truth, [1, 2, 3])
    # label 1: 3 shared of 5 claimed by either; label 2: 3 of 5; label 3: 0 of 1
    assert scores["per_label_iou"] == pytest.approx({1: 0.6, 2: 0.6, 3: 0.0})
    assert scores["miou"] == pytest.approx(0.4)
    assert scores["pixel_accuracy"] == pytest.approx(9 / 12)


def test_a_label_absent_from_both_maps_is_left_out_not_zero():
    truth = np.zeros((2, 2), int)
    assert per_label_iou(truth, truth, [0, 5]) == {0: 1.0}


def test_ignored_pixels_leave_every_score():
    truth = np.array([[1, 1, 0, 0]])
    predicted = np.array([[1, 255, 255, 0]])  # the middle pixels make no claim
    scores = segmentation_scores(predicted, truth, [0, 1], ignore=255)
    assert scores["per_label_iou"] == {0: 1.0, 1: 1.0}
    assert scores["pixel_accuracy"] == 1.0
    assert segmentation_scores(predicted, truth, [0, 1])["pixel_accuracy"] == 0.5  # counted when not ignored
