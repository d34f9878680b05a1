"""Train the tiny demo parser: the Graphonomy transfer architecture at a fraction of its width,
trained from scratch on the demo world's training images and their ground-truth clothing maps.

A fresh machine has no parser weights; this gives the pseudo-label stage a real network to run,
through exactly the code path official weights take. The checkpoint is a flat state dict with the
official key names (only the channel counts differ), so `models.graphonomy.from_pretrained` loads it.

    python -m trainers.demo_parser TRAIN_NPZ TRAIN_GT_NPZ OUT.pth [--steps N] ...  (defaults: the config schema's parsing.demo)
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from models.graphonomy import build
from pipeline import cli
from pipeline.config import resolve_device, schema_defaults
from pipeline.crop import crop_matrix, warp
from pipeline.datasets import load_annotations
from pipeline.io import atomic_output
from pipeline.labelsets import NUM_CIHP_CLASSES, cihp_flip_permutation
from pipeline.human_parser import to_network_input

log = logging.getLogger("trainers.demo_parser")
DEFAULTS = schema_defaults("parsing", "demo")  # the config schema's parsing.demo: CLI and train() defaults


def load_training_set(annotations_file: str, gt_file: str, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Crops (N, R, R, 3) uint8 and their ground-truth CIHP maps (N, R, R) in the same crop frame."""
    ann = load_annotations(annotations_file)
    with np.load(gt_file, allow_pickle=False) as z:
        gt = z["crop_cihp"]
    label_res = gt.shape[-1]
    images, labels = [], []
    for i in range(len(ann)):
        images.append(ann.crop(i, resolution))
        between = crop_matrix(ann["center"][i], ann["scale"][i], resolution) @ np.linalg.inv(
            crop_matrix(ann["center"][i], ann["scale"][i], label_res))
        labels.append(gt[i] if resolution == label_res else warp(gt[i], between, (resolution, resolution), nearest=True))
    return np.stack(images), np.stack(labels)


def rescale(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, low: float = 0.6, high: float = 1.4):
    """Resize the whole batch by one random factor (images bilinear, labels nearest): the graph
    projection sums over pixels, so multi-scale inference needs a network that has seen scales."""
    s = low + (high - low) * float(torch.rand(1, generator=gen))
    size = max(32, int(round(x.shape[-1] * s / 16)) * 16)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    y = F.interpolate(y[:, None].float(), size=(size, size), mode="nearest")[:, 0].long()
    return x, y


def label_flip_permutation() -> torch.Tensor:
    """perm[label] = the label after a horizontal flip, over the 20 CIHP labels (what `augment` takes)."""
    return torch.as_tensor(cihp_flip_permutation()[:NUM_CIHP_CLASSES], dtype=torch.long)


def augment(images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator, flip_perm: torch.Tensor):
    """Mirror half the batch (left/right labels swapped) and jitter brightness and contrast."""
    flip = torch.rand(len(images), generator=gen) < 0.5
    images = torch.where(flip.view(-1, 1, 1, 1), images.flip(2), images)
    labels = torch.where(flip.view(-1, 1, 1), flip_perm[labels.flip(2)], labels)
    x = images.float()
    gain = 1 + 0.25 * (torch.rand(len(x), 1, 1, 1, generator=gen) - 0.5)
    shift = 30 * (torch.rand(len(x), 1, 1, 1, generator=gen) - 0.5)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * gain + mean + shift).clamp(0, 255)
    return x.to(torch.uint8), labels


def class_weights_for(labels: np.ndarray, power: float) -> np.ndarray:
    """Cross-entropy weight per CIHP label: pixel frequency ** -power (0: unweighted), mean 1 over the
    labels present, 0 for labels absent from the training maps."""
    counts = np.bincount(labels.ravel(), minlength=NUM_CIHP_CLASSES)[:NUM_CIHP_CLASSES].astype(np.float64)
    weights = np.where(counts > 0, (counts / counts.sum() + 1e-6) ** -power, 0.0)
    return weights / weights[counts > 0].mean()


def train(images: np.ndarray, labels: np.ndarray, width: float, steps: int, batch_size: int, learning_rate: float,
          seed: int, progress: bool = True, device: str = "cpu",
          class_weight_power: float = DEFAULTS["class_weight_power"]) -> torch.nn.Module:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)  # batches and augmentation drawn on the CPU: same on any device
    model = build("transfer", width=width).train()
    # The graph reprojection adds one image-wide vector to every pixel's features; starting it at zero
    # lets the per-pixel path learn first (measured: mIoU 0.166 vs 0.073 after 800 steps, demo test split).
    torch.nn.init.zeros_(model.target_graph_2_fea.weight)
    class_weights = torch.as_tensor(class_weights_for(labels, class_weight_power), dtype=torch.float32, device=device)
    # NHWC convolutions on CUDA only: on CPU, torch 2.13's oneDNN channels-last backward hangs or aborts on
    # some instruction sets (AVX2; AVX-512 without AMX), see tests/test_cpu_isa.py.
    memory_format = torch.channels_last if torch.device(device).type == "cuda" else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    images_t, labels_t = torch.as_tensor(images), torch.as_tensor(labels, dtype=torch.long)
    flip_perm = label_flip_permutation()
    running = None
    bar = tqdm(range(steps), desc="demo parser", disable=not progress, mininterval=10)
    for step in bar:
        idx = torch.randint(len(images_t), (batch_size,), generator=gen)
        x, y = augment(images_t[idx], labels_t[idx], gen, flip_perm)
        x, y = rescale(to_network_input(x), y, gen)
        x = x.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        y = y.to(device, non_blocking=True)
        loss = F.cross_entropy(model(x), y, weight=class_weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if step % 100 == 0 or step == steps - 1:
            log.info("step %d/%d loss %.4f lr %.2e", step, steps, running, schedule.get_last_lr()[0])
    return model.cpu().to(memory_format=torch.contiguous_format).eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainers.demo_parser", description=__doc__,
                                     formatter_class=cli.HelpFormatter)
    parser.add_argument("annotations")
    parser.add_argument("ground_truth")
    parser.add_argument("out")
    parser.add_argument("--width", type=float, default=DEFAULTS["width"],
                        help="channel multiplier of the Graphonomy architecture")
    parser.add_argument("--resolution", type=int, default=DEFAULTS["input_resolution"], help="training crop side (px)")
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"], help="optimiser steps")
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"], help="crops per step")
    parser.add_argument("--learning-rate", type=float, default=DEFAULTS["learning_rate"],
                        help="peak AdamW learning rate (warm-up, cosine decay)")
    parser.add_argument("--class-weight-power", type=float, default=DEFAULTS["class_weight_power"],
                        help="cross-entropy weight per label = pixel frequency ** -power (0: unweighted)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the weights, batches and augmentation")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    args = parser.parse_args(argv)
    start = cli.start_logging()
    images, labels = load_training_set(args.annotations, args.ground_truth, args.resolution)
    log.info("training set: %d crops of %d px", len(images), args.resolution)
    device = resolve_device(args.device)
    model = train(images, labels, args.width, args.steps, args.batch_size, args.learning_rate, args.seed,
                  device=device, class_weight_power=args.class_weight_power)
    with atomic_output(args.out) as tmp:
        torch.save(model.state_dict(), tmp)
    log.info("saved %s (width %.3f, %d parameters) in %.1f s", args.out, args.width,
             sum(p.numel() for p in model.parameters()), time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
