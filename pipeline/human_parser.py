"""The human parser's inference engine: a Graphonomy-style network run with multi-scale and flip
inference over person crops (or whole images), labels resampled into the crop frame, and the
keypoint-based post-processing every stage that parses shares (the keypoint box, left/right sides).
The pseudo-label stage (`pipeline.parsing`) and the prior's map stage (`pipeline.prior`) both parse
through `ParserRunner.label_crops`; DSR's label format (cleaning, minimal-clothing flags) lives in
`pipeline.labelsets`.

Inference follows Graphonomy's script: the image as BGR scaled to [-1, 1]; at every scale the image
and its mirror go through the network together; the mirror's logits are flipped back with the
left/right channels swapped (14<->15, 16<->17, 18<->19) and averaged with the image's; each scale's
logits are upsampled (bilinear, corners aligned) to the scale-1 size and summed; the label is the
argmax. Here the network is traced and optimised for inference once per input shape (BatchNorm
folded, fused kernels), images can go through each scale together (`batch_size`; on CPU one at a
time is fastest), on CPU or CUDA, under `torch.inference_mode`; the per-scale resize is the official
one (PIL bilinear on the uint8 image).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.config import resolve_device, schema_defaults
from pipeline.crop import context_crop_matrix, crop_matrix, sampling_grid, transform_points, warp
from pipeline.io import load_image
from pipeline.labelsets import (CIHP, MIN_CLOTHING_LABELS, NUM_CIHP_CLASSES, cihp_flip_permutation, clean_labels,
                                minimal_clothing_valid)
from pipeline.skeleton import JOINTS49_NAMES, NUM_OPENPOSE_JOINTS

STAGE_DEFAULTS = schema_defaults("parsing")  # the config schema: the one place the parser's defaults live

PRESETS = {
    # Graphonomy's inference script
    "graphonomy": {"scales": (1.0, 0.5, 0.75, 1.25, 1.5, 1.75), "flip": True, "single_scale_above": None},
    # DSR's paper setting: four scales with flips; images above 1080 x 1080 at scale 1 alone
    "dsr": {"scales": (0.5, 0.75, 1.0, 1.5), "flip": True, "single_scale_above": 1080},
}


@dataclass
class ParsingSettings:
    """How the parser runs. Defaults: the config schema's `parsing` section where the setting is a config
    key, and DSR's published constants (keypoint box, minimal-clothing size) where it is not."""

    scales: tuple[float, ...] = PRESETS[STAGE_DEFAULTS["preset"]]["scales"]
    flip: bool = PRESETS[STAGE_DEFAULTS["preset"]]["flip"]
    single_scale_above: int | None = PRESETS[STAGE_DEFAULTS["preset"]]["single_scale_above"]  # both sides above: scale 1 only
    mode: str = STAGE_DEFAULTS["mode"]  # "crop": parse the person crop; "full": parse the whole image
    input_resolution: int = STAGE_DEFAULTS["input_resolution"]  # side of the parser's input crop (crop mode)
    context: float = STAGE_DEFAULTS["context"]  # crop mode: the parser's crop is the label crop enlarged by this
    label_resolution: int = schema_defaults("labels")["resolution"]
    keypoint_threshold: float = 0.3  # DSR: keypoints above this confidence make the box
    box_growth_at_224: float = 30.0  # DSR: the box grows by 30 px at a 224 crop
    min_pixels_at_224: int = 60  # DSR: a minimal-clothing label needs more pixels than this at 224
    sides_from_keypoints: bool = STAGE_DEFAULTS["sides_from_keypoints"]  # arm/leg/shoe sides from the nearer keypoint limb
    batch_size: int = STAGE_DEFAULTS["batch_size"]  # images per forward; 1 is fastest on CPU (measured), GPUs like more
    optimize: bool = True  # TorchScript-optimised network in crop mode (see OptimizedNetwork)
    device: str = "cpu"

    @classmethod
    def preset(cls, name: str, **overrides) -> "ParsingSettings":
        if name not in PRESETS:
            raise ValueError(f"unknown parsing preset {name!r}; presets: {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


def flip_logits(logits: torch.Tensor) -> torch.Tensor:
    """Mirror (..., C, H, W) logits horizontally and swap the left/right channels."""
    return logits[..., cihp_flip_permutation()[:NUM_CIHP_CLASSES].tolist(), :, :].flip(-1)


def to_network_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (B, H, W, 3) -> float BGR (B, 3, H, W) in [-1, 1], as Graphonomy was trained."""
    x = images.permute(0, 3, 1, 2).float()[:, [2, 1, 0]]
    return x * (2.0 / 255.0) - 1.0


class OptimizedNetwork:
    """A network traced, frozen and optimised for inference (TorchScript: BatchNorm folded, oneDNN or
    cuDNN fusions and layouts), once per input shape, as crops come in a fixed size. Outputs equal the
    eager network's up to float rounding."""

    def __init__(self, net: torch.nn.Module):
        self.net = net.eval()
        self.compiled: dict = {}
        self.compile_seconds = 0.0

    def parameters(self):
        return self.net.parameters()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), x.device, x.dtype)
        if key not in self.compiled:
            start = time.perf_counter()
            with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated in torch 2.x, still supported
                example = x.clone()
                traced = torch.jit.trace(self.net, example, check_trace=False)
                self.compiled[key] = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
            self.compile_seconds += time.perf_counter() - start
        return self.compiled[key](x)


