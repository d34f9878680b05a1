"""Dataset annotations in the format the field uses (SPIN/EFT/PARE `.npz`), and OpenPose and box files.

One reader serves real datasets and the demo world alike. Keys, per row:

    imgname   str       image path relative to the dataset's image root
    center    (2,)      person box centre, pixels
    scale     ()        box side / 200
    pose      (72,)     SMPL axis-angle, root first        (optional; with has_smpl)
    shape     (10,)     SMPL betas                          (optional; with has_smpl)
    has_smpl  ()        1 where pose/shape are valid        (absent: no row has SMPL)
    S         (24, 4)   3D ground-truth joints, metres, + confidence            (optional)
    part      (24, 3)   2D ground-truth joints, pixels, + visibility            (optional)
    openpose  (25, 3)   OpenPose BODY_25 detections, pixels, + confidence       (optional)
    gender    ()        'm', 'f' or 'n'                                         (optional)
    cam_intrinsics (3, 3), transl (3,)   the camera and SMPL translation in it, where the dataset
                        knows them (the demo world, 3DPW); otherwise stages estimate a camera.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.crop import bbox_to_center_scale
from pipeline.skeleton import NUM_BETAS, NUM_GT_JOINTS, NUM_OPENPOSE_JOINTS, SMPL_POSE_SIZE

ROW_SHAPES = {
    "center": (2,), "scale": (), "pose": (SMPL_POSE_SIZE,), "shape": (NUM_BETAS,), "has_smpl": (), "S": (NUM_GT_JOINTS, 4),
    "part": (NUM_GT_JOINTS, 3), "openpose": (NUM_OPENPOSE_JOINTS, 3), "gender": (), "cam_intrinsics": (3, 3), "transl": (3,),
}
REQUIRED = ("imgname", "center", "scale")
# Keypoint arrays: a joint that is not there has confidence 0 (OpenPose, SPIN, EFT), never NaN, so a
# non-finite value means a damaged file, not a missing joint.
KEYPOINT_KEYS = ("openpose", "part", "S")


class AnnotationError(ValueError):
    """An annotation file, or one of its rows, is unusable; the message names the dataset, file and row."""


@dataclass
class Annotations:
    name: str
    path: Path
    image_root: Path
    arrays: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.arrays["imgname"])

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def __contains__(self, key: str) -> bool:
        return key in self.arrays

    @property
    def has_smpl(self) -> np.ndarray:
        if "has_smpl" not in self.arrays:
            return np.zeros(len(self), dtype=bool)
        return self.arrays["has_smpl"] > 0.5

    def image_path(self, index: int) -> Path:
        return self.image_root / str(self.arrays["imgname"][index])

    def crop(self, index: int, resolution: int) -> np.ndarray:
        """The row's photo (RGB uint8) resampled into its crop frame at `resolution` pixels."""
        from PIL import Image

        from pipeline.crop import crop_matrix, warp

        photo = np.asarray(Image.open(self.image_path(index)).convert("RGB"))
        matrix = crop_matrix(self.arrays["center"][index], self.arrays["scale"][index], resolution)
        return warp(photo, matrix, (resolution, resolution), nearest=False)

    def require_rows(self, indices: range) -> None:
        """A shard's row range must lie inside the file."""
        if indices.stop > len(self):
            raise ValueError(f"dataset {self.name} ({self.path}) has {len(self)} rows; shard asks for rows up to {indices.stop - 1}")

    def error(self, index: int, message: str) -> AnnotationError:
        return AnnotationError(f"dataset {self.name} ({self.path}), row {index} ({self.arrays['imgname'][index]}): {message}")

    def check_row(self, index: int, need_smpl: bool = False) -> None:
        """Raise an AnnotationError naming the dataset and row if the row cannot be used."""
        a = self.arrays
        if not np.isfinite(a["center"][index]).all():
            raise self.error(index, f"center is not finite ({a['center'][index]})")
        if not (np.isfinite(a["scale"][index]) and a["scale"][index] > 0):
            raise self.error(index, f"scale must be a positive number, got {a['scale'][index]}")
        for key in KEYPOINT_KEYS:
            if key in a and not np.isfinite(a[key][index]).all():
                joints = np.flatnonzero(~np.isfinite(a[key][index]).all(axis=-1)).tolist()
                raise self.error(index, f"{key} has non-finite values (NaN or inf) at joints {joints}; keypoint files mark a "
                                        "missing joint with confidence 0, never NaN, so the annotation file is damaged: "
                                        "regenerate it, or set those joints to 0 (x, y and confidence)")
        if need_smpl and self.has_smpl[index]:
            for key in ("pose", "shape", *(k for k in ("transl", "cam_intrinsics") if k in a)):
                if key in a and not np.isfinite(a[key][index]).all():
                    raise self.error(index, f"{key} has non-finite values although has_smpl = 1")
            if "pose" not in a or "shape" not in a:
                raise self.error(index, "has_smpl = 1 but the file has no pose/shape arrays")

    def require_some_image(self, indices: range) -> None:
        """Some missing photos are recorded skips; rows none of whose photo exists mean a wrong images folder."""
        if len(indices) and not any(self.image_path(i).is_file() for i in indices):
            raise AnnotationError(
                f"dataset {self.name} ({self.path}): none of the images of rows {indices.start}-{indices.stop - 1} exists "
                f"under the images root {self.image_root} (e.g. {self.image_path(indices.start)}): check "
                f"datasets.{self.name}.images in the config, the folder the file's imgname entries are relative to")

    def rows(self, start: int, stop: int) -> dict[str, np.ndarray]:
        return {k: v[start:stop] for k, v in self.arrays.items()}


