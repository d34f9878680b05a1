"""The training losses against their definitions (SPIN/PARE), on hand-made batches."""

import math

import pytest
import torch

from models.rotations import axis_angle_to_rotmat
from models.smpl_head import Prediction, RegressorOutput
from trainers.losses import (LossWeights, camera_prior, keypoint_2d_loss, keypoint_3d_loss, part_segmentation_loss,
                             regressor_losses, smpl_parameter_losses)


def test_keypoint_loss_weighs_openpose_and_ground_truth_halves_apart():
    gt = torch.zeros(1, 49, 3)
    gt[..., 2] = 1.0
    pred = torch.zeros(1, 49, 2)
    pred[0, 0] = torch.tensor([1.0, 0.0])  # an OpenPose joint off by 1
    pred[0, 30] = torch.tensor([0.0, 2.0])  # a ground-truth joint off by 2
    n = 49 * 2
    assert keypoint_2d_loss(pred, gt, 0.0, 1.0).item() == pytest.approx(4.0 / n)
    assert keypoint_2d_loss(pred, gt, 1.0, 0.0).item() == pytest.approx(1.0 / n)
    gt[0, 30, 2] = 0.5  # confidence scales the term
    assert keypoint_2d_loss(pred, gt, 1.0, 1.0).item() == pytest.approx((1.0 + 2.0) / n)


def test_3d_loss_is_pelvis_centred_and_only_on_rows_with_joints():
    g = torch.Generator().manual_seed(0)
    joints = torch.randn(2, 24, 3, generator=g)
    gt = torch.cat([joints, torch.ones(2, 24, 1)], dim=-1)
    pred49 = torch.cat([torch.randn(2, 25, 3, generator=g), joints + torch.tensor([1.0, -2.0, 3.0])], dim=1)
    has = torch.tensor([True, True])
    assert keypoint_3d_loss(pred49, gt, has).item() == pytest.approx(0.0, abs=1e-12)  # a translation is free
    pred49[1, 25 + 7] += torch.tensor([0.0, 0.3, 0.0])
    only_first = keypoint_3d_loss(pred49, gt, torch.tensor([True, False]))
    assert only_first.item() == pytest.approx(0.0, abs=1e-12)
    assert keypoint_3d_loss(pred49, gt, has).item() > 0
    none = keypoint_3d_loss(pred49.requires_grad_(True), gt, torch.tensor([False, False]))
    none.backward()
    assert none.item() == 0.0 and pred49.grad.abs().sum() == 0


def test_smpl_losses_compare_rotation_matrices_on_rows_with_smpl():
    g = torch.Generator().manual_seed(1)
    pose = 0.3 * torch.randn(3, 72, generator=g)
    betas = torch.randn(3, 10, generator=g)
    rotmat = axis_angle_to_rotmat(pose.reshape(3, 24, 3))
    p, b = smpl_parameter_losses(rotmat, betas, pose, betas, torch.tensor([True, True, True]))
    assert p.item() == pytest.approx(0.0, abs=1e-12) and b.item() == 0.0
    wrong = rotmat.clone()
    wrong[2] = torch.eye(3)
    p, _ = smpl_parameter_losses(wrong, betas, pose, betas, torch.tensor([True, True, False]))
    assert p.item() == pytest.approx(0.0, abs=1e-12)
    p, _ = smpl_parameter_losses(wrong, betas, pose, betas, torch.tensor([True, True, True]))
    expected = (wrong[2] - rotmat[2]).square().sum() / (3 * 24 * 9)
    assert p.item() == pytest.approx(expected.item(), rel=1e-5)


def test_camera_prior_penalises_small_and_negative_scales():
    assert camera_prior(torch.tensor([[1.0, 0, 0]])).item() == pytest.approx(math.exp(-20))
    assert camera_prior(torch.tensor([[-0.1, 0, 0]])).item() == pytest.approx(math.exp(2))


def test_part_loss_upsamples_and_ignores_unknown_pixels():
    logits = torch.zeros(1, 25, 4, 4)
    logits[0, 3] = 5.0  # predicts part 3 everywhere
    labels = torch.full((1, 16, 16), 255, dtype=torch.uint8)
    labels[0, :8] = 3
    loss = part_segmentation_loss(logits, labels, torch.tensor([True]))
    expected = -torch.log_softmax(logits[0, :, 0, 0], 0)[3]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    labels[0, 8:] = 4  # pixels labelled part 4 now count, with a higher loss
    assert part_segmentation_loss(logits, labels, torch.tensor([True])).item() > loss.item()
    assert part_segmentation_loss(logits, labels, torch.tensor([False])).item() == 0.0


def _batch(B=2):
    g = torch.Generator().manual_seed(2)
    kp = torch.rand(B, 49, 3, generator=g)
    return {"keypoints": kp, "joints3d": torch.cat([torch.randn(B, 24, 3, generator=g), torch.ones(B, 24, 1)], -1),
            "has_joints3d": torch.tensor([True] * B), "pose": 0.2 * torch.randn(B, 72, generator=g),
            "betas": torch.randn(B, 10, generator=g), "has_smpl": torch.tensor([True] * B),
            "part_labels": torch.randint(0, 25, (B, 16, 16), generator=g).to(torch.uint8),
            "has_parts": torch.tensor([True] * B)}


def _prediction(B=2, parts=True):
    g = torch.Generator().manual_seed(3)
    rotmat = axis_angle_to_rotmat(0.2 * torch.randn(B, 24, 3, generator=g))
    pred = Prediction(rotmat=rotmat, betas=torch.randn(B, 10, generator=g), cam=torch.tensor([[0.9, 0, 0]] * B),
                      pose6d=torch.zeros(B, 24, 6), part_logits=torch.randn(B, 25, 4, 4, generator=g) if parts else None)
    out = RegressorOutput(vertices=torch.zeros(B, 10, 3), joints=torch.randn(B, 49, 3, generator=g), h36m_joints=None,
                          cam_t=torch.zeros(B, 3), joints2d=torch.rand(B, 49, 2, generator=g), rotmat=rotmat,
                          betas=pred.betas, cam=pred.cam)
    return pred, out


def test_total_is_the_weighted_sum_of_the_named_terms():
    pred, out = _prediction()
    batch = _batch()
    w = LossWeights()
    total, terms = regressor_losses(pred, out, batch, w, dsr=(torch.tensor(0.5), torch.tensor(2.0)))
    assert set(terms) == {"keypoints", "keypoints_3d", "pose", "betas", "camera", "part", "dsr_mc", "dsr_c"}
    assert terms["dsr_mc"].item() == pytest.approx(0.05) and terms["dsr_c"].item() == pytest.approx(0.2)
    assert total.item() == pytest.approx(60 * sum(t.item() for t in terms.values()), rel=1e-6)
    _, no_part = regressor_losses(pred, out, batch, LossWeights(part=0.0))
    assert "part" not in no_part  # PARE's stage 2
    hmr_pred, hmr_out = _prediction(parts=False)
    assert "part" not in regressor_losses(hmr_pred, hmr_out, batch)[1]


def test_a_non_finite_term_is_named():
    pred, out = _prediction()
    out.joints2d[0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="keypoints"):
        regressor_losses(pred, out, _batch())