def resize_like_official(images: np.ndarray, scale: float) -> np.ndarray:
    """Graphonomy's per-scale resize: PIL bilinear (antialiased when shrinking) of the uint8 image to
    (int(W s), int(H s)). images (B, H, W, 3) uint8 -> (B, h, w, 3) uint8."""
    from PIL import Image

    b, h, w, _ = images.shape
    size = (int(w * scale), int(h * scale))
    if size == (w, h):
        return images
    return np.stack([np.asarray(Image.fromarray(im).resize(size, Image.BILINEAR)) for im in images])


def multiscale_logits(net, images, scales, flip: bool = True) -> torch.Tensor:
    """Summed multi-scale (and flip-averaged) logits (B, C, H, W) at the images' size.

    `images`: uint8 RGB (B, H, W, 3), all of one size (numpy or tensor); every image and its mirror go
    through the network together at each scale."""
    images = images.cpu().numpy() if torch.is_tensor(images) else np.asarray(images)
    device = next(net.parameters(), torch.empty(0)).device
    b, h, w, _ = images.shape
    total = None
    for s in scales:
        x = to_network_input(torch.as_tensor(resize_like_official(images, s), device=device))
        batch = torch.cat([x, x.flip(-1)]) if flip else x
        out = net(batch)
        if flip:
            out = (out[:b] + flip_logits(out[b:])) / 2
        if out.shape[-2:] != (h, w):
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=True)
        total = out if total is None else total + out
    return total


def resample_logits(logits: torch.Tensor, matrix: np.ndarray, out_res: int) -> torch.Tensor:
    """Logits (C, H, W) on a pixel grid -> (C, out_res, out_res) on another, `matrix` mapping the input
    grid's pixels to the output's (pixel centres on integers); bilinear, zeros outside."""
    grid = sampling_grid(matrix, (out_res, out_res), tuple(logits.shape[-2:]))
    grid_t = torch.as_tensor(grid, dtype=logits.dtype, device=logits.device)[None]
    return F.grid_sample(logits[None], grid_t, mode="bilinear", padding_mode="zeros", align_corners=True)[0]


def keypoint_box(keypoints: np.ndarray, threshold: float, grow: float) -> np.ndarray | None:
    """(x0, y0, x1, y1) around the keypoints (J, 3) above `threshold`, grown by `grow` pixels; None if none."""
    good = keypoints[:, 2] > threshold
    if not good.any():
        return None
    lo, hi = keypoints[good, :2].min(0), keypoints[good, :2].max(0)
    return np.array([lo[0] - grow, lo[1] - grow, hi[0] + grow, hi[1] + grow])


# Limbs by joint name, for both keypoint layouts `sample_keypoints` returns: OpenPose BODY_25
# (the `openpose` array) and the 24 annotated joints (the `part` array). Left and right: the person's own.
_BODY25 = {name[3:]: i for i, name in enumerate(JOINTS49_NAMES[:NUM_OPENPOSE_JOINTS])}
_PART24 = {name: i for i, name in enumerate(JOINTS49_NAMES[NUM_OPENPOSE_JOINTS:])}
SIDE_LIMBS = {  # label pair: (left chain, right chain), in BODY_25 names and in the 24-joint names
    ("Left-arm", "Right-arm"): ((("LShoulder", "LElbow", "LWrist"), ("RShoulder", "RElbow", "RWrist")),
                                (("Left Shoulder", "Left Elbow", "Left Wrist"), ("Right Shoulder", "Right Elbow", "Right Wrist"))),
    ("Left-leg", "Right-leg"): ((("LHip", "LKnee", "LAnkle"), ("RHip", "RKnee", "RAnkle")),
                                (("Left Hip", "Left Knee", "Left Ankle"), ("Right Hip", "Right Knee", "Right Ankle"))),
    ("Left-shoe", "Right-shoe"): ((("LAnkle", "LHeel", "LBigToe", "LSmallToe"), ("RAnkle", "RHeel", "RBigToe", "RSmallToe")),
                                  (("Left Ankle",), ("Right Ankle",))),
}


