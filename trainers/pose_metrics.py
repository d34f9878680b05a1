"""3D pose and shape errors of the field's protocols (SPIN, PARE, DSR), batched torch.

Protocol: the H36M-17 joints regressed from the mesh (predicted and ground truth alike, or the dataset's
ground-truth joints), pelvis-centred (H36M joint 0), reduced to the 14 LSP joints (`H36M_TO_J14`, as
SPIN's and PARE's evaluation for 3DPW and H36M); MPJPE is the mean joint distance, PA-MPJPE the same
after the best similarity transform (Procrustes: scale, rotation, translation), PVE the mean vertex
distance after pelvis centring. Inputs in metres, results in millimetres.
"""

from __future__ import annotations

import torch

# H36M-17 (pipeline.skeleton.H36M_JOINT_NAMES) -> the 14 LSP joints, in LSP order (SPIN's H36M_TO_J14)
H36M_TO_J14 = (6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10)
H36M_PELVIS = 0


def procrustes_align(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """pred (B, J, 3) moved by the similarity transform that best fits it to gt (least squares,
    Umeyama's solution with the reflection excluded)."""
    mu_p, mu_g = pred.mean(1, keepdim=True), gt.mean(1, keepdim=True)
    p, g = pred - mu_p, gt - mu_g
    cov = p.transpose(1, 2) @ g  # (B, 3, 3)
    U, S, Vh = torch.linalg.svd(cov)
    d = torch.sign(torch.det(U @ Vh))
    D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], dim=-1))
    R = U @ D @ Vh  # p @ R ~ g
    scale = (S * torch.diagonal(D, dim1=-2, dim2=-1)).sum(-1) / p.square().sum(dim=(1, 2)).clamp(min=1e-12)
    return scale[:, None, None] * (p @ R) + mu_g


def lsp14_from_h36m(joints17: torch.Tensor) -> torch.Tensor:
    """(B, 17, 3) H36M joints -> (B, 14, 3) LSP joints, centred on the H36M pelvis."""
    centred = joints17 - joints17[:, H36M_PELVIS:H36M_PELVIS + 1]
    return centred[:, list(H36M_TO_J14)]


def mpjpe(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(B,) mean per-joint position error in mm of already aligned joints (B, J, 3) in metres."""
    return 1000.0 * (pred - gt).norm(dim=-1).mean(-1)


def pa_mpjpe(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(B,) MPJPE after Procrustes alignment, mm."""
    return mpjpe(procrustes_align(pred, gt), gt)


def pve(pred_vertices: torch.Tensor, gt_vertices: torch.Tensor, pred_pelvis: torch.Tensor,
        gt_pelvis: torch.Tensor) -> torch.Tensor:
    """(B,) mean per-vertex error in mm after centring each mesh on its pelvis (B, 3)."""
    return 1000.0 * ((pred_vertices - pred_pelvis[:, None]) - (gt_vertices - gt_pelvis[:, None])).norm(dim=-1).mean(-1)


def joint_errors(pred_h36m: torch.Tensor, gt_h36m: torch.Tensor) -> dict[str, torch.Tensor]:
    """{"mpjpe", "pa_mpjpe"} (B,) mm on the 14 LSP joints of H36M-17 joints (B, 17, 3), the protocol above."""
    p, g = lsp14_from_h36m(pred_h36m), lsp14_from_h36m(gt_h36m)
    return {"mpjpe": mpjpe(p, g), "pa_mpjpe": pa_mpjpe(p, g)}
