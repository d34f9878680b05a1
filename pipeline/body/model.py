"""The body model: loading SMPL-format files (licensed SMPL or the demo body) and a batched forward.

Every stage reads one file: `results/body/demo_body.npz` (rule `demo_body`) or the user's SMPL file
converted to `results/body/smpl_<gender>.npz` (rule `convert_smpl`), holding the
standard SMPL arrays plus the metadata the stages need (part label per vertex, extra-joint vertex ids,
the H36M joint regressor). The math is smplx's LBS; this module only supplies the data, so the code is
generic in the vertex and face count.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse
import torch
from torch import nn

from pipeline.body.smpl_pickle import SMPL_REGISTER_URL, load_smpl_pickle
from pipeline.io import save_npz
from pipeline.skeleton import (
    EXTRA_JOINT_NAMES,
    JOINTS49_SOURCE,
    SPIN_EXTRA_JOINT_NAMES,
    NUM_BODY_POSE_JOINTS,
    NUM_SMPL_JOINTS,
    SMPL_JOINT_NAMES,
    SMPL_PART_NAMES,
)

SMPL_NUM_VERTICES = 6890
STANDARD_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
FORMAT_VERSION = 1

# File names tried in a model folder, per gender: the names smplx expects, then the original release.
_SMPL_FILE_NAMES = {
    "neutral": ("SMPL_NEUTRAL", "basicModel_neutral_lbs_10_207_0_v1.0.0", "basicmodel_neutral_lbs_10_207_0_v1.1.0"),
    "male": ("SMPL_MALE", "basicmodel_m_lbs_10_207_0_v1.0.0", "basicmodel_m_lbs_10_207_0_v1.1.0"),
    "female": ("SMPL_FEMALE", "basicModel_f_lbs_10_207_0_v1.0.0", "basicmodel_f_lbs_10_207_0_v1.1.0"),
}


class BodyModelError(ValueError):
    """A body-model file is missing or does not hold a usable SMPL-format model."""


def find_smpl_file(model_dir: str | Path, gender: str = "neutral") -> Path:
    """The SMPL file for `gender` in `model_dir` (.npz preferred over .pkl), or a BodyModelError that
    names every path tried and where to get the files."""
    model_dir = Path(model_dir)
    gender = gender.lower()
    if gender not in _SMPL_FILE_NAMES:
        raise BodyModelError(f"gender must be one of {sorted(_SMPL_FILE_NAMES)}, got {gender!r}")
    tried = [model_dir / f"{stem}.{ext}" for stem in _SMPL_FILE_NAMES[gender] for ext in ("npz", "pkl")]
    for path in tried:
        if path.is_file():
            return path
    raise BodyModelError(
        f"no SMPL model file for gender {gender!r} in {model_dir}: looked for "
        + ", ".join(p.name for p in tried)
        + f". SMPL is licensed: register at {SMPL_REGISTER_URL}, download 'SMPL for Python', and put "
        f"{_SMPL_FILE_NAMES[gender][0]}.pkl into {model_dir}; or set body.model_dir: null in config.yaml "
        "to use the built-in demo body."
    )


def read_model_arrays(path: str | Path) -> dict[str, Any]:
    """Raw arrays of a model file: an official `.pkl` (through the restricted unpickler) or an `.npz`."""
    path = Path(path)
    if not path.is_file():
        raise BodyModelError(f"body model file not found: {path}")
    if path.suffix == ".pkl":
        return load_smpl_pickle(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    raise BodyModelError(f"{path}: unknown body-model file type {path.suffix!r} (expected .pkl or .npz)")


def standard_arrays(raw: dict[str, Any], source: str) -> dict[str, np.ndarray]:
    """The standard SMPL keys as plain dense arrays, values unchanged."""
    missing = [k for k in STANDARD_KEYS if k not in raw]
    if missing:
        raise BodyModelError(f"{source}: not an SMPL-format model, missing {', '.join(missing)}")
    out = {}
    for k in STANDARD_KEYS:
        v = raw[k]
        out[k] = v.toarray() if scipy.sparse.issparse(v) else np.asarray(v)
    v_count = out["v_template"].shape[0]
    checks = {
        "v_template": out["v_template"].shape == (v_count, 3),
        "shapedirs": out["shapedirs"].ndim == 3 and out["shapedirs"].shape[:2] == (v_count, 3),
        "posedirs": out["posedirs"].shape == (v_count, 3, 9 * NUM_BODY_POSE_JOINTS),
        "J_regressor": out["J_regressor"].shape == (NUM_SMPL_JOINTS, v_count),
        "weights": out["weights"].shape == (v_count, NUM_SMPL_JOINTS),
        "kintree_table": out["kintree_table"].shape == (2, NUM_SMPL_JOINTS),
        "f": out["f"].ndim == 2 and out["f"].shape[1] == 3,
    }
    bad = [f"{k} {out[k].shape}" for k, ok in checks.items() if not ok]
    if bad:
        raise BodyModelError(f"{source}: arrays of unexpected shape for a {v_count}-vertex SMPL model: {', '.join(bad)}")
    return out


@dataclass
class BodyModelData:
    """An SMPL-format body model with the metadata every stage needs."""

    v_template: np.ndarray  # (V, 3) metres, rest pose
    shapedirs: np.ndarray  # (V, 3, B)
    posedirs: np.ndarray  # (V, 3, 207)
    J_regressor: np.ndarray  # (24, V) dense
    weights: np.ndarray  # (V, 24) skinning weights
    kintree_table: np.ndarray  # (2, 24); row 0 = parents
    f: np.ndarray  # (F, 3) vertex ids
    part_labels: np.ndarray  # (V,) SMPL part id 0..23 per vertex
    extra_vertex_ids: dict[str, int]  # smplx's extra-joint names -> vertex id
    J_regressor_h36m: np.ndarray | None = None  # (17, V)
    J_regressor_extra: np.ndarray | None = None  # (9, V) SPIN's extra joints, SPIN_EXTRA_JOINT_NAMES order
    name: str = "smpl"
    provenance: dict[str, str] = field(default_factory=dict)

    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {k: getattr(self, k) for k in STANDARD_KEYS}
        arrays["part_labels"] = self.part_labels.astype(np.int64)
        arrays["extra_joint_names"] = np.array(list(self.extra_vertex_ids))
        arrays["extra_vertex_ids"] = np.array(list(self.extra_vertex_ids.values()), dtype=np.int64)
        arrays["joint_names"] = np.array(SMPL_JOINT_NAMES)
        for key in ("J_regressor_h36m", "J_regressor_extra"):
            if getattr(self, key) is not None:
                arrays[key] = getattr(self, key)
        arrays["name"] = np.array(self.name)
        arrays["provenance"] = np.array(json.dumps(self.provenance, sort_keys=True))
        arrays["format_version"] = np.array(FORMAT_VERSION)
        return arrays

    def save(self, path: str | Path) -> None:
        save_npz(path, self.to_arrays())


def _smpl_topology_vertex_ids() -> dict[str, int]:
    from smplx.vertex_ids import vertex_ids

    return {name: int(vertex_ids["smplh"][name]) for name in EXTRA_JOINT_NAMES}


def _parts_from_segmentation(path: Path, num_vertices: int) -> np.ndarray:
    """Part label per vertex from the official segmentation json (part name -> vertex ids)."""
    with open(path) as f:
        seg = json.load(f)
    unknown = sorted(set(seg) - set(SMPL_PART_NAMES))
    if unknown:
        raise BodyModelError(f"{path}: unknown part names {unknown}; expected SMPL's {list(SMPL_PART_NAMES)}")
    labels = np.full(num_vertices, -1, dtype=np.int64)
    for name, ids in seg.items():
        labels[np.asarray(ids, dtype=np.int64)] = SMPL_PART_NAMES.index(name)
    if (labels < 0).any():
        raise BodyModelError(f"{path}: {(labels < 0).sum()} of {num_vertices} vertices have no part")
    return labels


def _optional_regressor(raw: dict[str, Any], key: str, path: str | Path | None, rows: int, n: int) -> np.ndarray | None:
    """A joint regressor from its own .npy file (when given) or from the model file (when it has one)."""
    if path is None:
        return np.asarray(raw[key]) if key in raw else None
    reg = np.load(path, allow_pickle=False)
    if reg.shape != (rows, n):
        raise BodyModelError(f"{path}: expected a ({rows}, {n}) joint regressor for {key}, got {reg.shape}")
    return reg


def data_from_arrays(raw: dict[str, Any], source: str, h36m_regressor: str | Path | None = None,
                     part_segmentation: str | Path | None = None,
                     extra_regressor: str | Path | None = None) -> BodyModelData:
    """Assemble BodyModelData from raw model arrays; metadata the file lacks comes from the extra files,
    or, for SMPL's own topology, from SMPL's published vertex ids."""
    arrays = standard_arrays(raw, source)
    n = arrays["v_template"].shape[0]
    if "extra_vertex_ids" in raw:
        names = [str(s) for s in raw["extra_joint_names"]]
        vertex_ids = {k: int(v) for k, v in zip(names, raw["extra_vertex_ids"])}
    elif n == SMPL_NUM_VERTICES:
        vertex_ids = _smpl_topology_vertex_ids()
    else:
        raise BodyModelError(
            f"{source}: a {n}-vertex model without extra_vertex_ids; the extra-joint vertex ids "
            "(nose, eyes, ears, toes, heels, fingertips) must be in the file for non-SMPL topologies"
        )
    missing = [k for k in EXTRA_JOINT_NAMES if k not in vertex_ids]
    if missing:
        raise BodyModelError(f"{source}: extra_vertex_ids lacks {missing}")

    if part_segmentation is not None:
        parts = _parts_from_segmentation(Path(part_segmentation), n)
    elif "part_labels" in raw:
        parts = np.asarray(raw["part_labels"], dtype=np.int64)
    else:
        parts = arrays["weights"].argmax(axis=1)  # dominant skinning joint

    h36m = _optional_regressor(raw, "J_regressor_h36m", h36m_regressor, 17, n)
    extra = _optional_regressor(raw, "J_regressor_extra", extra_regressor, len(SPIN_EXTRA_JOINT_NAMES), n)

    provenance = json.loads(str(raw["provenance"])) if "provenance" in raw else {"source": source}
    name = str(raw["name"]) if "name" in raw else "smpl"
    return BodyModelData(**arrays, part_labels=parts, extra_vertex_ids=vertex_ids, J_regressor_h36m=h36m,
                         J_regressor_extra=extra, name=name, provenance=provenance)


def load_body_model(path: str | Path, h36m_regressor: str | Path | None = None,
                    part_segmentation: str | Path | None = None,
                    extra_regressor: str | Path | None = None) -> BodyModelData:
    """Load any SMPL-format model file (.pkl or .npz, licensed SMPL or the demo body)."""
    return data_from_arrays(read_model_arrays(path), str(path), h36m_regressor, part_segmentation, extra_regressor)


def convert_model_file(src: str | Path, dst: str | Path, h36m_regressor: str | Path | None = None,
                       part_segmentation: str | Path | None = None,
                       extra_regressor: str | Path | None = None) -> BodyModelData:
    """Write `src` as a clean `.npz`: the standard SMPL keys (J_regressor dense) with values equal to
    the source, plus the pipeline's metadata. Loading the result needs neither pickle nor chumpy."""
    data = load_body_model(src, h36m_regressor, part_segmentation, extra_regressor)
    extras = {"h36m_regressor": h36m_regressor, "extra_regressor": extra_regressor, "part_segmentation": part_segmentation}
    data.provenance = {"source": Path(src).name, **{k: Path(v).name for k, v in extras.items() if v}}
    data.save(dst)
    return data


