"""The regressors' building blocks: backbones, rotation representations, HMR and PARE heads (mean
parameters, mean pose layouts, ground-truth attention, the locally connected layer), the SMPL output
head's cameras with the demo body, the mean parameters file, and the crop's weak-perspective camera.

Small widths (width_mult 0.25) and batches of 1-2 keep this file light on a CPU. The networks run in
training mode (BatchNorm on batch statistics): at initialisation HRNet's N(0, 0.001) convolutions make
evaluation-mode features vanish, which would hide what the tests look at."""

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.backbones import BACKBONES, build_backbone
from models.hmr import HMR
from models.pare import PARE, LocallyConnected
from models.rotations import (
    axis_angle_to_rotmat,
    mean_rotation,
    rot6d_to_rotmat,
    rotmat_to_axis_angle,
    rotmat_to_rot6d,
)
from models.smpl_head import MeanParams, SMPLHead
from pipeline.body.model import BodyModel, BodyModelError
from pipeline.camera import crop_focal_length, crop_weak_perspective, intrinsics, project

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


def random_axis_angle(n: int, seed: int, max_angle: float = math.pi, min_angle: float = 0.0) -> torch.Tensor:
    """(n, 3) float64 axis-angle vectors: uniform random axes, angles uniform in [min_angle, max_angle)."""
    g = torch.Generator().manual_seed(seed)
    axis = F.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=-1)
    angle = min_angle + (max_angle - min_angle) * torch.rand(n, 1, generator=g, dtype=torch.float64)
    return axis * angle


def assert_rotations(R: torch.Tensor, atol: float = 1e-5) -> None:
    """R (..., 3, 3) are rotations: R^T R = I and det R = +1."""
    eye = torch.eye(3, dtype=R.dtype, device=R.device).expand_as(R)
    torch.testing.assert_close(R.mT @ R, eye, rtol=0, atol=atol)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(R.shape[:-2], dtype=R.dtype, device=R.device),
                               rtol=0, atol=atol)


def nontrivial_mean(seed: int = 0) -> tuple[MeanParams, torch.Tensor]:
    """Mean parameters with 24 distinct random joint rotations, and those rotations (24, 3, 3) float64."""
    R = axis_angle_to_rotmat(random_axis_angle(24, seed, max_angle=2.5, min_angle=0.5))
    g = np.random.default_rng(seed)
    mean = MeanParams(rotmat_to_rot6d(R).reshape(-1).numpy(), g.normal(size=10), np.array([0.8, 0.1, -0.05]))
    return mean, R