def load_annotations(path: str | Path, image_root: str | Path | None = None, name: str | None = None) -> Annotations:
    """Read and check a SPIN/EFT-format `.npz`. `image_root` defaults to the file's folder."""
    path = Path(path)
    name = name or path.stem
    if not path.is_file():
        raise AnnotationError(f"dataset {name}: annotation file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as e:
        raise AnnotationError(
            f"dataset {name} ({path}): cannot read without pickle ({e}); re-save it with plain arrays "
            "(strings as numpy unicode arrays)"
        ) from e
    except (OSError, EOFError) as e:
        raise AnnotationError(f"dataset {name} ({path}): not a readable .npz file ({e})") from e
    missing = [k for k in REQUIRED if k not in arrays]
    if missing:
        raise AnnotationError(f"dataset {name} ({path}): missing required keys {missing}")
    n = len(arrays["imgname"])
    for key, shape in ROW_SHAPES.items():
        if key in arrays and arrays[key].shape != (n, *shape):
            raise AnnotationError(f"dataset {name} ({path}): '{key}' has shape {arrays[key].shape}, expected {(n, *shape)}")
    arrays["imgname"] = arrays["imgname"].astype(str)
    ann = Annotations(name, path, Path(image_root) if image_root is not None else path.parent, arrays)
    # every shard job loads the whole file: find a bad row with array operations, report it with check_row
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(arrays["center"]).all(axis=1) | ~(np.isfinite(arrays["scale"]) & (arrays["scale"] > 0))
        for key in KEYPOINT_KEYS:
            if key in arrays:
                bad |= ~np.isfinite(arrays[key]).reshape(n, -1).all(axis=1)
    if bad.any():
        ann.check_row(int(np.flatnonzero(bad)[0]))
    return ann


def read_openpose_json(path: str | Path) -> np.ndarray:
    """OpenPose BODY_25 output -> (people, 25, 3) pixels + confidence."""
    path = Path(path)
    with open(path) as f:
        data = json.load(f)
    people = data.get("people")
    if people is None:
        raise AnnotationError(f"{path}: not an OpenPose output file (no 'people' list)")
    out = np.zeros((len(people), NUM_OPENPOSE_JOINTS, 3))
    for i, person in enumerate(people):
        kp = np.asarray(person.get("pose_keypoints_2d", []), dtype=np.float64)
        if kp.size != 3 * NUM_OPENPOSE_JOINTS:
            raise AnnotationError(f"{path}: person {i} has {kp.size} pose values, expected 75 (BODY_25 x, y, confidence)")
        out[i] = kp.reshape(NUM_OPENPOSE_JOINTS, 3)
    return out


def read_bbox_json(path: str | Path, rescale: float = 1.2) -> tuple[np.ndarray, float]:
    """A person box file {"bbox": [x, y, w, h]} -> (center, scale), SPIN's convention."""
    with open(path) as f:
        box = json.load(f)["bbox"]
    return bbox_to_center_scale(box, rescale)


def keypoints_center_scale(keypoints: np.ndarray, threshold: float = 0.0, rescale: float = 1.2) -> tuple[np.ndarray, float]:
    """Box of the confident keypoints (J, 3) -> (center, scale), as SPIN does for images without a box."""
    good = keypoints[:, 2] > threshold
    if not good.any():
        raise AnnotationError("no keypoint above the confidence threshold: cannot place a person box")
    lo, hi = keypoints[good, :2].min(0), keypoints[good, :2].max(0)
    return bbox_to_center_scale([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]], rescale)
