"""3D pose and shape errors of the field's protocols (SPIN, PARE, DSR), batched torch.

Protocol: the H36M-17 joints regressed from the mesh (predicted and ground truth alike, or the dataset's
ground-truth joints), pelvis-centred (H36M joint 0), reduced to the 14 LSP joints (`H36M_TO_J14`, as
SPIN's and PARE's evaluation for 3DPW and H36M); MPJPE is the mean joint distance, PA-MPJPE the same
after the best similarity transform (Procrustes: scale, rotation, translation), PVE the mean vertex
distance after pelvis centring. MPI-INF-3DHP is scored on 17 joints (SPIN's `H36M_TO_J17` for the
prediction, `J24_TO_J17` for the dataset's `S` joints), centred on the pelvis, with PCK at 150 mm and
the area under the PCK curve over 0-150 mm (31 thresholds, 5 mm apart). Inputs in metres, results in
millimetres.
"""

from __future__ import annotations

import torch

# H36M-17 (pipeline.skeleton.H36M_JOINT_NAMES) -> the 14 LSP joints, in LSP order (SPIN's H36M_TO_J14),
# then MPI-INF-3DHP's three more (pelvis, spine, nose/neck): SPIN's H36M_TO_J17
H36M_TO_J17 = (6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10, 0, 7, 9)
H36M_TO_J14 = H36M_TO_J17[:14]
H36M_PELVIS = 0
# the 24 ground-truth joints of JOINTS49 (the `S` array) -> the same 17 (SPIN's J24_TO_J17): head (H36M)
# for the head top, then pelvis (MPII), spine (H36M), jaw (H36M)
J24_TO_J17 = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 18, 14, 16, 17)
J17_PELVIS = 14  # the pelvis among the 17
J24_TO_J14 = J24_TO_J17[:14]  # the 14 LSP joints of `S` (SPIN's J24_TO_J14)
J24_PELVIS = J24_TO_J17[J17_PELVIS]
PCK_THRESHOLD_MM = 150.0
AUC_THRESHOLDS_MM = tuple(5.0 * i for i in range(31))  # 0, 5, ..., 150


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


def mpi17_from_h36m(joints17: torch.Tensor) -> torch.Tensor:
    """(B, 17, 3) H36M joints of a body -> MPI-INF-3DHP's 17 joints, centred on the pelvis."""
    return joints17[:, list(H36M_TO_J17)] - joints17[:, H36M_PELVIS:H36M_PELVIS + 1]


def mpi17_from_j24(joints24: torch.Tensor) -> torch.Tensor:
    """(B, 24, 3 or 4) ground-truth joints (`S`, confidence dropped) -> the 17, centred on the pelvis."""
    j = joints24[:, list(J24_TO_J17), :3]
    return j - j[:, J17_PELVIS:J17_PELVIS + 1]


def lsp14_from_j24(joints24: torch.Tensor) -> torch.Tensor:
    """(B, 24, 3 or 4) ground-truth joints (`S`) -> (B, 14, 3) LSP joints, centred on the pelvis (SPIN's
    files store S already pelvis-centred; the demo world's are camera coordinates)."""
    j = joints24[..., :3]
    return j[:, list(J24_TO_J14)] - j[:, J24_PELVIS:J24_PELVIS + 1]


def joint_distances(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(B, J) distance in mm of every joint of already aligned joints (B, J, 3) in metres."""
    return 1000.0 * (pred - gt).norm(dim=-1)


def mpjpe(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(B,) mean per-joint position error in mm of already aligned joints (B, J, 3) in metres."""
    return joint_distances(pred, gt).mean(-1)


def pa_mpjpe(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(B,) MPJPE after Procrustes alignment, mm."""
    return mpjpe(procrustes_align(pred, gt), gt)


def pve(pred_vertices: torch.Tensor, gt_vertices: torch.Tensor, pred_pelvis: torch.Tensor,
        gt_pelvis: torch.Tensor) -> torch.Tensor:
    """(B,) mean per-vertex error in mm after centring each mesh on its pelvis (B, 3)."""
    return 1000.0 * ((pred_vertices - pred_pelvis[:, None]) - (gt_vertices - gt_pelvis[:, None])).norm(dim=-1).mean(-1)


def joint_errors(pred_h36m: torch.Tensor, gt_h36m: torch.Tensor, per_joint: bool = False) -> dict[str, torch.Tensor]:
    """{"mpjpe", "pa_mpjpe"} (B,) mm on the 14 LSP joints of H36M-17 joints (B, 17, 3), the protocol above;
    with per_joint, also "per_joint" and "pa_per_joint" (B, 14) mm."""
    p, g = lsp14_from_h36m(pred_h36m), lsp14_from_h36m(gt_h36m)
    d, d_pa = joint_distances(p, g), joint_distances(procrustes_align(p, g), g)
    out = {"mpjpe": d.mean(-1), "pa_mpjpe": d_pa.mean(-1)}
    return out | ({"per_joint": d, "pa_per_joint": d_pa} if per_joint else {})


def joint_errors_from_s(pred_h36m: torch.Tensor, gt_j24: torch.Tensor, per_joint: bool = False) -> dict[str, torch.Tensor]:
    """As joint_errors, against a dataset's 24 ground-truth joints (`S`: Human3.6M in SPIN's evaluation)."""
    p, g = lsp14_from_h36m(pred_h36m), lsp14_from_j24(gt_j24.to(pred_h36m.dtype))
    d, d_pa = joint_distances(p, g), joint_distances(procrustes_align(p, g), g)
    out = {"mpjpe": d.mean(-1), "pa_mpjpe": d_pa.mean(-1)}
    return out | ({"per_joint": d, "pa_per_joint": d_pa} if per_joint else {})


def pck(distances_mm: torch.Tensor, threshold_mm: float = PCK_THRESHOLD_MM) -> torch.Tensor:
    """(B,) fraction of joints (B, J distances in mm) within the threshold (a distance equal to it counts)."""
    return (distances_mm <= threshold_mm).to(distances_mm.dtype).mean(-1)


def auc(distances_mm: torch.Tensor, thresholds_mm=AUC_THRESHOLDS_MM) -> torch.Tensor:
    """(B,) area under the PCK curve: the mean PCK over the thresholds (0-150 mm, 5 mm apart)."""
    return torch.stack([pck(distances_mm, t) for t in thresholds_mm], dim=-1).mean(-1)


def mpi_joint_errors(pred_h36m: torch.Tensor, gt_j24: torch.Tensor) -> dict[str, torch.Tensor]:
    """MPI-INF-3DHP's protocol: the predicted body's H36M-17 joints against the dataset's 24 joints, on
    the 17 joints, pelvis-centred. {"mpjpe", "pa_mpjpe", "pck", "auc"} per sample (B,), and
    "per_joint" (B, 17) mm; PCK and AUC of the unaligned (pelvis-centred) joints, as the benchmark's."""
    p, g = mpi17_from_h36m(pred_h36m), mpi17_from_j24(gt_j24.to(pred_h36m.dtype))
    d, d_pa = joint_distances(p, g), joint_distances(procrustes_align(p, g), g)
    return {"mpjpe": d.mean(-1), "pa_mpjpe": d_pa.mean(-1), "pck": pck(d), "auc": auc(d), "per_joint": d,
            "pa_per_joint": d_pa}
