"""Rotation representations of the regressors, batched torch (any leading shape, any device/dtype).

The 6D representation (Zhou et al., CVPR 2019) is the first two columns of the rotation matrix. Its
memory layout is SPIN's, which PARE and DSR inherit and which their checkpoints (mean pose included)
are stored in: the 6 numbers are the 3 x 2 block R[:, :2] read row by row,
    (R00, R01, R10, R11, R20, R21),
i.e. the columns are interleaved, not concatenated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rot6d_to_rotmat(x: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3) by Gram-Schmidt: b1 = a1/|a1|, b2 = the part of a2 orthogonal to b1,
    normalised, b3 = b1 x b2; the columns of the result are b1, b2, b3."""
    block = x.reshape(*x.shape[:-1], 3, 2)
    a1, a2 = block[..., 0], block[..., 1]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def rotmat_to_rot6d(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 6) in the layout above: rot6d_to_rotmat(rotmat_to_rot6d(R)) == R."""
    return R[..., :2].reshape(*R.shape[:-2], 6)


def axis_angle_to_rotmat(aa: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle (radians) -> (..., 3, 3) by Rodrigues' formula; exact at zero angle."""
    angle = aa.norm(dim=-1, keepdim=True)  # (..., 1)
    # sin(t)/t and (1 - cos t)/t^2 by their series near 0, so the gradient at t = 0 is finite
    small = angle < 1e-4
    t = torch.where(small, torch.ones_like(angle), angle)
    a = torch.where(small, 1 - angle ** 2 / 6, torch.sin(t) / t)
    b = torch.where(small, 0.5 - angle ** 2 / 24, (1 - torch.cos(t)) / t ** 2)
    x, y, z = aa.unbind(-1)
    zero = torch.zeros_like(x)
    K = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*aa.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand_as(K)
    return eye + a[..., None] * K + b[..., None] * (K @ K)


def rotmat_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 3) axis-angle with angle in [0, pi], through the unit quaternion (stable
    near 0 and near pi, where the skew part of R vanishes)."""
    q = rotmat_to_quaternion(R)  # (..., 4) w, x, y, z with w >= 0
    w, xyz = q[..., :1], q[..., 1:]
    s = xyz.norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(s, w)
    # angle / sin(angle / 2), with its limit 2 at s -> 0
    scale = torch.where(s > 1e-8, angle / s.clamp_min(1e-12), 2.0 / w.clamp_min(1e-12))
    return xyz * scale


def rotmat_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 4) unit quaternion (w, x, y, z), w >= 0. Each candidate is computed from
    the largest of the four diagonal combinations (Shepperd's method)."""
    m = R.reshape(*R.shape[:-2], 9)
    r00, r01, r02, r10, r11, r12, r20, r21, r22 = m.unbind(-1)
    four_sq = torch.stack([1 + r00 + r11 + r22, 1 + r00 - r11 - r22,
                           1 - r00 + r11 - r22, 1 - r00 - r11 + r22], dim=-1)  # 4 w^2, 4 x^2, 4 y^2, 4 z^2
    root = four_sq.clamp_min(1e-12).sqrt()  # 2|w|, 2|x|, 2|y|, 2|z|
    candidates = torch.stack([
        torch.stack([four_sq[..., 0], r21 - r12, r02 - r20, r10 - r01], -1) / (2 * root[..., 0:1]),
        torch.stack([r21 - r12, four_sq[..., 1], r10 + r01, r02 + r20], -1) / (2 * root[..., 1:2]),
        torch.stack([r02 - r20, r10 + r01, four_sq[..., 2], r12 + r21], -1) / (2 * root[..., 2:3]),
        torch.stack([r10 - r01, r20 + r02, r21 + r12, four_sq[..., 3]], -1) / (2 * root[..., 3:4]),
    ], dim=-2)  # (..., 4 candidates, 4)
    best = four_sq.argmax(dim=-1)
    q = candidates.gather(-2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = F.normalize(q, dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


def mean_rotation(R: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """The chordal L2 mean of rotations along `dim`: the rotation nearest (Frobenius) to the
    arithmetic mean of the matrices, by SVD with the determinant fixed to +1."""
    M = R.mean(dim=dim)
    U, _, Vh = torch.linalg.svd(M)
    d = torch.det(U @ Vh)
    D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], dim=-1))
    return U @ D @ Vh
