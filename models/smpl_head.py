"""The regressors' output layer, shared by HMR (SPIN/DSR) and PARE: predicted SMPL parameters and a
weak-perspective camera -> body mesh, 3D joints, camera translation and 2D joints in the crop frame.
Also the mean parameters the regressors start from.

Camera (pipeline.camera): focal length 5000 pixels at a 224 crop, scaled with the crop; translation
(tx, ty, 2 f / (res s)); 2D joints in normalised crop coordinates (-1 and +1 at the crop's edges), the
unit of the regressors' keypoint losses; `to_pixels` turns them into crop pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.rotations import axis_angle_to_rotmat, mean_rotation, rotmat_to_rot6d
from pipeline.body.model import BodyModel, BodyModelError, joints49
from pipeline.camera import (SPIN_CROP_RESOLUTION, SPIN_FOCAL_AT_224, crop_focal_length,
                             weak_perspective_to_translation)
from pipeline.skeleton import NUM_BETAS, NUM_SMPL_JOINTS


@dataclass
class Prediction:
    """What a regressor (HMR, PARE) predicts for a batch of crops."""
    rotmat: torch.Tensor  # (B, 24, 3, 3) joint rotations, root first
    betas: torch.Tensor  # (B, 10)
    cam: torch.Tensor  # (B, 3) weak perspective (s, tx, ty), normalised crop coordinates per metre
    pose6d: torch.Tensor  # (B, 24, 6) the raw 6D estimate (models.rotations layout)
    part_logits: torch.Tensor | None = None  # (B, 25, h, w) PARE: background + 24 parts, h = w = res / 4
    attention: torch.Tensor | None = None  # (B, 24, h, w) PARE: the pooling weights of each part (sum 1)


@dataclass
class RegressorOutput:
    vertices: torch.Tensor  # (B, V, 3) metres, body frame (add cam_t for the camera frame)
    joints: torch.Tensor  # (B, 49, 3) metres, body frame (skeleton.JOINTS49_NAMES)
    h36m_joints: torch.Tensor | None  # (B, 17, 3) metres, None when the body model has no H36M regressor
    cam_t: torch.Tensor  # (B, 3) metres, camera translation of the body frame
    joints2d: torch.Tensor  # (B, 49, 2) normalised crop coordinates in [-1, 1] (perspective projection)
    rotmat: torch.Tensor  # (B, 24, 3, 3)
    betas: torch.Tensor  # (B, 10)
    cam: torch.Tensor  # (B, 3) weak perspective (s, tx, ty)


class SMPLHead(nn.Module):
    """(rotmat (B, 24, 3, 3), betas (B, 10), cam (B, 3)) -> RegressorOutput.

    The body model is the project's BodyModel (SMPL files or the demo body); it must carry SPIN's extra
    joint regressor, since the 49 joints are the regressors' keypoint targets. Its buffers are not part
    of any regressor's weights: a regressor checkpoint never holds the licensed body model.
    """

    def __init__(self, body: BodyModel, resolution: int = SPIN_CROP_RESOLUTION,
                 focal_at_224: float = SPIN_FOCAL_AT_224):
        super().__init__()
        if body.J_regressor_extra is None:
            raise BodyModelError("the regressors' 49 joints need SPIN's extra joint regressor: set "
                                 "body.extra_regressor to J_regressor_extra.npy (from the SPIN data release)")
        self.body = body
        self.resolution = resolution
        self.focal_length = crop_focal_length(resolution, focal_at_224)

    def predict(self, pred: Prediction) -> RegressorOutput:
        return self(pred.rotmat, pred.betas, pred.cam)

    def forward(self, rotmat: torch.Tensor, betas: torch.Tensor, cam: torch.Tensor) -> RegressorOutput:
        out = self.body(betas=betas, rotmat=rotmat)
        joints = joints49(out)  # (B, 49, 3)
        cam_t = weak_perspective_to_translation(cam, self.focal_length, self.resolution)  # (B, 3)
        return RegressorOutput(vertices=out.vertices, joints=joints, h36m_joints=out.h36m_joints, cam_t=cam_t,
                               joints2d=self.project(joints, cam_t), rotmat=rotmat, betas=betas, cam=cam)

    def project(self, points: torch.Tensor, cam_t: torch.Tensor) -> torch.Tensor:
        """Perspective projection of body-frame points (B, N, 3) translated by cam_t (B, 3) -> (B, N, 2)
        normalised crop coordinates: f x / z / (res / 2)."""
        p = points + cam_t[:, None, :]
        return p[..., :2] / p[..., 2:3] * (2.0 * self.focal_length / self.resolution)

    def to_pixels(self, normalised: torch.Tensor) -> torch.Tensor:
        """Normalised crop coordinates -> crop pixels (pixel centres on integers, pipeline.camera)."""
        return (normalised + 1.0) * (self.resolution / 2.0) - 0.5


# ---------------------------------------------------------------------------------------------------
# Mean parameters


MEAN_PARAMS_SOURCE = ("SPIN's data/smpl_mean_params.npz (from SPIN's fetch_data.sh), or let the workflow compute "
                      "the demo body's mean parameters from its training annotations")


@dataclass
class MeanParams:
    """Where the regressors' estimates start: pose (144,) = 24 rotations in 6D (models.rotations
    layout), shape (10,), cam (3,) weak perspective."""
    pose: np.ndarray
    shape: np.ndarray
    cam: np.ndarray

    def __post_init__(self):
        for name, size in (("pose", 6 * NUM_SMPL_JOINTS), ("shape", NUM_BETAS), ("cam", 3)):
            value = np.array(getattr(self, name), dtype=np.float32).reshape(-1)  # a copy, not the caller's array
            if value.size != size or not np.isfinite(value).all():
                raise ValueError(f"mean parameters: {name} must be {size} finite numbers, got {value.size}"
                                 f"{'' if np.isfinite(value).all() else ' with non-finite values'}")
            setattr(self, name, value)

    @classmethod
    def from_npz(cls, path: str | Path) -> "MeanParams":
        """SPIN's smpl_mean_params.npz (keys pose, shape, cam), read without pickle."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"mean parameters not found: {path}; get {MEAN_PARAMS_SOURCE}")
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in ("pose", "shape", "cam") if k not in z.files]
                if missing:
                    raise ValueError(f"{path}: mean parameters file lacks {missing} (has {z.files}); expected "
                                     f"{MEAN_PARAMS_SOURCE}")
                return cls(z["pose"], z["shape"], z["cam"])
        except ValueError as e:
            if str(path) in str(e):
                raise
            raise ValueError(f"{path}: not a readable mean parameters .npz ({e}); expected {MEAN_PARAMS_SOURCE}") from None

    @classmethod
    def from_annotations(cls, pose: np.ndarray, shape: np.ndarray, cam: np.ndarray) -> "MeanParams":
        """The mean of training annotations (rows with SMPL only): pose (N, 72) axis-angle -> per joint
        the chordal mean rotation, shape (N, 10) -> the mean betas, cam (N, 3) -> the mean weak-perspective
        camera (pipeline.camera.crop_weak_perspective of each row)."""
        pose, shape, cam = (np.asarray(a, dtype=np.float64) for a in (pose, shape, cam))
        if len(pose) == 0 or not (len(pose) == len(shape) == len(cam)):
            raise ValueError(f"mean parameters need the same non-zero number of poses, shapes and cameras, got "
                             f"{len(pose)}, {len(shape)}, {len(cam)}")
        R = axis_angle_to_rotmat(torch.as_tensor(pose).reshape(len(pose), NUM_SMPL_JOINTS, 3))  # (N, 24, 3, 3)
        mean_pose = rotmat_to_rot6d(mean_rotation(R, dim=0)).reshape(-1)  # (144,)
        return cls(mean_pose.numpy(), shape.mean(0), cam.mean(0))

    @classmethod
    def from_datasets(cls, paths: list[str | Path]) -> "MeanParams":
        """The mean parameters of annotation files (pipeline.datasets format) whose rows carry the camera
        (cam_intrinsics, transl: the demo world writes them): every row with SMPL parameters counts.
        Real datasets lack the camera; use SPIN's smpl_mean_params.npz for them."""
        from pipeline.datasets import load_annotations

        pose, shape, cam = [], [], []
        for path in paths:
            ann = load_annotations(path)
            missing = [k for k in ("cam_intrinsics", "transl") if k not in ann]
            if missing:
                raise ValueError(f"{path}: mean parameters need each row's camera ({missing} missing); for real "
                                 f"datasets use {MEAN_PARAMS_SOURCE}")
            for kept, values in zip((pose, shape, cam), smpl_rows_with_cameras(ann, ann.has_smpl)):
                kept.append(values)
        if not sum(len(c) for c in cam):
            raise ValueError(f"no row with SMPL parameters in {[str(p) for p in paths]}: nothing to average")
        return cls.from_annotations(np.concatenate(pose), np.concatenate(shape), np.concatenate(cam))

    def save(self, path: str | Path) -> None:
        from pipeline.io import save_npz
        save_npz(path, {"pose": self.pose, "shape": self.shape, "cam": self.cam})

    @classmethod
    def identity(cls) -> "MeanParams":
        """Rest pose, zero shape, cam (0.9, 0, 0): a start for tests and for models whose buffers are
        about to be overwritten by a checkpoint."""
        eye = rotmat_to_rot6d(torch.eye(3).expand(NUM_SMPL_JOINTS, 3, 3)).reshape(-1).numpy()
        return cls(eye, np.zeros(NUM_BETAS), np.array([0.9, 0.0, 0.0]))

    def buffers(self) -> dict[str, torch.Tensor]:
        """The regressors' init_pose (1, 144), init_shape (1, 10) and init_cam (1, 3) buffers."""
        return {"init_pose": torch.tensor(self.pose)[None], "init_shape": torch.tensor(self.shape)[None],
                "init_cam": torch.tensor(self.cam)[None]}  # copies: each model owns its buffers


def smpl_rows_with_cameras(arrays, has_smpl: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pose (N, 72), shape (N, 10), weak-perspective crop camera (N, 3)) of the rows with SMPL parameters
    of an annotation table that carries each row's camera (pose, shape, cam_intrinsics, transl, center,
    scale: the demo world's), for MeanParams.from_annotations."""
    from pipeline.camera import crop_weak_perspective

    rows = np.flatnonzero(np.asarray(has_smpl) > 0.5)
    K, t, c, s = (np.asarray(arrays[k]) for k in ("cam_intrinsics", "transl", "center", "scale"))
    cam = np.array([crop_weak_perspective(K[i], t[i], c[i], s[i]) for i in rows]).reshape(len(rows), 3)
    return np.asarray(arrays["pose"])[rows], np.asarray(arrays["shape"])[rows], cam
