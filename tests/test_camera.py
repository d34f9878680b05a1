"""Camera math: the weak-perspective camera and its perspective equivalent, camera poses and rigs, the
translation estimated from 2D joints, and the crop's intrinsics."""

import numpy as np
import pytest
import torch

from pipeline.camera import (
    SPIN_FOCAL_AT_224,
    RigSettings,
    camera_rig,
    crop_focal_length,
    crop_intrinsics,
    estimate_translation,
    intrinsics,
    look_at,
    opencv_look_at,
    project,
    translation_to_weak_perspective,
    weak_perspective_to_translation,
)
from pipeline.crop import crop_matrix, transform_points

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def weak_cameras(n: int, seed: int = 0) -> torch.Tensor:
    """(n, 3) weak-perspective cameras (s, tx, ty) as the regressors predict them."""
    g = torch.Generator().manual_seed(seed)
    s = 0.5 + 0.6 * torch.rand(n, generator=g, dtype=torch.float64)
    return torch.cat([s[:, None], 0.3 * torch.randn(n, 2, generator=g, dtype=torch.float64)], dim=1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-10), (torch.float32, 1e-6)])  # 1e-10: the 1e-9 guard
def test_weak_perspective_round_trip(device, dtype, rtol):
    cam = weak_cameras(64).to(device=device, dtype=dtype).reshape(4, 16, 3)  # any leading shape
    t = weak_perspective_to_translation(cam)
    assert t.shape == cam.shape and t.device == cam.device and t.dtype == dtype
    torch.testing.assert_close(t[..., :2], cam[..., 1:], rtol=0, atol=0)
    torch.testing.assert_close(t[..., 2], 2 * SPIN_FOCAL_AT_224 / (224 * cam[..., 0]), rtol=rtol, atol=0)
    torch.testing.assert_close(translation_to_weak_perspective(t), cam, rtol=rtol, atol=0)
    back = weak_perspective_to_translation(translation_to_weak_perspective(t, 1000.0, 160), 1000.0, 160)
    torch.testing.assert_close(back, t, rtol=rtol, atol=0)


def test_weak_perspective_conversion_is_differentiable():
    cam = weak_cameras(5).requires_grad_()
    assert torch.autograd.gradcheck(weak_perspective_to_translation, (cam,))
    t = weak_perspective_to_translation(cam.detach()).requires_grad_()
    assert torch.autograd.gradcheck(translation_to_weak_perspective, (t,))


def test_translation_does_not_depend_on_the_crop_resolution_when_the_focal_length_scales_with_it():
    cam = weak_cameras(8)
    t224 = weak_perspective_to_translation(cam, crop_focal_length(224), 224)
    for res in (96, 256, 480):
        torch.testing.assert_close(weak_perspective_to_translation(cam, crop_focal_length(res), res), t224,
                                   rtol=1e-10, atol=0)  # the 1e-9 guard


@pytest.mark.parametrize("res", [224, 256])
def test_perspective_camera_projects_where_the_weak_perspective_camera_does(res):
    """Body points in view land at (s (X + tx) + 1) res / 2 - 0.5 (the normalised crop coordinate in
    pixels, pixel centres on integers), up to the perspective effect of their depth Z relative to the
    body: u - u_weak = -(u_weak - c) Z / (tz + Z), at most (res / 2) 0.1 / (tz - 0.1) for |Z| <= 10 cm, a
    third of a pixel at f = 5000 (tz >= 40 m); exactly there at Z = 0 (up to the 1e-9 guard)."""
    g = torch.Generator().manual_seed(1)
    cam = weak_cameras(16, seed=2)  # (B, 3)
    s, txy = cam[:, None, :1], cam[:, None, 1:]
    normalised = 2 * torch.rand(16, 30, 2, generator=g, dtype=torch.float64) - 1  # (B, N, 2) in the crop
    depth = 0.1 * (2 * torch.rand(16, 30, 1, generator=g, dtype=torch.float64) - 1)  # (B, N, 1) metres
    points = torch.cat([normalised / s - txy, depth], dim=2)  # (B, N, 3) metres, body frame
    f = crop_focal_length(res)
    t = weak_perspective_to_translation(cam, f, res)  # (B, 3)
    K = torch.as_tensor(intrinsics(f, res))

    weak = (s * (points[..., :2] + txy) + 1) * res / 2 - 0.5  # (B, N, 2) pixels
    uv = project(points + t[:, None, :], K)
    c = (res - 1) / 2
    exact_error = -(weak - c) * depth / (t[:, None, 2:] + depth)
    torch.testing.assert_close(uv - weak, exact_error, rtol=0, atol=1e-8)
    bound = (res / 2) * 0.1 / (t[:, 2].min() - 0.1)
    assert bound < 0.35
    assert (uv - weak).abs().max() <= bound
    on_plane = project(torch.cat([points[..., :2], torch.zeros_like(depth)], -1) + t[:, None, :], K)
    torch.testing.assert_close(on_plane, weak, rtol=0, atol=1e-8)


def test_intrinsics_match_the_crop_convention():
    K = intrinsics(crop_focal_length(256), 256)
    np.testing.assert_array_equal(K, [[5000.0 * 256 / 224, 0, 127.5], [0, 5000.0 * 256 / 224, 127.5], [0, 0, 1]])
    uv = project(torch.tensor([[0.0, 0.0, 7.0]], dtype=torch.float64), torch.as_tensor(K))
    np.testing.assert_array_equal(uv.numpy(), [[127.5, 127.5]])  # the optical axis hits the crop centre


