"""3D error metrics against their definitions."""

import math

import pytest
import torch

from models.rotations import axis_angle_to_rotmat
from trainers.pose_metrics import H36M_TO_J14, joint_errors, lsp14_from_h36m, mpjpe, pa_mpjpe, procrustes_align, pve


def test_procrustes_undoes_any_similarity_transform_and_no_reflection():
    g = torch.Generator().manual_seed(0)
    gt = torch.randn(4, 14, 3, generator=g, dtype=torch.float64)
    R = axis_angle_to_rotmat(torch.randn(4, 3, generator=g, dtype=torch.float64))
    moved = 1.7 * gt @ R.transpose(1, 2) + torch.randn(4, 1, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(procrustes_align(moved, gt), gt)
    assert pa_mpjpe(moved, gt).max() < 1e-9
    mirrored = gt * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)  # a reflection is not a rotation
    assert pa_mpjpe(mirrored, gt).min() > 1.0


def test_mpjpe_is_the_mean_distance_in_millimetres():
    gt = torch.zeros(1, 14, 3)
    pred = gt.clone()
    pred[0, :7, 0] = 0.01  # half the joints 1 cm off
    assert mpjpe(pred, gt).item() == pytest.approx(5.0)


def test_pa_mpjpe_never_exceeds_mpjpe_and_lsp14_is_pelvis_centred():
    g = torch.Generator().manual_seed(1)
    gt17 = torch.randn(3, 17, 3, generator=g)
    pred17 = gt17 + 0.05 * torch.randn(3, 17, 3, generator=g) + 2.0  # plus a global offset
    e = joint_errors(pred17, gt17)
    assert (e["pa_mpjpe"] <= e["mpjpe"] + 1e-4).all()
    assert e["mpjpe"].max() < 200  # the offset is removed by the pelvis centring
    assert lsp14_from_h36m(gt17).shape == (3, 14, 3) and len(set(H36M_TO_J14)) == 14
    assert 0 not in H36M_TO_J14  # the pelvis itself is not among the 14


def test_pve_centres_each_mesh_on_its_pelvis():
    v = torch.randn(2, 100, 3)
    assert pve(v + 3.0, v, torch.full((2, 3), 3.0), torch.zeros(2, 3)).max() < 1e-3  # mm; float32 rounding at 3 m
    assert pve(v + 0.002, v, torch.zeros(2, 3), torch.zeros(2, 3)).mean().item() == pytest.approx(1000 * 0.002 * math.sqrt(3), rel=1e-4)