def image(batch: int, res: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, res, res, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------------
# Backbones


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_reports_its_channels_and_output_stride(name, device):
    """build_backbone's channel count is the output's; ResNet-50 at 1/32, HRNet at 1/4; the pose
    network ("hrnet_wNN" without a feature head) gives 17 COCO heatmaps, the PARE variants 15 x width."""
    torch.manual_seed(0)
    net, channels = build_backbone(name, width_mult=0.25)
    net = net.to(device)
    with torch.no_grad():
        out = net(image(2, 128).to(device))
    stride = 32 if name == "resnet50" else 16 if name.endswith("-encoder") else 4
    assert out.shape == (2, channels, 128 // stride, 128 // stride)
    assert out.device.type == device and torch.isfinite(out).all()
    if name.startswith("hrnet"):
        width = 8 if name.startswith("hrnet_w32") else 12  # 32 / 4, 48 / 4
        assert channels == (17 if "-" not in name else 15 * width)


@pytest.mark.parametrize("name", ["resnet50", "hrnet_w32-conv"])
def test_backbone_key_layout_does_not_depend_on_width(name):
    """width_mult changes the tensors' sizes, never their names: a small model's state dict has the keys
    of the published full-width one, in the same order."""
    small, _ = build_backbone(name, width_mult=0.25)
    full, _ = build_backbone(name, width_mult=1.0)
    s, f = small.state_dict(), full.state_dict()
    assert list(s) == list(f)
    assert any(s[k].shape != f[k].shape for k in s)  # the width did change
    assert f["conv1.weight"].shape[0] == 64


@pytest.mark.parametrize("variant", ["transfer", "universal"])
def test_parser_backbone_starts_from_a_graphonomy_checkpoint(tmp_path, variant):
    """The demo preset's backbones take a parser checkpoint's DeepLab weights unchanged (the graph and
    label layers are skipped); they see the regressors' ImageNet-normalised RGB as the parser's BGR in
    [-1, 1], so their features equal the parser's own on the same picture."""
    from models.backbones import load_pretrained_backbone
    from models.graphonomy import build
    from trainers.packed import normalize_images

    torch.manual_seed(0)
    parser = build(variant, width=0.25).eval()
    torch.save(parser.state_dict(), tmp_path / "parser.pth")
    pixels = torch.randint(0, 256, (2, 3, 96, 96), dtype=torch.uint8)
    bgr = pixels.flip(1).float() / 127.5 - 1.0
    for name in ("deeplab_xception", "deeplab_xception-encoder"):
        net, _ = build_backbone(name, width_mult=0.25)
        report = load_pretrained_backbone(net, tmp_path / "parser.pth")
        assert report["initialised"] == [] and any(k.startswith("semantic.") for k in report["skipped"])
        with torch.no_grad():
            ours = net.eval()(normalize_images(pixels))
            theirs = parser.features(bgr) if name == "deeplab_xception" else parser.xception_features(bgr)[0]
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    wide, _ = build_backbone("deeplab_xception", width_mult=0.5)
    with pytest.raises(ValueError, match="shape mismatches"):
        load_pretrained_backbone(wide, tmp_path / "parser.pth")


# ---------------------------------------------------------------------------------------------------
# HMR and PARE forward


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backbone", ["hrnet_w32-conv", "resnet50", "deeplab_xception", "deeplab_xception-encoder"])
@pytest.mark.parametrize("model_cls", [HMR, PARE])
def test_regressor_prediction_shapes_and_rotations(model_cls, backbone, device):
    """At 224 x 224: rotmat (2, 24, 3, 3) rotations, betas (2, 10), cam (2, 3), pose6d (2, 24, 6);
    PARE adds part logits (2, 25, 56, 56) and attention maps (2, 24, 56, 56) each summing to 1."""
    torch.manual_seed(0)
    if model_cls is PARE and backbone.endswith("-encoder"):
        with pytest.raises(ValueError, match="stride-4"):
            model_cls(backbone=backbone, width_mult=0.25)
        return
    model = model_cls(backbone=backbone, width_mult=0.25).to(device)
    with torch.no_grad():
        pred = model(image(2, 224).to(device))
    assert pred.rotmat.shape == (2, 24, 3, 3) and pred.rotmat.device.type == device
    assert pred.betas.shape == (2, 10) and pred.cam.shape == (2, 3) and pred.pose6d.shape == (2, 24, 6)
    assert_rotations(pred.rotmat)
    torch.testing.assert_close(pred.rotmat, rot6d_to_rotmat(pred.pose6d), rtol=0, atol=0)
    if model_cls is HMR:
        assert pred.part_logits is None and pred.attention is None
    else:
        assert pred.part_logits.shape == (2, 25, 56, 56)
        assert pred.attention.shape == (2, 24, 56, 56)
        assert (pred.attention >= 0).all()
        torch.testing.assert_close(pred.attention.sum(dim=(2, 3)), torch.ones(2, 24, device=device), rtol=0, atol=1e-5)


def test_hmr_with_zeroed_output_layers_returns_its_mean_parameters():
    """HMR refines from the mean: with its decoders' weights and biases at zero the three iterations add
    nothing, so the output is exactly the mean pose, shape and camera."""
    torch.manual_seed(0)
    mean, _ = nontrivial_mean(1)
    model = HMR(mean=mean, backbone="resnet50", width_mult=0.25)
    for layer in (model.head.decpose, model.head.decshape, model.head.deccam):
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
    with torch.no_grad():
        pred = model(image(2, 64))
    pose6d = torch.as_tensor(mean.pose).reshape(24, 6)
    torch.testing.assert_close(pred.pose6d, pose6d.expand(2, -1, -1), rtol=0, atol=0)
    torch.testing.assert_close(pred.rotmat, rot6d_to_rotmat(pose6d).expand(2, -1, -1, -1), rtol=0, atol=1e-6)
    torch.testing.assert_close(pred.betas, torch.as_tensor(mean.shape).expand(2, -1), rtol=0, atol=0)
    torch.testing.assert_close(pred.cam, torch.as_tensor(mean.cam).expand(2, -1), rtol=0, atol=0)


def _zeroed_pare(**kwargs) -> PARE:
    torch.manual_seed(0)
    model = PARE(width_mult=0.25, **kwargs)
    nn.init.zeros_(model.head.pose_mlp.weight)
    for layer in (model.head.shape_mlp, model.head.cam_mlp):
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
    return model


def test_iterative_pare_starts_from_the_mean_pose_in_either_layout():
    """Iterative PARE with zeroed regression layers returns its start: with "per_joint" each joint's
    own mean rotation; with "official" the (144,) mean read as (6, 24) channels x joints, i.e. joint j
    gets (pose[j], pose[24 + j], ..., pose[120 + j]), a different rotation for a non-trivial mean."""
    mean, R = nontrivial_mean(2)
    x = image(1, 64)
    preds = {}
    for layout in ("per_joint", "official"):
        with torch.no_grad():
            preds[layout] = _zeroed_pare(mean=mean, iterative=True, mean_pose_layout=layout)(x)
        torch.testing.assert_close(preds[layout].betas, torch.as_tensor(mean.shape)[None], rtol=0, atol=0)
        torch.testing.assert_close(preds[layout].cam, torch.as_tensor(mean.cam)[None], rtol=0, atol=0)
    pose = torch.as_tensor(mean.pose)
    torch.testing.assert_close(preds["per_joint"].pose6d[0], pose.reshape(24, 6), rtol=0, atol=0)
    torch.testing.assert_close(preds["per_joint"].rotmat[0], R.float(), rtol=0, atol=1e-5)
    official = pose.reshape(6, 24).T
    torch.testing.assert_close(preds["official"].pose6d[0], official, rtol=0, atol=0)
    torch.testing.assert_close(preds["official"].rotmat[0], rot6d_to_rotmat(official), rtol=0, atol=1e-6)
    assert (preds["official"].rotmat - preds["per_joint"].rotmat).abs().amax() > 0.1


def test_one_step_pare_does_not_use_the_mean_parameters():
    """The released (non-iterative) PARE regresses absolute values: with zeroed layers pose6d, betas
    and cam are zero whatever the mean. (rot6d_to_rotmat of a zero 6D vector is then the zero matrix,
    not a rotation, since F.normalize(0) = 0: a trained model never outputs it.)"""
    mean, _ = nontrivial_mean(3)
    with torch.no_grad():
        pred = _zeroed_pare(mean=mean)(image(1, 64))
    assert (pred.pose6d == 0).all() and (pred.betas == 0).all() and (pred.cam == 0).all()


# ---------------------------------------------------------------------------------------------------
# PARE's ground-truth attention and its locally connected layer


def part_labels() -> torch.Tensor:
    """(2, 224, 224) labels: 0 background, 1..24 parts, 255 ignored. Label 8 (part 7) is absent; label
    21 (part 20) lies only on rows 1 mod 4, which the 224 -> 56 nearest sampling never reads."""
    g = torch.Generator().manual_seed(5)
    labels = torch.randint(0, 25, (2, 224, 224), generator=g)
    labels[(labels == 8) | (labels == 21)] = 0
    labels[:, ::3, ::5] = 255
    labels[:, 1::4, 2::4] = 21
    return labels


@pytest.mark.parametrize("mode", ["mask", "official"])
def test_ground_truth_attention_follows_the_part_labels(mode):
    """With part labels, part j's attention is built from the indicator of label j + 1 at every 4th
    pixel (224 -> 56): "mask" normalises it to sum 1 over the part's pixels (zero for an absent part),
    "official" takes the softmax of the 0/1 map over all pixels. The labels replace the predicted
    attention, so the prediction changes while the part logits do not."""
    torch.manual_seed(0)
    model = PARE(width_mult=0.25, gt_attention=mode)
    labels, x = part_labels(), image(2, 224)
    with torch.no_grad():
        free = model(x)
        given = model(x, part_labels=labels)
    onehot = (labels[:, ::4, ::4][:, None] == torch.arange(1, 25)[None, :, None, None]).float()  # (2, 24, 56, 56)
    if mode == "mask":
        counts = onehot.sum(dim=(2, 3), keepdim=True)
        expected = torch.where(counts > 0, onehot / counts.clamp_min(1), torch.zeros_like(onehot))
        assert (given.attention[:, [7, 20]] == 0).all()
        assert (counts[:, [i for i in range(24) if i not in (7, 20)]] > 0).all()
    else:
        expected = onehot.flatten(2).softmax(dim=-1).reshape(onehot.shape)
    torch.testing.assert_close(given.attention, expected, rtol=0, atol=1e-7)
    torch.testing.assert_close(given.part_logits, free.part_logits)
    assert (given.betas - free.betas).abs().amax() > 1e-3
    assert (given.pose6d - free.pose6d).abs().amax() > 1e-5


def test_locally_connected_layer_is_one_linear_map_per_joint():
    """LocallyConnected (official LocallyConnected2d weight layout (1, out, in, J, 1, 1)) equals a
    bias-free nn.Linear for each joint, each joint reading only its own features."""
    torch.manual_seed(0)
    layer = LocallyConnected(in_channels=5, out_channels=6, joints=4)
    assert layer.weight.shape == (1, 6, 5, 4, 1, 1) and [n for n, _ in layer.named_parameters()] == ["weight"]
    nn.init.normal_(layer.weight)
    x = torch.randn(2, 5, 4, 1)
    out = layer(x)
    assert out.shape == (2, 6, 4, 1)
    for j in range(4):
        linear = nn.Linear(5, 6, bias=False)
        with torch.no_grad():
            linear.weight.copy_(layer.weight[0, :, :, j, 0, 0])
        torch.testing.assert_close(out[:, :, j, 0], linear(x[:, :, j, 0]), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(out[:, :, j, 0], x[:, :, j, 0] @ layer.weight[0, :, :, j, 0, 0].T, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------------
# Rotations


def test_rot6d_round_trip_and_orthonormal_output():
    """rotmat -> 6D -> rotmat is the identity on rotations; any non-degenerate 6D vector maps to a
    rotation (Gram-Schmidt)."""
    R = axis_angle_to_rotmat(random_axis_angle(200, 0)).reshape(10, 20, 3, 3)
    torch.testing.assert_close(rot6d_to_rotmat(rotmat_to_rot6d(R)), R, rtol=0, atol=1e-12)
    x = torch.randn(10, 20, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert_rotations(rot6d_to_rotmat(x), atol=1e-12)


def test_rot6d_layout_is_spins():
    """The 6 numbers are R[:, :2] read row by row: (R00, R01, R10, R11, R20, R21); so the first column
    of rot6d_to_rotmat(v) is (v0, v2, v4) normalised."""
    R = torch.arange(9.0).reshape(3, 3)
    torch.testing.assert_close(rotmat_to_rot6d(R), torch.tensor([0.0, 1.0, 3.0, 4.0, 6.0, 7.0]), rtol=0, atol=0)
    torch.testing.assert_close(rot6d_to_rotmat(torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0])), torch.eye(3))
    v = torch.tensor([0.0, 1.0, 2.0, 0.0, 0.0, 0.0])  # columns (0, 2, 0) and (1, 0, 0)
    expected = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])  # b3 = e2 x e1 = -e3
    torch.testing.assert_close(rot6d_to_rotmat(v), expected, rtol=0, atol=1e-7)


@pytest.mark.parametrize("angles", [
    pytest.param((1e-6,), id="near-0"), pytest.param((math.pi - 1e-3,), id="near-pi"),
    pytest.param(tuple(np.linspace(0.01, math.pi - 0.01, 9)), id="range")])
def test_axis_angle_round_trip(angles):
    """axis-angle -> rotmat -> axis-angle returns the vector for angles in (0, pi), including just
    above 0 and just below pi, where the skew part of R vanishes."""
    g = torch.Generator().manual_seed(2)
    axis = F.normalize(torch.randn(len(angles), 16, 3, generator=g, dtype=torch.float64), dim=-1)
    aa = axis * torch.tensor(angles, dtype=torch.float64)[:, None, None]
    back = rotmat_to_axis_angle(axis_angle_to_rotmat(aa))
    torch.testing.assert_close(back, aa, rtol=1e-9, atol=1e-12)


def test_axis_angle_to_rotmat_agrees_with_smplx():
    """Rodrigues' formula as smplx.lbs.batch_rodrigues (up to its 1e-8 angle guard)."""
    from smplx.lbs import batch_rodrigues

    aa = torch.cat([random_axis_angle(64, 3), random_axis_angle(8, 4, max_angle=1e-3)])
    torch.testing.assert_close(axis_angle_to_rotmat(aa), batch_rodrigues(aa), rtol=0, atol=1e-7)
    assert_rotations(axis_angle_to_rotmat(aa), atol=1e-12)


def test_rotation_conversions_have_finite_exact_gradients():
    """gradcheck (float64) of rot6d_to_rotmat and axis_angle_to_rotmat, the latter at exactly zero angle
    too, where its Jacobian is the so(3) generators: dR/dw_k = [e_k]_x."""
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(rot6d_to_rotmat, (x,))
    aa = torch.cat([torch.zeros(1, 3, dtype=torch.float64), random_axis_angle(3, 5), 1e-6 * random_axis_angle(1, 6)])
    assert torch.autograd.gradcheck(axis_angle_to_rotmat, (aa.requires_grad_(),))
    J = torch.autograd.functional.jacobian(axis_angle_to_rotmat, torch.zeros(3, dtype=torch.float64))  # (3, 3, 3)
    assert torch.isfinite(J).all()
    generators = torch.tensor([[[0, 0, 0], [0, 0, -1], [0, 1, 0]], [[0, 0, 1], [0, 0, 0], [-1, 0, 0]],
                               [[0, -1, 0], [1, 0, 0], [0, 0, 0]]], dtype=torch.float64)  # [e_k]_x
    torch.testing.assert_close(J.permute(2, 0, 1), generators, rtol=0, atol=1e-12)


def test_mean_rotation_of_a_symmetric_set_is_its_centre():
    """For rotations R q_k and R q_k^-1 (|angle(q_k)| < pi / 2) the chordal mean is R, per batch entry,
    along any `dim`. For widely spread sets, whose arithmetic mean may have a negative determinant, the
    result is still a rotation, and no farther (Frobenius) from the arithmetic mean than any member."""
    R = axis_angle_to_rotmat(random_axis_angle(5, 7))  # (5, 3, 3) centres
    q = axis_angle_to_rotmat(random_axis_angle(3, 8, max_angle=1.4))  # (3, 3, 3)
    samples = torch.cat([R[:, None] @ q[None], R[:, None] @ q.mT[None]], dim=1)  # (5, 6, 3, 3)
    mean = mean_rotation(samples, dim=1)
    torch.testing.assert_close(mean, R, rtol=0, atol=1e-12)
    assert_rotations(mean, atol=1e-12)
    torch.testing.assert_close(mean_rotation(samples.transpose(0, 1), dim=0), R, rtol=0, atol=1e-12)

    spread = axis_angle_to_rotmat(random_axis_angle(600, 11, min_angle=2.5)).reshape(200, 3, 3, 3)
    M = spread.mean(dim=1)
    assert (torch.linalg.det(M) < 0).any()
    mean = mean_rotation(spread, dim=1)
    assert_rotations(mean, atol=1e-12)
    distance = (mean - M).square().sum(dim=(-2, -1))  # (200,)
    assert (distance[:, None] <= (spread - M[:, None]).square().sum(dim=(-2, -1)) + 1e-12).all()


# ---------------------------------------------------------------------------------------------------
# The SMPL output head with the demo body


@pytest.fixture(scope="module")
def body64(demo_body):
    """The demo body (conftest's session build, as pipeline.body.demo.load_or_build(None)) in float64."""
    return BodyModel(demo_body, dtype=torch.float64)


def head_inputs(s: float = 0.9, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rotmat (2, 24, 3, 3), betas (2, 10), cam (2, 3)) float64: upright body, small joint rotations."""
    aa = random_axis_angle(48, seed, max_angle=0.3).reshape(2, 24, 3)
    aa[:, 0] = 0
    betas = 0.5 * torch.randn(2, 10, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    cam = torch.tensor([[s, 0.1, -0.05], [s, -0.08, 0.12]], dtype=torch.float64)
    return axis_angle_to_rotmat(aa), betas, cam


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("res", [224, 448])
def test_head_joints2d_are_the_perspective_projection_in_the_crop(body64, demo_model, res, dtype):
    """joints2d in crop pixels (to_pixels) is the pinhole projection of joints + cam_t with the crop's
    intrinsics (focal 5000 res / 224, principal point at the crop centre (res - 1) / 2)."""
    body = body64 if dtype == torch.float64 else demo_model
    head = SMPLHead(body, resolution=res)
    assert head.focal_length == 5000.0 * res / 224
    out = head(*(t.to(dtype) for t in head_inputs()))
    assert out.joints.shape == (2, 49, 3) and out.joints2d.shape == (2, 49, 2) and out.h36m_joints.shape == (2, 17, 3)
    assert out.vertices.shape == (2, body.data.num_vertices, 3) and out.joints2d.dtype == dtype
    K = torch.as_tensor(intrinsics(crop_focal_length(res), res), dtype=dtype)
    expected = project(out.joints + out.cam_t[:, None, :], K)
    tol = {"rtol": 1e-12, "atol": 1e-9} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-3}
    torch.testing.assert_close(head.to_pixels(out.joints2d), expected, **tol)


def test_head_perspective_matches_weak_perspective_far_away(body64):
    """With the body far away (tz = 250 m, depth extent a few dm) the perspective joints2d equal the
    weak-perspective s (X + tx) up to the depth effect: joints2d = s (X + tx) tz / (tz + Z) exactly (up to
    the 1e-9 guard), so |joints2d - s (X + tx)| <= |s (X + tx)| |Z| / (tz - |Z|), about 1e-3 relative."""
    head = SMPLHead(body64)
    tz = 250.0
    rotmat, betas, cam = head_inputs(s=2 * head.focal_length / (224 * tz))
    out = head(rotmat, betas, cam)
    torch.testing.assert_close(out.cam_t[:, 2], torch.full((2,), tz, dtype=torch.float64), rtol=1e-9, atol=0)
    s, txy = cam[:, None, :1], cam[:, None, 1:]
    weak = s * (out.joints[..., :2] + txy)
    Z = out.joints[..., 2:3]
    torch.testing.assert_close(out.joints2d, weak * tz / (tz + Z), rtol=1e-9, atol=1e-15)
    error = (out.joints2d - weak).abs()
    bound = weak.abs() * (Z.abs() / (tz - Z.abs()) + 1e-9)  # + the guard's relative 1e-9 / (224 s)
    assert (error <= bound).all()
    assert 1e-4 < Z.abs().amax() / tz < 2e-3  # the regime the bound describes
    assert (error / weak.abs().clamp_min(1e-6)).amax() < 2e-3


def test_head_camera_does_not_depend_on_the_crop_resolution(body64):
    """The focal length scales with the crop, so one weak-perspective camera gives the same camera
    translation and the same normalised 2D joints at 224 and 448."""
    inputs = head_inputs(seed=4)
    a, b = SMPLHead(body64, resolution=224)(*inputs), SMPLHead(body64, resolution=448)(*inputs)
    torch.testing.assert_close(a.cam_t, b.cam_t, rtol=1e-9, atol=0)
    torch.testing.assert_close(a.joints2d, b.joints2d, rtol=1e-9, atol=1e-12)


def test_head_needs_spins_extra_regressor(demo_body):
    """A body model without J_regressor_extra cannot give the 49 joints: SMPLHead refuses it."""
    body = BodyModel(dataclasses.replace(demo_body, J_regressor_extra=None))
    with pytest.raises(BodyModelError, match="extra joint regressor"):
        SMPLHead(body)


# ---------------------------------------------------------------------------------------------------
# Mean parameters


def test_mean_params_read_spin_npz(tmp_path):
    """SPIN's smpl_mean_params.npz (pose 144 float64, shape 10, cam 3) reads as float32 arrays."""
    g = np.random.default_rng(0)
    pose, shape, cam = g.normal(size=144), g.normal(size=10).astype(np.float32), np.array([0.9, 0.0, 0.1])
    np.savez(tmp_path / "smpl_mean_params.npz", pose=pose, shape=shape, cam=cam)
    mean = MeanParams.from_npz(tmp_path / "smpl_mean_params.npz")
    for got, want in ((mean.pose, pose), (mean.shape, shape), (mean.cam, cam)):
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_array_equal(got, want.astype(np.float32))


def test_mean_params_refuse_bad_files_naming_them(tmp_path):
    """A file without "cam", with a wrong size or with NaN is refused with a ValueError naming it;
    the constructor refuses wrong sizes and NaN too."""
    g = np.random.default_rng(1)
    good = {"pose": g.normal(size=144), "shape": g.normal(size=10), "cam": np.array([0.9, 0.0, 0.0])}
    bad = {"no_cam": {k: v for k, v in good.items() if k != "cam"}, "short_pose": {**good, "pose": good["pose"][:143]},
           "nan_shape": {**good, "shape": np.full(10, np.nan)}}
    for name, arrays in bad.items():
        path = tmp_path / f"{name}.npz"
        np.savez(path, **arrays)
        with pytest.raises(ValueError) as info:
            MeanParams.from_npz(path)
        assert str(path) in str(info.value)
    with pytest.raises(ValueError, match="cam"):
        MeanParams.from_npz(tmp_path / "no_cam.npz")
    with pytest.raises(FileNotFoundError, match="absent.npz"):
        MeanParams.from_npz(tmp_path / "absent.npz")
    with pytest.raises(ValueError, match="pose must be 144"):
        MeanParams(np.zeros(143), np.zeros(10), np.zeros(3))
    with pytest.raises(ValueError, match="non-finite"):
        MeanParams(np.zeros(144), np.zeros(10), np.array([0.9, np.nan, 0.0]))


def test_mean_params_from_annotations(tmp_path):
    """Per joint the mean rotation: identical rotations give that rotation's 6D, a pair (+a, -a) about
    one axis gives the identity; shape and cam are the row means; save -> from_npz is lossless."""
    aa = random_axis_angle(24, 9, max_angle=3.0)  # (24, 3), one rotation per joint
    same = MeanParams.from_annotations(aa.reshape(1, 72).expand(5, -1).numpy(), np.zeros((5, 10)), np.zeros((5, 3)))
    np.testing.assert_allclose(same.pose, rotmat_to_rot6d(axis_angle_to_rotmat(aa)).reshape(-1).numpy(), rtol=0, atol=1e-6)

    a = random_axis_angle(24, 10, max_angle=1.5).reshape(1, 72).numpy()
    g = np.random.default_rng(2)
    shape, cam = g.normal(size=(2, 10)), g.normal(size=(2, 3))
    pair = MeanParams.from_annotations(np.concatenate([a, -a]), shape, cam)
    np.testing.assert_allclose(pair.pose, np.tile([1.0, 0.0, 0.0, 1.0, 0.0, 0.0], 24), rtol=0, atol=1e-6)
    np.testing.assert_allclose(pair.shape, shape.mean(0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(pair.cam, cam.mean(0), rtol=1e-6, atol=1e-7)

    pair.save(tmp_path / "mean.npz")
    back = MeanParams.from_npz(tmp_path / "mean.npz")
    for key in ("pose", "shape", "cam"):
        np.testing.assert_array_equal(getattr(back, key), getattr(pair, key))


def test_models_built_from_one_mean_do_not_share_their_start():
    """Loading weights into one regressor changes neither the MeanParams it was built from nor
    another regressor built from the same MeanParams."""
    mean, _ = nontrivial_mean(4)
    before = mean.pose.copy()
    a, b = HMR(mean=mean, width_mult=0.25), HMR(mean=mean, width_mult=0.25)
    state = a.state_dict()
    state["head.init_pose"] = torch.zeros_like(state["head.init_pose"])
    a.load_state_dict(state)
    np.testing.assert_array_equal(mean.pose, before)
    np.testing.assert_array_equal(b.head.init_pose[0].numpy(), before)


# ---------------------------------------------------------------------------------------------------
# The crop's weak-perspective camera


@pytest.mark.parametrize("seed", range(4))
def test_crop_weak_perspective_is_exact_for_a_flat_body(seed):
    """For a body at one depth (z = 0 in its frame) the weak-perspective camera of a crop is exact:
    projecting x + transl with K (fx = fy, principal point away from the box centre) and normalising
    by the box, (u - center) / (100 scale), gives s (x + t_xy)."""
    g = np.random.default_rng(seed)
    f = g.uniform(1000, 1500)
    K = np.array([[f, 0, 960 + g.uniform(-40, 40)], [0, f, 540 + g.uniform(-40, 40)], [0, 0, 1.0]])
    center, scale = np.array([700.0, 420.0]) + g.uniform(-100, 100, 2), g.uniform(1.5, 3.0)
    transl = np.array([g.uniform(-1, 1), g.uniform(-1, 1), g.uniform(4, 12)])
    x = np.concatenate([g.uniform(-0.8, 0.8, (50, 2)), np.zeros((50, 1))], axis=1)  # flat body, metres

    s, tx, ty = crop_weak_perspective(K, transl, center, scale)
    uv = project(torch.as_tensor(x + transl), torch.as_tensor(K)).numpy()
    normalised = (uv - center) / (100.0 * scale)
    np.testing.assert_allclose(normalised, s * (x[:, :2] + np.array([tx, ty])), rtol=1e-9, atol=1e-12)


def test_mean_params_from_demo_datasets_average_the_rows_with_smpl(tmp_path):
    """MeanParams.from_datasets reads annotation files with per-row cameras (the demo world's) and averages
    the rows that have SMPL parameters: their poses, shapes and crop cameras."""
    from pipeline.camera import crop_weak_perspective

    rng = np.random.default_rng(3)
    n = 4
    K = np.array([[1200.0, 0, 310], [0, 1200.0, 250], [0, 0, 1]])
    arrays = {
        "imgname": np.array([f"im{i}.jpg" for i in range(n)]), "center": rng.uniform(200, 300, (n, 2)),
        "scale": rng.uniform(1.0, 2.0, n), "pose": rng.normal(0, 0.2, (n, 72)), "shape": rng.normal(0, 1, (n, 10)),
        "has_smpl": np.array([1.0, 1.0, 0.0, 1.0]), "part": np.zeros((n, 24, 3)), "openpose": np.zeros((n, 25, 3)),
        "S": np.zeros((n, 24, 4)), "cam_intrinsics": np.repeat(K[None], n, 0),
        "transl": np.column_stack([rng.normal(0, 0.3, (n, 2)), rng.uniform(3, 8, n)]),
    }
    path = tmp_path / "demo_train.npz"
    np.savez(path, **arrays)
    mean = MeanParams.from_datasets([path])
    rows = [0, 1, 3]
    np.testing.assert_allclose(mean.shape, arrays["shape"][rows].mean(0), rtol=1e-6)
    cams = [crop_weak_perspective(K, arrays["transl"][i], arrays["center"][i], arrays["scale"][i]) for i in rows]
    np.testing.assert_allclose(mean.cam, np.mean(cams, axis=0), rtol=1e-6)
    del arrays["transl"]
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="transl"):
        MeanParams.from_datasets([path])
