"""The evaluation benchmarks of PARE and DSR, read from their SPIN/PARE `.npz` annotation files.

Each benchmark kind fixes three things: which rows of the file are scored (a subset of the sequences or
frames), where the ground truth comes from, and the joint protocol (trainers.pose_metrics):

    kind          rows scored                                              truth  joints
    3dpw          all rows (3dpw_test.npz; 3dpw_all.npz for "all")         SMPL   LSP-14, PVE
    3dpw_occ      rows of the 17 occluded sequences PARE uses (3DPW-OCC)   SMPL   LSP-14, PVE
    3doh          all rows (3doh_test.npz)                                  SMPL   LSP-14, PVE
    h36m_p2       S9 and S11, camera 60457274, every 5th frame (protocol 2) S      LSP-14
    mpi_inf_3dhp  all rows (mpi_inf_3dhp_test.npz)                          S      MPI-17, PCK, AUC
    demo          all rows (the demo world's test and occluded splits)      SMPL   LSP-14, PVE

SMPL truth is the body model on the row's pose and shape: the neutral body, or with `gender: gendered`
the row's own ('m', 'f'; 'n' or no gender column: neutral), as DSR's evaluation (PARE's used neutral).
S truth is the dataset's 24 ground-truth joints (SPIN's `S`, metres). A row that cannot be scored (no
SMPL parameters, missing S joints, a photo that is missing or unreadable) is a recorded skip with its
reason, never a zero.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.crop import crop_matrix, warp
from pipeline.datasets import Annotations, load_annotations
from trainers.pose_metrics import J24_TO_J17


@dataclass(frozen=True)
class Kind:
    truth: str  # "smpl" or "S"
    joints: str  # "lsp14" or "mpi17"
    subset: str | None = None  # a row filter of ROW_FILTERS


KINDS = {
    "3dpw": Kind("smpl", "lsp14"),
    "3dpw_occ": Kind("smpl", "lsp14", "3dpw_occ"),
    "3doh": Kind("smpl", "lsp14"),
    "h36m_p2": Kind("S", "lsp14", "h36m_p2"),
    "mpi_inf_3dhp": Kind("S", "mpi17"),
    "demo": Kind("smpl", "lsp14"),
}
GENDERS = ("neutral", "gendered")

# 3DPW-OCC: the sequences of 3DPW with occlusion that PARE evaluates on (after Zhang et al., "Object-
# Occluded Human Shape and Pose Estimation from a Single Color Image", CVPR 2020), by sequence name
# without its _NN take number
PW3D_OCCLUDED_SEQUENCES = frozenset({
    "courtyard_backpack", "courtyard_basketball", "courtyard_bodyScannerMotions", "courtyard_box", "courtyard_golf",
    "courtyard_jacket", "courtyard_laceShoe", "downtown_stairs", "flat_guitar", "flat_packBags", "outdoors_climbing",
    "outdoors_crosscountry", "outdoors_fencing", "outdoors_freestyle", "outdoors_golf", "outdoors_parcours",
    "outdoors_slalom",
})
# Human3.6M protocol 2 (SPIN's preprocessing): subjects 9 and 11, the frontal camera, every 5th frame;
# image names are <subject>_<action>.<camera>_<frame, 1-based, 6 digits>.jpg
H36M_P2_SUBJECTS = frozenset({"S9", "S11"})
H36M_P2_CAMERA = "60457274"
_H36M_NAME = re.compile(r"^(S\d+)_(.+)\.(\d+)_(\d+)\.\w+$")


def pw3d_sequence(imgname: str) -> str:
    """'imageFiles/courtyard_backpack_00/image_00000.jpg' -> 'courtyard_backpack' (the take number dropped)."""
    folder = Path(str(imgname)).parent.name
    base, sep, take = folder.rpartition("_")
    return base if sep and take.isdigit() else folder


def _filter_3dpw_occ(imgnames: np.ndarray) -> tuple[np.ndarray, str]:
    keep = np.array([pw3d_sequence(n) in PW3D_OCCLUDED_SEQUENCES for n in imgnames], dtype=bool)
    return keep, "not one of 3DPW-OCC's 17 occluded sequences"


def _filter_h36m_p2(imgnames: np.ndarray) -> tuple[np.ndarray, str]:
    keep = np.zeros(len(imgnames), dtype=bool)
    for i, name in enumerate(imgnames):
        m = _H36M_NAME.match(Path(str(name)).name)
        if m is None:
            raise ValueError(f"Human3.6M image name {name!r} is not <subject>_<action>.<camera>_<frame>.jpg (SPIN's "
                             f"preprocessing): protocol 2 cannot tell its subject, camera and frame")
        subject, _, camera, frame = m.groups()
        keep[i] = subject in H36M_P2_SUBJECTS and camera == H36M_P2_CAMERA and (int(frame) - 1) % 5 == 0
    return keep, "not protocol 2 (S9/S11, camera 60457274, every 5th frame)"


ROW_FILTERS = {"3dpw_occ": _filter_3dpw_occ, "h36m_p2": _filter_h36m_p2}


@dataclass
class BenchmarkRows:
    """The rows of an annotation file a benchmark scores, and the ones it skips with their reasons."""

    annotations: Annotations
    kind: Kind
    rows: np.ndarray  # row indices scored (a photo may still turn out unreadable: see EvalImages)
    outside: int  # rows outside the benchmark's subset (not skips: they are not part of it)
    skipped: dict[int, str]  # row -> reason

    @property
    def imgnames(self) -> np.ndarray:
        return self.annotations["imgname"]


def select_rows(annotations: Annotations, kind: str) -> BenchmarkRows:
    """The rows of `annotations` that benchmark `kind` scores; rows that lack its ground truth are skips."""
    if kind not in KINDS:
        raise ValueError(f"unknown benchmark kind {kind!r}; known: {', '.join(KINDS)}")
    spec = KINDS[kind]
    n = len(annotations)
    inside = np.ones(n, dtype=bool)
    if spec.subset is not None:
        inside, _ = ROW_FILTERS[spec.subset](annotations["imgname"])
    skipped: dict[int, str] = {}
    if spec.truth == "smpl":
        if "pose" not in annotations or "shape" not in annotations:
            raise ValueError(f"{annotations.path}: benchmark kind {kind} scores against SMPL parameters, and the file has "
                             f"no pose/shape arrays: use the SPIN/PARE release of this benchmark, or kind h36m_p2 / "
                             f"mpi_inf_3dhp for files with S joints")
        has = annotations.has_smpl if "has_smpl" in annotations else np.ones(n, dtype=bool)
        for i in np.flatnonzero(inside & ~has):
            skipped[int(i)] = "no SMPL parameters (has_smpl 0)"
    else:
        if "S" not in annotations:
            raise ValueError(f"{annotations.path}: benchmark kind {kind} scores against the 3D joints S (24 x 4), and the "
                             f"file has none: use the SPIN release of this benchmark")
        needed = list(J24_TO_J17)
        conf = np.asarray(annotations["S"])[:, needed, 3]
        for i in np.flatnonzero(inside & (conf <= 0).any(1)):
            skipped[int(i)] = "S lacks some of the scored joints (confidence 0)"
    rows = np.array([i for i in np.flatnonzero(inside) if int(i) not in skipped], dtype=np.int64)
    return BenchmarkRows(annotations, spec, rows, int((~inside).sum()), skipped)


def load_benchmark(annotations_file: str | Path, images: str | Path, kind: str, name: str | None = None) -> BenchmarkRows:
    return select_rows(load_annotations(annotations_file, image_root=images, name=name), kind)


class EvalImages(torch.utils.data.Dataset):
    """The scored rows' crops at the network's resolution (the row's box, no augmentation), uint8
    (3, R, R), with the row index; a photo that cannot be read gives `ok` False and the reason."""

    def __init__(self, bench: BenchmarkRows, resolution: int):
        self.bench, self.resolution = bench, resolution

    def __len__(self) -> int:
        return len(self.bench.rows)

    def __getitem__(self, k: int) -> dict:
        from pipeline.io import load_image

        ann, row, res = self.bench.annotations, int(self.bench.rows[k]), self.resolution
        photo, problem, _ = load_image(ann.image_path(row))
        if photo is None:
            crop = np.zeros((res, res, 3), np.uint8)
        else:
            crop = warp(photo, crop_matrix(ann["center"][row], ann["scale"][row], res), (res, res), nearest=False)
        return {"image": torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))), "row": row,
                "ok": photo is not None, "problem": problem}


def collate(items: list[dict]) -> dict:
    return {"image": torch.stack([it["image"] for it in items]), "row": torch.tensor([it["row"] for it in items]),
            "ok": torch.tensor([it["ok"] for it in items]), "problem": [it["problem"] for it in items]}


def row_genders(annotations: Annotations, rows: np.ndarray, mode: str) -> np.ndarray:
    """Per scored row: 'neutral', 'male' or 'female' (the body its SMPL truth is computed with)."""
    if mode not in GENDERS:
        raise ValueError(f"evaluation gender {mode!r}: neutral or gendered")
    if mode == "neutral" or "gender" not in annotations:
        return np.full(len(rows), "neutral", dtype=object)
    names = {"m": "male", "male": "male", "f": "female", "female": "female", "n": "neutral", "neutral": "neutral"}
    out = []
    for r in rows:
        g = str(annotations["gender"][r]).strip().lower()
        if g not in names:
            raise ValueError(f"{annotations.path}: row {r} has gender {g!r}; expected 'm', 'f' or 'n'")
        out.append(names[g])
    return np.array(out, dtype=object)
