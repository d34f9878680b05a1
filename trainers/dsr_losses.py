"""DSR's semantic-rendering losses (Dwivedi et al., ICCV 2021), vectorised over the batch.

The clothing prior (per face, 20 CIHP labels) is rendered on the predicted body with the soft rasteriser
(models.soft_render), all nine textures of a sample in one pass, and compared with the cleaned parser
labels of the augmented crop:

- DSR-MC (minimal clothing): texture = the sum of the prior columns of the minimal-clothing labels
  (face, arms, shoes) that the sample shows with more than 60 pixels (at 224; scaled with the label
  resolution); target = the union of those labels' pixels; loss = 1 - soft IoU ("niou", the released
  configuration), or "distm": sum(R * EDT(outside of the target)) / ((sum R)^1.5 + 1e-6).
- DSR-C (clothing): 8 textures, the prior summed over each of DSR's merged classes (background, head,
  upper clothes, pants, left/right arm, left/right leg); per-sample class weights by the official
  class-ratio rule (with m the smallest class count >= 60: w_c = m / n_c for n_c > 60, else 0); loss = the
  weighted mean cross-entropy.

What differs from the official code, each an option (default first):
- `c_loss`: "official" feeds the rendered probabilities to the cross-entropy as logits (bounded in
  [0, 1], so every pixel costs at least about 1.27); "log_prob" normalises them over the 8 classes and
  takes the log-probability of the target class.
- `iou`: "image" is the soft IoU over the whole image (the paper's); "rows" is what the official code
  computes (its input has no batch axis, so IoU is taken per image row and averaged over the rows,
  rows without target contributing 0).
- `invalid_samples`: "exclude" averages each loss over the samples it applies to (MC: with a valid
  minimal-clothing label; C: with a positive class weight); "average_zeros" is the official rule: both
  losses are computed only for samples with a valid minimal-clothing label and the others count as 0
  in the mean over the batch.
- `outside_box`: "ignore" leaves the pixels outside DSR's keypoint box (255 in our labels) out of
  targets, counts and losses; "background" makes them background, as the official code does.
- `flip_swaps_sides`: True swaps left and right labels on a flipped sample (our loader does, like the
  keypoints and the pose); False reproduces the official loader, which mirrors the label image only.
A non-finite loss of any included sample raises, naming the samples; nothing is silently zeroed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.soft_render import SoftRasterSettings, project_vertices, soft_rasterize
from pipeline.config import schema_defaults
from pipeline.labelsets import (CIHP_LABELS, DSR_MERGED_LABELS, IGNORE, MIN_CLOTHING_LABELS, cihp_flip_permutation,
                                dsr_merge_lut)

C_LOSSES = ("official", "log_prob")
IOU_MODES = ("image", "rows")
MC_LOSSES = ("niou", "distm")
INVALID_RULES = ("exclude", "average_zeros")
OUTSIDE_BOX = ("ignore", "background")


_DEFAULTS = schema_defaults("dsr_losses")  # the config schema's dsr_losses section: the one place of the defaults


@dataclass(frozen=True)
class DSRLossSettings:
    sigma: float = _DEFAULTS["sigma"]  # NDC^2, released configuration
    gamma: float = _DEFAULTS["gamma"]  # released configuration
    mc_loss: str = _DEFAULTS["mc_loss"]
    iou: str = _DEFAULTS["iou"]
    c_loss: str = _DEFAULTS["c_loss"]
    invalid_samples: str = _DEFAULTS["invalid_samples"]
    outside_box: str = _DEFAULTS["outside_box"]
    flip_swaps_sides: bool = _DEFAULTS["flip_swaps_sides"]
    min_pixels_at_224: int = _DEFAULTS["min_pixels_at_224"]
    compile: bool = _DEFAULTS["compile"]  # torch.compile the rasteriser's per-pair kernels (models.soft_render)
    max_pairs: int = 1_000_000  # soft rasteriser chunk size

    def __post_init__(self):
        for name, allowed in (("mc_loss", MC_LOSSES), ("iou", IOU_MODES), ("c_loss", C_LOSSES),
                              ("invalid_samples", INVALID_RULES), ("outside_box", OUTSIDE_BOX)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"DSR loss setting {name} must be one of {allowed}, got {getattr(self, name)!r}")


@dataclass
class DSRLosses:
    mc: torch.Tensor  # scalar
    c: torch.Tensor  # scalar
    mc_per_sample: torch.Tensor  # (B,), 0 where not included
    c_per_sample: torch.Tensor  # (B,)
    mc_included: torch.Tensor  # (B,) bool
    c_included: torch.Tensor  # (B,) bool
    render: torch.Tensor  # (B, 9, O, O): the minimal-clothing render, then the 8 class renders


# ---------------------------------------------------------------------------------------------------
# The prior on faces


PRIOR_SOURCE = ("the workflow's clothing prior (results/prior/prior.npz, face_prior) or DSR's released "
                "dsr_data/semantic_prior.npy (13776 x 20, per face)")


def load_face_prior(path: str | Path, num_faces: int | None = None) -> np.ndarray:
    """(F, 20) per-face CIHP label distribution: from our prior file (face_prior, the per-vertex prior
    averaged over each face's corners) or DSR's semantic_prior.npy, read without pickle."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"clothing prior not found: {path}; expected {PRIOR_SOURCE}")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if "face_prior" not in z.files:
                    raise ValueError(f"{path}: no face_prior in the prior file (has {z.files}); expected {PRIOR_SOURCE}")
                prior = z["face_prior"]
        else:
            prior = np.squeeze(np.load(path, allow_pickle=False))
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: not a readable prior file ({e}); expected {PRIOR_SOURCE}") from None
    if prior.ndim != 2 or prior.shape[1] != len(CIHP_LABELS):
        raise ValueError(f"{path}: the face prior has shape {prior.shape}, expected (faces, {len(CIHP_LABELS)})")
    if num_faces is not None and prior.shape[0] != num_faces:
        raise ValueError(f"{path}: the face prior has {prior.shape[0]} rows but the body model has {num_faces} "
                         "faces: the prior was built for another body model")
    if not np.isfinite(prior).all():
        raise ValueError(f"{path}: the face prior holds non-finite values")
    return prior.astype(np.float32)


def merge_matrix() -> np.ndarray:
    """(20, 8) 0/1: CIHP label -> DSR merged class."""
    lut = dsr_merge_lut()
    M = np.zeros((len(CIHP_LABELS), len(DSR_MERGED_LABELS)), np.float32)
    M[np.arange(len(CIHP_LABELS)), lut[: len(CIHP_LABELS)]] = 1.0
    return M


# ---------------------------------------------------------------------------------------------------
# Targets


def class_ratio_weights(counts: torch.Tensor, min_pixels: float) -> torch.Tensor:
    """DSR's per-sample class weights from merged class counts (B, 8): m = the smallest count >= min_pixels,
    w_c = m / n_c where n_c > min_pixels, else 0 (all 0 when no class reaches min_pixels)."""
    counts = counts.to(torch.float64)
    big = torch.where(counts >= min_pixels, counts, torch.full_like(counts, float("inf")))
    m = big.amin(dim=1, keepdim=True)
    w = torch.where((counts > min_pixels) & torch.isfinite(m), m / counts.clamp(min=1), torch.zeros_like(counts))
    return w.float()


def distance_to_mask(mask: torch.Tensor, chunk: int = 8) -> torch.Tensor:
    """Exact Euclidean distance (pixels) from every pixel to the nearest True pixel of mask (B, H, W);
    0 on the mask (scipy.ndimage.distance_transform_edt(~mask)). Separable: squared distances along rows,
    then the minimum over rows of (row distance^2 + column term), batched on the mask's device."""
    B, H, W = mask.shape
    big = float(H * H + W * W)
    idx_w = torch.arange(W, device=mask.device, dtype=torch.float32)
    idx_h = torch.arange(H, device=mask.device, dtype=torch.float32)
    out = []
    for lo in range(0, B, chunk):
        m = mask[lo:lo + chunk]
        # g[b, y, x] = min over mask columns x' in row y of (x - x')^2
        cand = torch.where(m[:, :, None, :], (idx_w[None, :] - idx_w[:, None]).square()[None, None], big)
        g = cand.amin(dim=-1)  # (b, H, W)
        # d2[b, y, x] = min over rows y' of g[b, y', x] + (y - y')^2
        d2 = (g[:, None, :, :] + (idx_h[:, None] - idx_h[None, :]).square()[None, :, :, None]).amin(dim=2)
        out.append(d2.sqrt())
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------------
# The losses


def dsr_losses(vertices: torch.Tensor, cam_t: torch.Tensor, faces: torch.Tensor, face_prior: torch.Tensor,
               parser_labels: torch.Tensor, has_parser: torch.Tensor, settings: DSRLossSettings = DSRLossSettings(),
               flipped: torch.Tensor | None = None) -> DSRLosses:
    """vertices (B, V, 3) body frame, cam_t (B, 3) (models.smpl_head), faces (F, 3), face_prior (F, 20),
    parser_labels (B, O, O) uint8 CIHP (255 ignored) of the augmented crops, has_parser (B,) bool,
    flipped (B,) bool (needed only for flip_swaps_sides=False) -> DSRLosses."""
    s = settings
    B, O = parser_labels.shape[0], parser_labels.shape[-1]
    device = vertices.device
    labels = parser_labels.to(device=device, dtype=torch.long)
    if not s.flip_swaps_sides and flipped is not None and bool(flipped.any()):
        # the official loader mirrors the label image without swapping left and right: undo our swap
        lut = torch.as_tensor(cihp_flip_permutation(), device=device, dtype=torch.long)  # (256,)
        labels = torch.where(flipped.to(device)[:, None, None], lut[labels], labels)
    if s.outside_box == "background":
        labels = torch.where(labels == IGNORE, torch.zeros_like(labels), labels)
    known = labels != IGNORE  # (B, O, O)
    has_parser = has_parser.to(device=device, dtype=torch.bool)
    min_pixels = s.min_pixels_at_224 * (O / 224.0) ** 2

    # minimal clothing: the labels present, the target mask, the per-sample texture
    mc_ids = torch.as_tensor(MIN_CLOTHING_LABELS, device=device)
    mc_counts = (labels[:, None] == mc_ids[None, :, None, None]).sum(dim=(2, 3))  # (B, 5)
    mc_valid = (mc_counts > min_pixels) & has_parser[:, None]  # (B, 5)
    target_mc = ((labels[:, None] == mc_ids[None, :, None, None]) & mc_valid[:, :, None, None]).any(1).float()
    prior = face_prior.to(device=device, dtype=vertices.dtype)
    mc_texture = prior[:, mc_ids] @ mc_valid.to(prior.dtype).T  # (F, B)
    class_texture = prior @ torch.as_tensor(merge_matrix(), device=device, dtype=prior.dtype)  # (F, 8)
    textures = torch.cat([mc_texture.T[:, :, None], class_texture.expand(B, -1, -1)], dim=-1)  # (B, F, 9)

    bad = has_parser & ~(torch.isfinite(vertices).all(dim=(1, 2)) & torch.isfinite(cam_t).all(dim=1))
    if bool(bad.any()):  # non-finite geometry would render as empty, i.e. as a silent zero
        raise FloatingPointError(f"DSR losses: non-finite predicted vertices or camera for batch samples "
                                 f"{bad.nonzero()[:, 0].tolist()}")
    raster = SoftRasterSettings(image_size=O, sigma=s.sigma, gamma=s.gamma, max_pairs=s.max_pairs, compile=s.compile)
    screen = project_vertices(vertices, cam_t, O)
    render, _ = soft_rasterize(screen, faces, textures, raster)  # (B, 9, O, O)

    # DSR-MC
    mc_render = render[:, 0]
    if s.mc_loss == "niou":
        p, t, k = mc_render, target_mc, known.float()
        inter, union = p * t * k, (p + t - p * t) * k
        if s.iou == "image":
            mc = 1.0 - inter.sum(dim=(1, 2)) / (union.sum(dim=(1, 2)) + 1e-6)
        else:
            mc = 1.0 - (inter.sum(dim=2) / (union.sum(dim=2) + 1e-6)).mean(dim=1)
    else:
        dist = distance_to_mask(target_mc > 0.5).to(mc_render.dtype)
        r = mc_render * known
        mc = (r * dist).sum(dim=(1, 2)) / (r.sum(dim=(1, 2)).pow(1.5) + 1e-6)

    # DSR-C
    merged = torch.as_tensor(dsr_merge_lut(), device=device, dtype=torch.long)[labels]  # (B, O, O), 255 kept
    known_c = merged != IGNORE
    target_c = torch.where(known_c, merged, torch.zeros_like(merged))
    counts = F.one_hot(target_c, len(DSR_MERGED_LABELS)).mul_(known_c[..., None]).sum(dim=(1, 2))  # (B, 8)
    weights = class_ratio_weights(counts, min_pixels).to(render.dtype)  # (B, 8)
    logits = render[:, 1:]
    if s.c_loss == "official":
        nll = F.cross_entropy(logits, target_c, reduction="none")  # (B, O, O)
    else:
        prob = logits.clamp(min=1e-8)
        nll = -(prob / prob.sum(1, keepdim=True)).log().gather(1, target_c[:, None])[:, 0]
    pixel_w = weights.gather(1, target_c.flatten(1)).reshape_as(nll) * known_c
    c_norm = pixel_w.sum(dim=(1, 2))
    c = (pixel_w * nll).sum(dim=(1, 2)) / c_norm.clamp(min=1e-12)

    mc_ok = mc_valid.any(dim=1)
    if s.invalid_samples == "exclude":
        mc_included, c_included = mc_ok, has_parser & (c_norm > 0)
    else:  # official: both only where a minimal-clothing label is valid, zeros averaged in
        mc_included = c_included = mc_ok
    zero = torch.zeros((), dtype=render.dtype, device=device)
    mc_per_sample = torch.where(mc_included, mc, zero)
    c_per_sample = torch.where(c_included, c, zero)
    for name, values, included in (("DSR-MC", mc, mc_included), ("DSR-C", c, c_included)):
        bad = included & ~torch.isfinite(values)
        if bool(bad.any()):
            raise FloatingPointError(f"{name} loss is not finite for batch samples {bad.nonzero()[:, 0].tolist()} "
                                     "(check their predicted cameras and vertices)")
    if s.invalid_samples == "exclude":
        mc_loss = mc_per_sample.sum() / mc_included.sum().clamp(min=1)
        c_loss = c_per_sample.sum() / c_included.sum().clamp(min=1)
    else:
        mc_loss, c_loss = mc_per_sample.mean(), c_per_sample.mean()
    return DSRLosses(mc=mc_loss, c=c_loss, mc_per_sample=mc_per_sample, c_per_sample=c_per_sample,
                     mc_included=mc_included, c_included=c_included, render=render)