def _chain_distance(points: np.ndarray, chain: np.ndarray) -> np.ndarray:
    """Distance of every point (P, 2) to a polyline of joints (K, 2); one joint: to that point."""
    if len(chain) == 1:
        return np.linalg.norm(points - chain[0], axis=1)
    best = np.full(len(points), np.inf)
    for a, b in zip(chain[:-1], chain[1:]):
        ab = b - a
        t = np.clip((points - a) @ ab / max(float(ab @ ab), 1e-12), 0.0, 1.0)
        best = np.minimum(best, np.linalg.norm(points - (a + t[:, None] * ab), axis=1))
    return best


def assign_sides(labels: np.ndarray, keypoints: np.ndarray, threshold: float) -> tuple[np.ndarray, int]:
    """(labels, pixels changed): every arm, leg and shoe pixel takes the side of the nearer keypoint limb.

    A parser tells left from right by which way the person faces, and human parsers often get it
    wrong for people seen from behind; the keypoints name their sides. Pixels keep their part (an arm
    stays an arm); only which side it belongs to is decided by distance to the left and right limb
    (shoulder-elbow-wrist, hip-knee-ankle, ankle-heel-toes) through keypoints above `threshold`, in the
    labels' frame. A pair is left as parsed when either limb has no confident keypoint."""
    if len(keypoints) == NUM_OPENPOSE_JOINTS:
        names, which = _BODY25, 0
    elif len(keypoints) == len(_PART24):
        names, which = _PART24, 1
    else:
        raise ValueError(f"keypoints of {len(keypoints)} joints; expected OpenPose BODY_25 (25) or the 24 annotated joints")
    out = labels.copy()
    for (left_label, right_label), layouts in SIDE_LIMBS.items():
        lo, ro = CIHP[left_label], CIHP[right_label]
        chains = []
        for chain in layouts[which]:
            idx = [names[n] for n in chain]
            chains.append(keypoints[idx][keypoints[idx, 2] > threshold, :2])
        if not len(chains[0]) or not len(chains[1]):
            continue
        ys, xs = np.nonzero((labels == lo) | (labels == ro))
        if not len(ys):
            continue
        points = np.stack([xs, ys], axis=1).astype(np.float64)
        nearer_left = _chain_distance(points, chains[0]) <= _chain_distance(points, chains[1])
        out[ys, xs] = np.where(nearer_left, lo, ro)
    return out, int((out != labels).sum())


def sample_keypoints(ann, i: int, threshold: float) -> np.ndarray:
    """(J, 3) image keypoints used for the box: OpenPose detections, or annotated joints where a
    dataset has no detections."""
    if "openpose" in ann and (ann["openpose"][i][:, 2] > threshold).any():
        return ann["openpose"][i]
    if "part" in ann:
        return ann["part"][i]
    return np.zeros((NUM_OPENPOSE_JOINTS, 3))