@dataclass
class BodyOutput:
    vertices: torch.Tensor  # (B, V, 3) metres, camera-independent world frame (+ transl)
    joints: torch.Tensor  # (B, 24, 3) SMPL joints
    extra_joints: torch.Tensor  # (B, 21, 3) surface points, EXTRA_JOINT_NAMES order
    h36m_joints: torch.Tensor | None  # (B, 17, 3), None when the model has no H36M regressor
    spin_extra_joints: torch.Tensor | None  # (B, 9, 3) SPIN_EXTRA_JOINT_NAMES, None without that regressor
    full_pose: torch.Tensor  # (B, 72) axis-angle, root first


class BodyModel(nn.Module):
    """Batched SMPL forward (smplx's LBS) with extra-joint vertex ids taken from the model's metadata.

    smplx's own SMPL loader reads pickles only and hard-codes SMPL's vertex ids for the extra joints;
    this wrapper feeds it the arrays directly, so any SMPL-format model (the demo body included) works.
    """

    def __init__(self, data: BodyModelData, num_betas: int = 10, dtype: torch.dtype = torch.float32):
        super().__init__()
        import smplx
        from smplx.utils import Struct

        available = data.shapedirs.shape[-1]
        if num_betas > available:
            raise BodyModelError(f"num_betas={num_betas} but the model has {available} shape directions")
        self.data = data
        self.num_betas = num_betas
        self.smpl = smplx.SMPL(
            model_path="", data_struct=Struct(**{k: getattr(data, k) for k in STANDARD_KEYS}),
            vertex_ids=data.extra_vertex_ids, num_betas=num_betas, dtype=dtype,
            create_betas=False, create_global_orient=False, create_body_pose=False, create_transl=False,
        )
        for key in ("J_regressor_h36m", "J_regressor_extra"):
            reg = getattr(data, key)
            self.register_buffer(key, None if reg is None else torch.as_tensor(reg, dtype=dtype))
        self.register_buffer("part_labels", torch.as_tensor(data.part_labels, dtype=torch.long))

    @classmethod
    def from_file(cls, path: str | Path, num_betas: int = 10, **kwargs) -> "BodyModel":
        return cls(load_body_model(path), num_betas=num_betas, **kwargs)

    @property
    def faces(self) -> np.ndarray:
        return np.asarray(self.data.f, dtype=np.int64)

    def forward(self, betas: torch.Tensor | None = None, body_pose: torch.Tensor | None = None,
                global_orient: torch.Tensor | None = None, transl: torch.Tensor | None = None,
                rotmat: torch.Tensor | None = None) -> BodyOutput:
        """betas (B, num_betas), body_pose (B, 69) and global_orient (B, 3) axis-angle, transl (B, 3) metres.
        Any argument left out is zero; B is the largest batch given. Or, instead of body_pose and
        global_orient, `rotmat` (B, 24, 3, 3): the rotation matrices of all joints, root first (the
        regressors' output); full_pose is then these matrices, (B, 24, 3, 3)."""
        if rotmat is not None:
            if body_pose is not None or global_orient is not None:
                raise ValueError("give either rotmat or body_pose/global_orient, not both")
            if betas is None:
                betas = rotmat.new_zeros(rotmat.shape[0], self.num_betas)
            out = self.smpl(betas=betas, body_pose=rotmat[:, 1:], global_orient=rotmat[:, :1], transl=transl,
                            pose2rot=False, return_full_pose=True)
            return self._output(out)
        given = [t for t in (betas, body_pose, global_orient, transl) if t is not None]
        batch = max((t.shape[0] for t in given), default=1)
        ref = self.smpl.shapedirs

        def zeros(n):
            return torch.zeros(batch, n, dtype=ref.dtype, device=ref.device)

        betas = zeros(self.num_betas) if betas is None else betas
        body_pose = zeros(3 * NUM_BODY_POSE_JOINTS) if body_pose is None else body_pose
        global_orient = zeros(3) if global_orient is None else global_orient
        transl = zeros(3) if transl is None else transl
        out = self.smpl(betas=betas, body_pose=body_pose, global_orient=global_orient, transl=transl,
                        return_full_pose=True)
        return self._output(out)

    def _output(self, out) -> BodyOutput:
        def regress(reg):
            return None if reg is None else torch.einsum("jv,bvc->bjc", reg, out.vertices)

        return BodyOutput(
            vertices=out.vertices,
            joints=out.joints[:, :NUM_SMPL_JOINTS],
            extra_joints=out.joints[:, NUM_SMPL_JOINTS:],
            h36m_joints=regress(self.J_regressor_h36m),
            spin_extra_joints=regress(self.J_regressor_extra),
            full_pose=out.full_pose,
        )


def joints49(out: BodyOutput) -> torch.Tensor:
    """(B, 49, 3) joints in the SPIN/EFT/PARE annotation convention (skeleton.JOINTS49)."""
    if out.spin_extra_joints is None:
        raise BodyModelError(
            "the 49-joint set needs SPIN's extra joint regressor: set body.extra_regressor to "
            "J_regressor_extra.npy (9 x 6890, from the SPIN data release)"
        )
    all54 = torch.cat([out.joints, out.extra_joints, out.spin_extra_joints], dim=1)
    return all54[:, torch.as_tensor(JOINTS49_SOURCE, device=all54.device)]
