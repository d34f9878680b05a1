"""3D error metrics against their definitions."""

import math

import pytest
import torch

from models.rotations import axis_angle_to_rotmat
from pipeline.skeleton import H36M_JOINT_NAMES, JOINTS49_NAMES, NUM_OPENPOSE_JOINTS
from trainers.pose_metrics import (AUC_THRESHOLDS_MM, H36M_TO_J14, H36M_TO_J17, J24_TO_J17, auc, joint_errors,
                                   lsp14_from_h36m, mpi_joint_errors, mpjpe, pa_mpjpe, pck, procrustes_align, pve)


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


def test_mpjpe_of_a_two_joint_example_by_hand():
    gt = torch.tensor([[[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    pred = torch.tensor([[[0.003, 0.004, 0.0], [0.0, 1.0, 0.012]]])  # 5 mm and 12 mm off
    assert mpjpe(pred, gt).item() == pytest.approx(8.5)


def test_per_joint_errors_average_to_mpjpe_and_pa_mpjpe():
    g = torch.Generator().manual_seed(2)
    gt17 = torch.randn(5, 17, 3, generator=g, dtype=torch.float64)
    pred17 = gt17 + 0.03 * torch.randn(5, 17, 3, generator=g, dtype=torch.float64)
    e = joint_errors(pred17, gt17, per_joint=True)
    assert e["per_joint"].shape == e["pa_per_joint"].shape == (5, 14)
    torch.testing.assert_close(e["per_joint"].mean(-1), e["mpjpe"])
    torch.testing.assert_close(e["pa_per_joint"].mean(-1), e["pa_mpjpe"])
    assert set(joint_errors(pred17, gt17)) == {"mpjpe", "pa_mpjpe"}


def test_pck_and_auc_on_a_made_up_table():
    # two samples of four joints, distances in mm
    d = torch.tensor([[0.0, 50.0, 150.0, 151.0], [10.0, 20.0, 30.0, 300.0]])
    assert pck(d).tolist() == [0.75, 0.75]  # 150 itself counts
    assert pck(d, 25.0).tolist() == [0.25, 0.5]
    # AUC = mean over t in 0, 5, ..., 150 of the fraction within t, counted by hand per joint:
    # a joint at distance x is within t for the thresholds t >= x: (31 - ceil(x / 5)) of 31
    within = lambda x: sum(1 for t in AUC_THRESHOLDS_MM if x <= t)  # noqa: E731
    assert [within(x) for x in (0.0, 50.0, 150.0, 151.0)] == [31, 21, 1, 0]
    assert auc(d)[0].item() == pytest.approx((31 + 21 + 1 + 0) / (4 * 31))
    assert auc(d)[1].item() == pytest.approx((29 + 27 + 25 + 0) / (4 * 31))
    assert auc(torch.zeros(1, 17)).item() == 1.0 and auc(torch.full((1, 17), 200.0)).item() == 0.0


def test_mpi_inf_3dhp_protocol_uses_the_same_17_joints_on_both_sides():
    # SPIN's tables: 14 LSP joints then pelvis, spine, and the H36M joint 9 against the jaw (H36M)
    assert H36M_TO_J17[:14] == H36M_TO_J14 and len(set(H36M_TO_J17)) == 17 and len(set(J24_TO_J17)) == 17
    gt_names = [JOINTS49_NAMES[NUM_OPENPOSE_JOINTS + j] for j in J24_TO_J17]
    assert gt_names[14:] == ["Pelvis (MPII)", "Spine (H36M)", "Jaw (H36M)"] and gt_names[13] == "Head (H36M)"
    assert [H36M_JOINT_NAMES[j] for j in H36M_TO_J17[14:]] == ["pelvis", "torso", "nose"]
    # a body whose 24 joints are its H36M joints put where J24_TO_J17 reads them: zero error, full PCK/AUC
    g = torch.Generator().manual_seed(3)
    # eighths of a metre: every difference below is exact, so a perfect answer is at distance 0 exactly
    # (the AUC's first threshold is 0 mm)
    h36m = torch.randint(-8, 8, (2, 17, 3), generator=g).double() / 8
    j24 = torch.zeros(2, 24, 4, dtype=torch.float64)
    j24[:, list(J24_TO_J17), :3] = h36m[:, list(H36M_TO_J17)] + 4.0  # any offset: both are pelvis-centred
    e = mpi_joint_errors(h36m, j24)
    assert e["mpjpe"].max() < 1e-9 and e["pa_mpjpe"].max() < 1e-6
    assert e["pck"].tolist() == [1.0, 1.0] and e["auc"].tolist() == [1.0, 1.0]
    # one joint 102 mm off: MPJPE 102/17, PCK still 1, AUC loses that joint's 21 thresholds below 102 mm
    j24[0, J24_TO_J17[3], 0] += 0.102
    e = mpi_joint_errors(h36m, j24)
    assert e["mpjpe"][0].item() == pytest.approx(102.0 / 17, rel=1e-6)
    assert e["per_joint"][0, 3].item() == pytest.approx(102.0, rel=1e-6) and e["pck"][0].item() == 1.0
    assert e["auc"][0].item() == pytest.approx(1.0 - 21 / (31 * 17))