def random_views(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        eye = rng.normal(0, 3, 3)
        target = rng.normal(0, 1, 3)
        yield eye, target


def assert_rotation(R):
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-12)


def test_opencv_look_at_puts_the_target_on_the_optical_axis():
    for eye, target in random_views(20):
        R, t = opencv_look_at(eye, target)
        assert_rotation(R)
        np.testing.assert_allclose(R @ eye + t, 0, atol=1e-12)  # the camera sits at the eye
        x = R @ target + t
        np.testing.assert_allclose(x[:2], 0, atol=1e-12)
        assert x[2] == pytest.approx(np.linalg.norm(target - eye))  # in front (+z)
        above = R @ (target + [0, 1.0, 0]) + t
        assert above[1] < 0  # world up is image up (y down)


def test_look_at_puts_the_target_on_the_optical_axis():
    for eye, target in random_views(20):
        pose = look_at(eye, target)
        assert_rotation(pose[:3, :3])
        np.testing.assert_array_equal(pose[3], [0, 0, 0, 1])
        np.testing.assert_allclose(pose[:3, 3], eye)
        x = pose[:3, :3].T @ (target - eye)  # world -> camera (OpenGL)
        np.testing.assert_allclose(x[:2], 0, atol=1e-12)
        assert x[2] == pytest.approx(-np.linalg.norm(target - eye))  # in front (-z)
        assert (pose[:3, :3].T @ [0, 1.0, 0])[1] > 0  # world up is image up (y up)


def test_the_two_look_ats_are_the_same_camera():
    """OpenGL's camera axes are OpenCV's with y and z negated."""
    for eye, target in random_views(5, seed=3):
        R, t = opencv_look_at(eye, target)
        pose = look_at(eye, target)
        np.testing.assert_allclose(pose[:3, :3].T, np.diag([1.0, -1.0, -1.0]) @ R, atol=1e-12)


def test_every_rig_camera_looks_at_the_centre():
    center, extent = np.array([0.3, 0.9, -0.2]), 1.7
    rig = RigSettings(views=7, resolution=300)
    views = camera_rig(center, extent, np.random.default_rng(0), rig)
    assert len(views) == 7
    eyes = []
    for v in views:
        K, R, t = (np.asarray(v[k]) for k in ("K", "R", "t"))
        assert (v["width"], v["height"]) == (300, 300)
        assert_rotation(R)
        x = R @ center + t
        np.testing.assert_allclose(x[:2], 0, atol=1e-12)
        assert x[2] == pytest.approx(rig.distance)
        np.testing.assert_allclose(K @ x / x[2], [149.5, 149.5, 1])  # the centre at the image centre
        assert extent * K[0, 0] / rig.distance == pytest.approx(rig.fill * 300)  # the scan spans `fill`
        eyes.append(-R.T @ t)
    eyes = np.array(eyes) - center
    np.testing.assert_allclose(np.arcsin(eyes[:, 1] / rig.distance), np.deg2rad(rig.elevation_deg))
    azimuths = np.sort(np.arctan2(eyes[:, 0], eyes[:, 2]) % (2 * np.pi))
    np.testing.assert_allclose(np.diff(azimuths), 2 * np.pi / 7)  # evenly around


def test_rig_defaults_are_the_schema_defaults():
    from pipeline.config import schema_defaults

    rig = RigSettings()
    for section in (("prior", "rig"), ("world", "scans")):
        d = schema_defaults(*section)
        assert (rig.views, rig.elevation_deg, rig.distance, rig.resolution) == \
            (d["views"], d["elevation_deg"], d["distance"], d["resolution"])


def test_estimate_translation_recovers_a_known_translation():
    rng = np.random.default_rng(4)
    joints = rng.normal(0, 0.3, (49, 3))
    K = intrinsics(crop_focal_length(224), 224)
    for t_true in ([0.05, -0.2, 40.0], [-0.3, 0.4, 12.0], [0.0, 0.0, 80.0]):
        cam = joints + t_true
        keypoints = np.c_[cam[:, :2] / cam[:, 2:] * K[0, 0] + K[:2, 2], rng.uniform(0.2, 1.0, 49)]
        np.testing.assert_allclose(estimate_translation(joints, keypoints, K[0, 0], K[:2, 2]), t_true, rtol=1e-9, atol=1e-9)


def test_crop_intrinsics_project_to_the_crop_pixel():
    rng = np.random.default_rng(5)
    K = np.array([[1100.0, 0, 640.3], [0, 1080.0, 359.6], [0, 0, 1]])
    points = rng.normal(0, 0.5, (40, 3)) + [0, 0, 6.0]
    full = project(torch.as_tensor(points), torch.as_tensor(K)).numpy()
    for center, scale, res in (((600.0, 400.0), 2.4, 224), ((700.5, 300.2), 1.1, 256)):
        crop = project(torch.as_tensor(points), torch.as_tensor(crop_intrinsics(K, center, scale, res))).numpy()
        np.testing.assert_allclose(crop, transform_points(full, crop_matrix(center, scale, res)), atol=1e-9)
