"""Camera math, in one place: intrinsics, projection, the regressors' weak-perspective camera, camera
poses and rigs, and the translation estimated from 2D joints.

Conventions (those of SPIN, PARE and DSR):
- camera frame: OpenCV's (x right, y down, z forward, metres), x_cam = R x_world + t; only `look_at`
  returns a pose in OpenGL's convention (camera looking down -z), for pyrender;
- pixels: pixel (row i, column j) is the point (x=j, y=i), so pixel centres sit on integers and the
  centre of a crop of `res` pixels is (res - 1) / 2 (pipeline.crop);
- intrinsics K (3, 3) map camera points to pixels: u = K[0, 0] x / z + K[0, 2], v = K[1, 1] y / z + K[1, 2].

The regressors (SPIN, PARE, DSR) predict a weak-perspective camera (s, tx, ty) in the crop frame: a body
point (X, Y) lands at s (X + tx), s (Y + ty) in normalised crop coordinates (-1 and +1 at the crop's
edges). Its perspective equivalent is a pinhole of focal length f at the crop resolution with the
translation (tx, ty, 2 f / (res s)): the depth at which f / tz equals res s / 2 pixels per metre.
The focal length is 5000 pixels at a 224-pixel crop and scales with the crop (f = 5000 * res / 224,
`crop_focal_length`), so the translation does not depend on the crop resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.config import schema_defaults
from pipeline.crop import crop_matrix

SPIN_FOCAL_AT_224 = 5000.0  # pixels, at a 224-pixel crop (SPIN, PARE, DSR)
SPIN_CROP_RESOLUTION = 224  # pixels
RIG_DEFAULTS = schema_defaults("prior", "rig")  # the config schema's prior.rig (world.scans has the same numbers)


# ---------------------------------------------------------------------------------------------------
# Intrinsics and projection
# ---------------------------------------------------------------------------------------------------

def crop_focal_length(resolution: int, focal_at_224: float = SPIN_FOCAL_AT_224) -> float:
    """The regressors' focal length (pixels) at a crop of `resolution` pixels."""
    return focal_at_224 * resolution / float(SPIN_CROP_RESOLUTION)


def intrinsics(focal_length: float, resolution: int) -> np.ndarray:
    """(3, 3) intrinsics of a square crop of `resolution` pixels: focal length in pixels (at this
    resolution), principal point at the crop centre (res - 1) / 2.

    With `weak_perspective_to_translation` this is the regressors' perspective camera, and SPIN's
    `perspective_projection(points, R, t, f, c)` is `project(points @ R.mT + t[:, None, :], K)` with
    K = torch.as_tensor(intrinsics(f, res), dtype=points.dtype, device=points.device) (R omitted when
    None). SPIN writes the principal point as res / 2, counting pixels from the crop's edge; with pixel
    centres on integers, as here, the crop centre is (res - 1) / 2, so the normalised weak-perspective
    coordinate x lands at pixel (x + 1) res / 2 - 0.5.
    """
    c = (resolution - 1) / 2.0
    return np.array([[focal_length, 0, c], [0, focal_length, c], [0, 0, 1.0]])


def crop_intrinsics(K: np.ndarray, center, scale: float, res: int) -> np.ndarray:
    """Intrinsics of the camera that renders the crop (pipeline.crop) of an image of intrinsics K directly."""
    return crop_matrix(center, scale, res) @ np.asarray(K, dtype=np.float64)


def supersampled_intrinsics(K, ss: int) -> np.ndarray:
    """Intrinsics rendering at `ss` times the resolution with the same pixel centres: a pixel x at the
    original size sits at ss * x + (ss - 1) / 2 (so box-filtering ss x ss blocks gives the original grid)."""
    K_ss = np.array(K, dtype=np.float64)
    K_ss[:2] *= ss
    K_ss[:2, 2] += (ss - 1) / 2.0
    return K_ss