class ParserRunner:
    """Runs a parser network over rows of a dataset and stores raw labels, boxes and flags in the crop frame."""

    def __init__(self, net: torch.nn.Module, settings: ParsingSettings):
        net = net.to(settings.device).eval()
        # traced per input shape: worth it for fixed-size crops, not for whole images of every size
        self.net = OptimizedNetwork(net) if settings.optimize and settings.mode == "crop" else net
        self.settings = settings

    def _logits(self, images: list[np.ndarray], scales) -> torch.Tensor:
        with torch.inference_mode():
            return multiscale_logits(self.net, np.stack(images), scales, self.settings.flip)

    def _scales(self, height: int, width: int) -> tuple[float, ...]:
        limit = self.settings.single_scale_above
        if limit is not None and height * width > limit * limit:
            return (1.0,)
        return tuple(self.settings.scales)

    def label_crops(self, jobs):
        """Parse images into label maps of their label crop frames: `jobs` yields (key, image, center,
        scale), image uint8 RGB (H, W, 3) and (center, scale) the person's box in SPIN's convention;
        yields (key, labels (R, R) uint8) at the label resolution, in the jobs' order. Batched per
        `batch_size` in crop mode, one at a time in full mode. The pseudo-label and prior stages both
        parse through here."""
        s = self.settings
        res = s.label_resolution
        pending: list[tuple[object, np.ndarray, np.ndarray]] = []  # (key, parser input, input -> label-crop map)

        def flush():
            if not pending:
                return []
            logits = self._logits([p[1] for p in pending], self._scales(*pending[0][1].shape[:2]))
            done = [(key, resample_logits(lg, matrix, res).argmax(0).to(torch.uint8).cpu().numpy())
                    for (key, _, matrix), lg in zip(pending, logits)]
            pending.clear()
            return done

        for key, image, center, scale in jobs:
            label_crop = crop_matrix(center, scale, res)
            if s.mode == "crop":
                parser_crop = context_crop_matrix(center, scale, s.context, s.input_resolution)
                crop = warp(image, parser_crop, (s.input_resolution, s.input_resolution), nearest=False)
                pending.append((key, crop, label_crop @ np.linalg.inv(parser_crop)))
                if len(pending) == s.batch_size:
                    yield from flush()
            else:  # the whole image, one at a time (sizes differ)
                yield from flush()
                pending.append((key, image, label_crop))
                yield from flush()
        yield from flush()

    def run(self, ann, indices: range) -> dict[str, np.ndarray]:
        s = self.settings
        res = s.label_resolution
        n = len(indices)
        out = {
            "index": np.asarray(indices, dtype=np.int64),
            "labels": np.zeros((n, res, res), np.uint8),
            "box": np.full((n, 4), np.nan),
            "min_clothing_valid": np.zeros((n, len(MIN_CLOTHING_LABELS)), bool),
            "no_keypoints": np.zeros(n, bool),
            "sides_changed": np.zeros(n, np.int64),  # pixels whose left/right the keypoints reassigned
            "skipped": np.zeros(n, bool),
            "reason": np.full(n, "", dtype=object),
        }

        keypoints = {}

        def jobs():
            for j, i in enumerate(indices):
                ann.check_row(i)
                label_crop = crop_matrix(ann["center"][i], ann["scale"][i], res)
                kp = sample_keypoints(ann, i, s.keypoint_threshold).copy()
                kp[:, :2] = transform_points(kp[:, :2], label_crop)
                keypoints[j] = kp
                box = keypoint_box(kp, s.keypoint_threshold, s.box_growth_at_224 * res / 224.0)
                if box is None:
                    out["no_keypoints"][j] = True
                    out["reason"][j] = f"no keypoint with confidence above {s.keypoint_threshold}"
                else:
                    out["box"][j] = box
                image, problem, _ = load_image(ann.image_path(i))
                if image is None:
                    out["skipped"][j] = True
                    out["reason"][j] = problem
                    continue
                yield j, image, ann["center"][i], ann["scale"][i]

        for j, labels in self.label_crops(jobs()):
            if s.sides_from_keypoints:
                labels, out["sides_changed"][j] = assign_sides(labels, keypoints[j], s.keypoint_threshold)
            out["labels"][j] = labels
        for j in range(n):
            if not out["skipped"][j]:
                cleaned = clean_labels(out["labels"][j], None if out["no_keypoints"][j] else out["box"][j])
                out["min_clothing_valid"][j] = minimal_clothing_valid(cleaned, s.min_pixels_at_224 * (res / 224.0) ** 2)
        out["reason"] = out["reason"].astype(str)
        return out


def add_inference_arguments(p) -> None:
    """The parser-inference options, shared by every command line that parses (pseudo-labels, prior);
    defaults from the config schema."""
    d = STAGE_DEFAULTS
    p.add_argument("--variant", choices=("transfer", "universal"), default=d["variant"])
    p.add_argument("--preset", choices=sorted(PRESETS), default=d["preset"])
    p.add_argument("--scales", type=float, nargs="+", help="overrides the preset's scales")
    p.add_argument("--flip", dest="flip", action="store_true", default=None, help="overrides the preset's flip")
    p.add_argument("--no-flip", dest="flip", action="store_false")
    p.add_argument("--mode", choices=("crop", "full"), default=d["mode"])
    p.add_argument("--input-resolution", type=int, default=d["input_resolution"])
    p.add_argument("--context", type=float, default=d["context"])
    p.add_argument("--label-resolution", type=int, default=ParsingSettings.label_resolution)
    p.add_argument("--batch-size", type=int, default=d["batch_size"])
    p.add_argument("--device", default=d["device"])


def settings_from_arguments(args) -> ParsingSettings:
    overrides = {k: v for k, v in (("scales", tuple(args.scales) if args.scales else None), ("flip", args.flip)) if v is not None}
    return ParsingSettings.preset(args.preset, mode=args.mode, input_resolution=args.input_resolution,
                                  context=args.context, label_resolution=args.label_resolution,
                                  batch_size=args.batch_size, device=resolve_device(args.device), **overrides)
