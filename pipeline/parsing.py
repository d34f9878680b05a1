"""Human-parsing pseudo-labels for DSR: multi-scale + flip inference of a Graphonomy-style parser,
stored in the crop frame, with DSR's keypoint-based cleaning.

Inference follows Graphonomy's script: the image as BGR scaled to [-1, 1]; at every scale the image
and its mirror go through the network together; the mirror's logits are flipped back with the
left/right channels swapped (14<->15, 16<->17, 18<->19) and averaged with the image's; each scale's
logits are upsampled (bilinear, corners aligned) to the scale-1 size and summed; the label is the
argmax. Here the network is traced and optimised for inference once per input shape (BatchNorm
folded, fused kernels), images can go through each scale together (`batch_size`; on CPU one at a
time is fastest), on CPU or CUDA, under `torch.inference_mode`; the per-scale resize is the official
one (PIL bilinear on the uint8 image).

Cleaning (DSR): the box around the OpenPose keypoints with confidence > 0.3, grown by 30 pixels at a
224 crop (scaled with the resolution); pixels outside it become 255 (ignored). A minimal-clothing
label (left/right arm, left/right shoe, face) with at most 60 pixels (at 224) is invalid for the
sample. Raw labels, the box and the flags are stored, so the cleaned map and DSR's clothing /
minimal-clothing maps are derived when the data is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.config import resolve_device
from pipeline.crop import crop_matrix, sampling_grid, transform_points
from pipeline.labelsets import CIHP, CIHP_FLIP_PAIRS, CIHP_IGNORE, NUM_CIHP_CLASSES
from pipeline.skeleton import JOINTS49_NAMES, NUM_OPENPOSE_JOINTS

MIN_CLOTHING_LABELS = (CIHP["Face"], CIHP["Left-arm"], CIHP["Right-arm"], CIHP["Left-shoe"], CIHP["Right-shoe"])

PRESETS = {
    # Graphonomy's inference script
    "graphonomy": {"scales": (1.0, 0.5, 0.75, 1.25, 1.5, 1.75), "flip": True, "single_scale_above": None},
    # DSR's paper setting: four scales with flips; images above 1080 x 1080 at scale 1 alone
    "dsr": {"scales": (0.5, 0.75, 1.0, 1.5), "flip": True, "single_scale_above": 1080},
}


@dataclass
class ParsingSettings:
    scales: tuple[float, ...] = PRESETS["dsr"]["scales"]
    flip: bool = True
    single_scale_above: int | None = 1080  # images with both sides above this run at scale 1 only
    mode: str = "crop"  # "crop": parse the person crop; "full": parse the whole image
    input_resolution: int = 512  # side of the parser's input crop (crop mode)
    context: float = 1.0  # crop mode: the parser's crop is the label crop enlarged by this factor
    label_resolution: int = 224
    keypoint_threshold: float = 0.3
    box_growth_at_224: float = 30.0
    min_pixels_at_224: int = 60
    sides_from_keypoints: bool = True  # left/right of arm, leg and shoe pixels from the nearer keypoint limb
    batch_size: int = 1  # images per forward; 1 is fastest on CPU (measured), GPUs like more
    optimize: bool = True  # TorchScript-optimised network in crop mode (see OptimizedNetwork)
    device: str = "cpu"
    extra: dict = field(default_factory=dict)

    @classmethod
    def preset(cls, name: str, **overrides) -> "ParsingSettings":
        if name not in PRESETS:
            raise ValueError(f"unknown parsing preset {name!r}; presets: {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


def flip_permutation() -> list[int]:
    perm = list(range(NUM_CIHP_CLASSES))
    for a, b in CIHP_FLIP_PAIRS:
        perm[a], perm[b] = b, a
    return perm


def flip_logits(logits: torch.Tensor) -> torch.Tensor:
    """Mirror (..., C, H, W) logits horizontally and swap the left/right channels."""
    return logits[..., flip_permutation(), :, :].flip(-1)


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
            import time

            import warnings

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


def minimal_clothing_valid(cleaned: np.ndarray, min_pixels: int) -> np.ndarray:
    """(5,) bool per MIN_CLOTHING_LABELS: present with more than `min_pixels` pixels."""
    return np.array([(cleaned == label).sum() > min_pixels for label in MIN_CLOTHING_LABELS])


def sample_keypoints(ann, i: int, threshold: float) -> np.ndarray:
    """(J, 3) image keypoints used for the box: OpenPose detections, or annotated joints where a
    dataset has no detections."""
    if "openpose" in ann and (ann["openpose"][i][:, 2] > threshold).any():
        return ann["openpose"][i]
    if "part" in ann:
        return ann["part"][i]
    return np.zeros((NUM_OPENPOSE_JOINTS, 3))


PARSING_FLAGS = ("skipped", "no_keypoints")


def load_image(path) -> tuple[np.ndarray | None, str, bytes | None]:
    """(RGB uint8 image or None, the reason when None, the file's bytes or None): the file is read once,
    so callers that also hash it do not read it again."""
    import io
    from pathlib import Path

    from PIL import Image, UnidentifiedImageError

    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None, f"missing image file {path}", None
    except OSError as e:
        return None, f"corrupt image {path}: {e}", None
    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB")), "", data
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        return None, f"corrupt image {path}: {e}", data


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
        from pipeline.crop import warp

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
                parser_crop = crop_matrix(center, scale * s.context, s.input_resolution)
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


def cleaned_from_shard(labels: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Cleaned maps (N, R, R) from stored raw labels and boxes (NaN box: nothing is kept)."""
    return np.stack([clean_labels(l, None if np.isnan(b).any() else b) for l, b in zip(labels, boxes)])


def parsing_miou(predicted: np.ndarray, truth: np.ndarray, labels: list[int]) -> dict:
    """mIoU over `labels` between predicted and true maps; pixels marked 255 in `predicted` are left out."""
    keep = predicted != CIHP_IGNORE
    per_label = {}
    for label in labels:
        p, t = (predicted == label) & keep, (truth == label) & keep
        union = (p | t).sum()
        if union:
            per_label[label] = float((p & t).sum() / union)
    return {"miou": float(np.mean(list(per_label.values()))), "per_label_iou": per_label,
            "pixel_accuracy": float((predicted[keep] == truth[keep]).mean())}


def write_shard(weights: str, variant: str, annotations_file: str, images_root: str, dataset: str, indices: range,
                out: str, settings: ParsingSettings) -> dict:
    from models.graphonomy import from_pretrained
    from pipeline.datasets import load_annotations
    from pipeline.io import save_npz

    ann = load_annotations(annotations_file, image_root=images_root, name=dataset)
    ann.require_rows(indices)
    net = from_pretrained(weights, variant=variant)
    result = ParserRunner(net, settings).run(ann, indices)
    result["imgname"] = ann["imgname"][indices.start:indices.stop]
    result["resolution"] = np.array(settings.label_resolution)
    save_npz(out, result)
    return {"rows": len(indices), **{f: int(result[f].sum()) for f in PARSING_FLAGS},
            "sides_changed_pixels": int(result["sides_changed"].sum())}


def write_index(shard_files: list[str], out: str) -> dict:
    from pipeline.shards import write_index as write_shard_index

    return write_shard_index(shard_files, out, PARSING_FLAGS)


def check_against_ground_truth(pairs: list[tuple[str, str]], out: str, goal_miou: float, min_miou: float | None = None) -> dict:
    """mIoU of the cleaned pseudo-labels against the demo world's CIHP ground truth, over the labels
    present in the ground truth (pixels outside the keypoint box are left out)."""
    import json
    from pathlib import Path

    from pipeline.io import atomic_output
    from pipeline.labelsets import CIHP_LABELS
    from pipeline.shards import load_shards

    predicted, truth, per_dataset = [], [], {}
    for index_file, gt_file in pairs:
        shards = load_shards(index_file, ("index", "labels", "box", "skipped"))
        use = ~shards["skipped"]
        cleaned = cleaned_from_shard(shards["labels"][use], shards["box"][use])
        with np.load(gt_file, allow_pickle=False) as z:
            gt = z["crop_cihp"][shards["index"][use]]
        predicted.append(cleaned)
        truth.append(gt)
        present = sorted(int(v) for v in np.unique(gt))
        per_dataset[Path(index_file).parent.name] = {"samples": int(use.sum()), **{k: v for k, v in parsing_miou(cleaned, gt, present).items() if k != "per_label_iou"}}
    predicted, truth = np.concatenate(predicted), np.concatenate(truth)
    present = sorted(int(v) for v in np.unique(truth))
    metrics = parsing_miou(predicted, truth, present)
    result = {
        "miou": metrics["miou"],
        "pixel_accuracy": metrics["pixel_accuracy"],
        "per_label_iou": {CIHP_LABELS[k]: v for k, v in metrics["per_label_iou"].items()},
        "labels": [CIHP_LABELS[k] for k in present],
        "samples": int(len(predicted)),
        "goal_miou": goal_miou,
        "meets_goal": bool(metrics["miou"] >= goal_miou),
        "min_miou": min_miou,
        "per_dataset": per_dataset,
    }
    with atomic_output(out) as tmp:
        Path(tmp).write_text(json.dumps(result, indent=1))
    if min_miou is not None and result["miou"] < min_miou:
        raise RuntimeError(f"clothing pseudo-labels reach mIoU {result['miou']:.3f} against the ground truth, below {min_miou} ({out})")
    return result


def parsing_figure(items: list[tuple[str, ...]], out: str, per_dataset: int = 4, check_file: str | None = None) -> None:
    """Rows of: the crop, raw labels, cleaned labels and, where an item names a ground-truth file
    (ANNOTATIONS, IMAGES_ROOT, INDEX_JSON[, GT_NPZ with `crop_cihp`]), the true clothing map."""
    import json
    from pathlib import Path

    from pipeline.datasets import load_annotations
    from pipeline.figures import save_grid
    from pipeline.labelsets import palette
    from pipeline.shards import load_shards

    colours = np.concatenate([palette(NUM_CIHP_CLASSES), np.zeros((256 - NUM_CIHP_CLASSES, 3), np.uint8)])
    colours[CIHP_IGNORE] = (128, 128, 128)
    rows = []
    for annotations_file, images_root, index_file, *gt_file in items:
        ann = load_annotations(annotations_file, image_root=images_root)
        shards = load_shards(index_file, ("index", "labels", "box", "skipped"))
        truth = None
        if gt_file:
            with np.load(gt_file[0], allow_pickle=False) as z:
                truth = z["crop_cihp"]
        for k in np.flatnonzero(~shards["skipped"])[:per_dataset]:
            i = int(shards["index"][k])
            res = shards["labels"].shape[-1]
            crop = ann.crop(i, res)
            raw = shards["labels"][k]
            cleaned = clean_labels(raw, None if np.isnan(shards["box"][k]).any() else shards["box"][k])
            panels = [crop, colours[raw], colours[cleaned]]
            if truth is not None:
                if truth.shape[-1] != res:
                    raise ValueError(f"{gt_file[0]}: ground truth at {truth.shape[-1]} px, labels of {index_file} at {res} px")
                panels.append(colours[truth[i]])
            rows.append(np.concatenate(panels, axis=1))
    banner = None
    if check_file:
        check = json.loads(Path(check_file).read_text())
        banner = (f"crop | raw | cleaned pseudo-labels | ground truth: mIoU {check['miou']:.3f} (goal {check['goal_miou']}), pixel "
                  f"accuracy {100 * check['pixel_accuracy']:.1f}% over {check['samples']} samples")
    save_grid(rows, out, banner=banner)


def add_inference_arguments(p) -> None:
    """The parser-inference options, shared by every command line that parses (pseudo-labels, prior)."""
    p.add_argument("--variant", choices=("transfer", "universal"), default="transfer")
    p.add_argument("--preset", choices=sorted(PRESETS), default="dsr")
    p.add_argument("--scales", type=float, nargs="+")
    p.add_argument("--flip", dest="flip", action="store_true", default=None)
    p.add_argument("--no-flip", dest="flip", action="store_false")
    p.add_argument("--mode", choices=("crop", "full"), default="crop")
    p.add_argument("--input-resolution", type=int, default=512)
    p.add_argument("--context", type=float, default=1.0)
    p.add_argument("--label-resolution", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--device", default="auto")


def settings_from_arguments(args) -> ParsingSettings:
    overrides = {k: v for k, v in (("scales", tuple(args.scales) if args.scales else None), ("flip", args.flip)) if v is not None}
    return ParsingSettings.preset(args.preset, mode=args.mode, input_resolution=args.input_resolution,
                                  context=args.context, label_resolution=args.label_resolution,
                                  batch_size=args.batch_size, device=resolve_device(args.device), **overrides)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import logging
    import time

    parser = argparse.ArgumentParser(prog="python -m pipeline.parsing", description="Graphonomy clothing pseudo-labels")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("shard", help="parse rows START..STOP-1 of a dataset")
    p.add_argument("weights")
    p.add_argument("annotations")
    p.add_argument("out")
    p.add_argument("--dataset", required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--indices", type=int, nargs=2, required=True, metavar=("START", "STOP"))
    add_inference_arguments(p)
    p.add_argument("--sides", choices=("keypoints", "parser"), default="keypoints",
                   help="left/right of arm, leg and shoe pixels: from the nearer keypoint limb (default) or as parsed")
    p = sub.add_parser("index", help="index a dataset's shards, with the manifest of skipped images")
    p.add_argument("out")
    p.add_argument("shards", nargs="+")
    p = sub.add_parser("check", help="compare demo pseudo-labels with the world's ground truth")
    p.add_argument("out")
    p.add_argument("pairs", nargs="+", help="INDEX_JSON:GT_NPZ")
    p.add_argument("--goal-miou", type=float, default=0.5)
    p.add_argument("--min-miou", type=float, help="fail below this mIoU (default: report only)")
    p = sub.add_parser("figure", help="crops with raw and cleaned labels (and the ground truth when given)")
    p.add_argument("out")
    p.add_argument("items", nargs="+", help="ANNOTATIONS:IMAGES_ROOT:INDEX_JSON[:GT_NPZ]")
    p.add_argument("--check")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("pipeline.parsing")
    start = time.perf_counter()
    if args.command == "shard":
        settings = settings_from_arguments(args)
        device = settings.device
        settings = replace(settings, sides_from_keypoints=args.sides == "keypoints")
        counts = write_shard(args.weights, args.variant, args.annotations, args.images, args.dataset,
                             range(*args.indices), args.out, settings)
        log.info("%s rows %d-%d on %s, scales %s flip %s: %s, %.2f images/s", args.dataset, args.indices[0], args.indices[1] - 1,
                 device, settings.scales, settings.flip, counts, counts["rows"] / (time.perf_counter() - start))
    elif args.command == "index":
        log.info("%s", write_index(args.shards, args.out))
    elif args.command == "check":
        result = check_against_ground_truth([tuple(p.split(":", 1)) for p in args.pairs], args.out, args.goal_miou, args.min_miou)
        log.info("mIoU %.4f (goal %.2f: %s), pixel accuracy %.4f over %d samples", result["miou"], args.goal_miou,
                 "met" if result["meets_goal"] else "NOT met", result["pixel_accuracy"], result["samples"])
    elif args.command == "figure":
        parsing_figure([tuple(i.split(":", 3)) for i in args.items], args.out, check_file=args.check)
    log.info("done in %.1f s", time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
