"""The regressors' training losses (SPIN, PARE, DSR), pure functions over a batch. Every term is returned
by name so that the training loop can log it; `regressor_losses` weighs and sums them.

Conventions of the batch (trainers.packed): keypoints (B, 49, 3) in normalised crop coordinates with
confidence; joints3d (B, 24, 4) the 24 ground-truth joints of JOINTS49 with confidence; pose (B, 72)
axis-angle; betas (B, 10); part_labels (B, O, O) uint8, 255 unknown. Predictions: models.smpl_head's
RegressorOutput (joints2d (B, 49, 2), joints (B, 49, 3)) and Prediction (rotmat, betas, cam, part logits).

Terms where no row of the batch has the annotation are exact zeros connected to the graph, so that a
batch without 3D data or without SMPL parameters trains the rest; they are logged as such.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.rotations import axis_angle_to_rotmat
from models.smpl_head import Prediction, RegressorOutput
from pipeline.labelsets import IGNORE
from pipeline.skeleton import NUM_OPENPOSE_JOINTS

# pelvis of the 24 ground-truth joints (SPIN's order: right hip 2, left hip 3)
_RIGHT_HIP, _LEFT_HIP = 2, 3


@dataclass(frozen=True)
class LossWeights:
    """The papers' weights (SPIN / PARE / DSR released configurations); `total` multiplies the sum."""
    keypoints: float = 5.0
    keypoints_3d: float = 5.0
    pose: float = 1.0
    betas: float = 0.001
    camera: float = 1.0
    part: float = 1.0  # PARE's part segmentation (stage 1); 0 switches it off
    dsr_mc: float = 0.1
    dsr_c: float = 0.1
    openpose: float = 0.0  # confidence multiplier of the 25 OpenPose keypoints
    ground_truth: float = 1.0  # of the 24 ground-truth keypoints
    total: float = 60.0


def _zero(like: torch.Tensor) -> torch.Tensor:
    """An exact zero that keeps the graph (its gradient is zero everywhere)."""
    return like.sum() * 0.0


def keypoint_2d_loss(pred: torch.Tensor, gt: torch.Tensor, openpose_weight: float, gt_weight: float) -> torch.Tensor:
    """Confidence-weighted squared error of the projected joints (B, 49, 2) against keypoints (B, 49, 3),
    the OpenPose and ground-truth halves weighted apart; mean over every coordinate (SPIN)."""
    conf = gt[..., 2:].clone()
    conf[:, :NUM_OPENPOSE_JOINTS] *= openpose_weight
    conf[:, NUM_OPENPOSE_JOINTS:] *= gt_weight
    return (conf * (pred - gt[..., :2]).square()).mean()


def keypoint_3d_loss(pred_joints49: torch.Tensor, gt: torch.Tensor, has: torch.Tensor) -> torch.Tensor:
    """Pelvis-centred, confidence-weighted squared error of the 24 ground-truth joints (the last 24 of
    JOINTS49) on the rows that have 3D joints (B, 24, 4)."""
    rows = has.bool()
    if not bool(rows.any()):
        return _zero(pred_joints49)
    pred = pred_joints49[rows, NUM_OPENPOSE_JOINTS:]
    target, conf = gt[rows, :, :3], gt[rows, :, 3:]
    pred = pred - 0.5 * (pred[:, _RIGHT_HIP] + pred[:, _LEFT_HIP])[:, None]
    target = target - 0.5 * (target[:, _RIGHT_HIP] + target[:, _LEFT_HIP])[:, None]
    return (conf * (pred - target).square()).mean()


def smpl_parameter_losses(pred_rotmat: torch.Tensor, pred_betas: torch.Tensor, gt_pose: torch.Tensor,
                          gt_betas: torch.Tensor, has_smpl: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean squared error of the rotation matrices (B, 24, 3, 3) against the ground-truth axis-angle pose
    (B, 72), and of the betas, on the rows with SMPL parameters."""
    rows = has_smpl.bool()
    if not bool(rows.any()):
        return _zero(pred_rotmat), _zero(pred_betas)
    gt_rotmat = axis_angle_to_rotmat(gt_pose[rows].reshape(-1, 24, 3).to(pred_rotmat.dtype))
    return F.mse_loss(pred_rotmat[rows], gt_rotmat), F.mse_loss(pred_betas[rows], gt_betas[rows].to(pred_betas.dtype))


def camera_prior(cam: torch.Tensor) -> torch.Tensor:
    """SPIN's prior against a negative or vanishing scale: mean of exp(-10 s)^2."""
    return torch.exp(-10.0 * cam[:, 0]).square().mean()


def part_segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, has_parts: torch.Tensor) -> torch.Tensor:
    """PARE's part loss: the part logits (B, 25, h, w) upsampled bilinearly (corners aligned) to the
    label size, cross-entropy against the part labels (B, H, W) (0 background, 1..24 parts, 255 ignored),
    on the rows that have part labels."""
    rows = has_parts.bool()
    if not bool(rows.any()):
        return _zero(logits)
    target = labels[rows].long()
    scores = F.interpolate(logits[rows], size=target.shape[-2:], mode="bilinear", align_corners=True)
    if bool((target == IGNORE).all()):
        return _zero(logits)
    return F.cross_entropy(scores, target, ignore_index=IGNORE)


def regressor_losses(pred: Prediction, out: RegressorOutput, batch: dict, weights: LossWeights = LossWeights(),
                     dsr: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(total, {term: weighted value}) for one batch. `dsr`: the DSR-MC and DSR-C losses when they are on
    (trainers.dsr_losses). Raises FloatingPointError naming the terms when the total is not finite."""
    w = weights
    pose, betas = smpl_parameter_losses(pred.rotmat, pred.betas, batch["pose"], batch["betas"], batch["has_smpl"])
    terms = {
        "keypoints": w.keypoints * keypoint_2d_loss(out.joints2d, batch["keypoints"].to(out.joints2d.dtype),
                                                    w.openpose, w.ground_truth),
        "keypoints_3d": w.keypoints_3d * keypoint_3d_loss(out.joints, batch["joints3d"].to(out.joints.dtype),
                                                          batch["has_joints3d"]),
        "pose": w.pose * pose,
        "betas": w.betas * betas,
        "camera": w.camera * camera_prior(pred.cam),
    }
    if pred.part_logits is not None and w.part > 0:
        terms["part"] = w.part * part_segmentation_loss(pred.part_logits, batch["part_labels"], batch["has_parts"])
    if dsr is not None:
        terms["dsr_mc"] = w.dsr_mc * dsr[0]
        terms["dsr_c"] = w.dsr_c * dsr[1]
    total = w.total * sum(terms.values())
    if not bool(torch.isfinite(total)):
        bad = [name for name, value in terms.items() if not bool(torch.isfinite(value))]
        raise FloatingPointError(f"training loss is not finite: terms {bad or list(terms)}")
    return total, terms
