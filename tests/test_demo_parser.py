"""The demo parser's trainer: it learns, its mirror augmentation swaps sides, and what it saves loads
back through `from_pretrained` exactly as official weights do."""

import numpy as np
import torch

from models.graphonomy import from_pretrained
from pipeline.human_parser import multiscale_logits
from pipeline.metrics import segmentation_scores
from trainers.demo_parser import augment, class_weights_for, label_flip_permutation, train

LEFT_ARM, RIGHT_ARM, UPPER, PANTS = 14, 15, 5, 9


def toy_set(n: int = 12, size: int = 64, seed: int = 0):
    """Grey images with a red box (UpperClothes) above a blue box (Pants) at random places and sizes."""
    rng = np.random.default_rng(seed)
    images = np.full((n, size, size, 3), 128, np.uint8)
    labels = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        x0, w = rng.integers(4, size // 2), rng.integers(size // 4, size // 2)
        y0, h = rng.integers(2, size // 4), rng.integers(size // 5, size // 3)
        images[i, y0:y0 + h, x0:x0 + w] = (220, 30, 30)
        labels[i, y0:y0 + h, x0:x0 + w] = UPPER
        images[i, y0 + h:y0 + 2 * h, x0:x0 + w] = (30, 30, 220)
        labels[i, y0 + h:y0 + 2 * h, x0:x0 + w] = PANTS
    return images, labels


def test_the_trainer_learns_a_toy_parsing_task_and_its_weights_load_back(tmp_path):
    images, labels = toy_set()
    model = train(images, labels, width=0.0625, steps=120, batch_size=4, learning_rate=6e-3, seed=0, progress=False)
    assert all(p.is_contiguous() for p in model.state_dict().values())
    torch.save(model.state_dict(), tmp_path / "demo.pth")
    loaded = from_pretrained(tmp_path / "demo.pth").eval()
    with torch.inference_mode():
        ours = multiscale_logits(model, images, (1.0,), False)
        again = multiscale_logits(loaded, images, (1.0,), False)
    torch.testing.assert_close(again, ours)
    iou = segmentation_scores(ours.argmax(1).numpy(), labels, [UPPER, PANTS])["per_label_iou"]
    assert iou[UPPER] > 0.5 and iou[PANTS] > 0.5, iou


def test_mirroring_swaps_left_and_right_labels():
    images = np.zeros((64, 8, 8, 3), np.uint8)
    images[:, :, :4] = 255  # bright left half, labelled Left-arm
    labels = np.zeros((64, 8, 8), np.int64)
    labels[:, :, :4] = LEFT_ARM
    gen = torch.Generator().manual_seed(0)
    x, y = augment(torch.as_tensor(images), torch.as_tensor(labels), gen, label_flip_permutation())
    mirrored = y[:, 0, -1] == RIGHT_ARM
    assert 10 < int(mirrored.sum()) < 54  # about half the batch
    # a mirrored sample has its bright half and its arm label on the right, now called Right-arm
    assert (y[mirrored][:, :, 4:] == RIGHT_ARM).all() and (y[mirrored][:, :, :4] == 0).all()
    assert (x[mirrored][:, :, 4:].float().mean() > x[mirrored][:, :, :4].float().mean())
    assert (y[~mirrored][:, :, :4] == LEFT_ARM).all()


def test_class_weights_follow_the_label_frequencies_to_the_chosen_power():
    labels = np.zeros((1, 10, 100), np.uint8)  # 1000 pixels: 900 background, 90 UpperClothes, 10 Pants
    labels[0, :9, :10] = UPPER
    labels[0, 9, :10] = PANTS
    flat = class_weights_for(labels, 0.0)
    assert flat.shape == (20,) and set(np.flatnonzero(flat)) == {0, UPPER, PANTS}
    np.testing.assert_allclose(flat[[0, UPPER, PANTS]], 1.0)  # power 0: plain cross-entropy
    for power in (0.3, 0.5):
        w = class_weights_for(labels, power)
        assert w[LEFT_ARM] == 0.0  # absent from the maps: no weight
        np.testing.assert_allclose(w[[0, UPPER, PANTS]].mean(), 1.0)
        np.testing.assert_allclose(w[PANTS] / w[0], (900 / 10) ** power, rtol=1e-3)
    assert class_weights_for(labels, 0.5)[PANTS] > class_weights_for(labels, 0.3)[PANTS]