def project(points: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Pinhole projection of camera-frame points (..., 3) with intrinsics K (3, 3) tensor -> pixels (..., 2)."""
    z = points[..., 2:3]
    return (points[..., :2] / z) * torch.stack([K[0, 0], K[1, 1]]) + torch.stack([K[0, 2], K[1, 2]])


# ---------------------------------------------------------------------------------------------------
# The regressors' weak-perspective camera
# ---------------------------------------------------------------------------------------------------

def weak_perspective_to_translation(cam: torch.Tensor, focal_length: float = SPIN_FOCAL_AT_224,
                                    resolution: int = SPIN_CROP_RESOLUTION) -> torch.Tensor:
    """Weak-perspective camera (..., 3) = (s, tx, ty) -> camera translation (..., 3) in metres:
    (tx, ty, 2 f / (res s + 1e-9)).

    s is the scale from metres to normalised crop coordinates ([-1, 1] across the crop), tx and ty
    metres in the body's frame; `focal_length` is in pixels at a crop of `resolution` pixels (5000 at
    224; scale both together and the translation stays the same). Batched and differentiable, on the
    device and in the dtype of `cam`.
    """
    s, tx, ty = cam.unbind(-1)
    return torch.stack([tx, ty, 2 * focal_length / (resolution * s + 1e-9)], dim=-1)


def translation_to_weak_perspective(translation: torch.Tensor, focal_length: float = SPIN_FOCAL_AT_224,
                                    resolution: int = SPIN_CROP_RESOLUTION) -> torch.Tensor:
    """Camera translation (..., 3) in metres -> weak-perspective camera (..., 3) = (s, tx, ty), with
    s = 2 f / (res tz + 1e-9): the inverse of `weak_perspective_to_translation` (same units)."""
    tx, ty, tz = translation.unbind(-1)
    return torch.stack([2 * focal_length / (resolution * tz + 1e-9), tx, ty], dim=-1)


def crop_weak_perspective(K: np.ndarray, transl: np.ndarray, center, scale: float) -> np.ndarray:
    """The weak-perspective camera (s, tx, ty) under which a body at camera-frame translation `transl`
    (metres; the body's points are x + transl), seen by a camera of intrinsics K, appears in the crop of
    box `center` (pixels) and `scale` (box side / 200): s = f / (100 scale tz), and (tx, ty) moves the
    box centre onto the principal ray, (tx, ty) = transl_xy + (principal point - center) tz / f.
    First order in the body's depth extent; the regressors' mean camera is built from it."""
    f = 0.5 * (float(K[0, 0]) + float(K[1, 1]))
    tz = float(transl[2])
    offset = (np.asarray([K[0, 2], K[1, 2]], dtype=np.float64) - np.asarray(center, dtype=np.float64)) * tz / f
    return np.array([f / (100.0 * scale * tz), transl[0] + offset[0], transl[1] + offset[1]])


# ---------------------------------------------------------------------------------------------------
# Camera poses and rigs
# ---------------------------------------------------------------------------------------------------

def opencv_look_at(eye: np.ndarray, target: np.ndarray, up=(0.0, 1.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """(R, t) of an OpenCV camera at `eye` looking at `target`: x_cam = R x_world + t."""
    forward = target - eye
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])
    return R, -R @ eye


def look_at(eye: np.ndarray, target: np.ndarray, up=(0.0, 1.0, 0.0)) -> np.ndarray:
    """4x4 camera-to-world pose (OpenGL convention, for pyrender: the camera looks down its -z axis)."""
    forward = np.asarray(target, float) - np.asarray(eye, float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    true_up = np.cross(right, forward)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, true_up, -forward, eye
    return pose


def camera_z_rotation(degrees: float) -> np.ndarray:
    """The 3D rotation about the camera's optical axis that turns the image by `degrees` (image x
    right, y down; positive turns +x towards +y)."""
    a = math.radians(degrees)
    return np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])


@dataclass
class RigSettings:
    """Cameras evenly around a scan; defaults from the config schema's prior.rig."""

    views: int = RIG_DEFAULTS["views"]
    elevation_deg: float = RIG_DEFAULTS["elevation_deg"]
    distance: float = RIG_DEFAULTS["distance"]  # metres from the body centre
    resolution: int = RIG_DEFAULTS["resolution"]  # square view side, pixels
    fill: float = 0.8  # share of the image the scan's larger extent (height or width) spans


def camera_rig(center: np.ndarray, extent: float, rng: np.random.Generator, rig: RigSettings) -> list[dict]:
    """K views around `center` at the rig's distance and elevation; the focal length makes a scan of
    `extent` metres (its larger side) span `rig.fill` of the image. Each view: K, R, t (x_cam = R x_world
    + t, OpenCV), width, height, as lists (the cameras/<scan>.json format)."""
    K = intrinsics(rig.resolution * rig.fill * rig.distance / extent, rig.resolution)
    offset = rng.uniform(0, 2 * np.pi)
    elevation = np.deg2rad(rig.elevation_deg)
    views = []
    for k in range(rig.views):
        azimuth = offset + 2 * np.pi * k / rig.views
        eye = center + rig.distance * np.array([np.cos(elevation) * np.sin(azimuth), np.sin(elevation), np.cos(elevation) * np.cos(azimuth)])
        R, t = opencv_look_at(eye, center)
        views.append({"K": K.tolist(), "R": R.tolist(), "t": t.tolist(), "width": rig.resolution, "height": rig.resolution})
    return views


# ---------------------------------------------------------------------------------------------------
# Translation from 2D joints
# ---------------------------------------------------------------------------------------------------

def estimate_translation(joints: np.ndarray, keypoints: np.ndarray, focal: float, center, min_joints: int = 4) -> np.ndarray | None:
    """Camera translation t that best projects `joints` (J, 3; camera orientation, metres) onto
    `keypoints` (J, 3: pixels and confidence) with a pinhole of `focal` and principal point `center`.

    Each joint gives two equations linear in t, f (X + tx) = u (Z + tz) and f (Y + ty) = v (Z + tz)
    with (u, v) the keypoint relative to the centre, weighted by the square root of its confidence.
    Returns None with fewer than `min_joints` confident joints or when the solution is behind the camera.
    """
    conf = keypoints[:, 2]
    good = conf > 0
    if good.sum() < min_joints:
        return None
    X, Y, Z = joints[good].T
    u = keypoints[good, 0] - center[0]
    v = keypoints[good, 1] - center[1]
    w = np.sqrt(conf[good])
    zeros, f = np.zeros_like(u), np.full_like(u, focal)
    a = np.concatenate([np.stack([f, zeros, -u], 1), np.stack([zeros, f, -v], 1)]) * np.concatenate([w, w])[:, None]
    b = np.concatenate([u * Z - focal * X, v * Z - focal * Y]) * np.concatenate([w, w])
    t, *_ = np.linalg.lstsq(a, b, rcond=None)
    if t[2] + Z.min() <= 0:
        return None
    return t
