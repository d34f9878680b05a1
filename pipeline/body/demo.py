"""The procedural demo body: an SMPL-format model built from a seed, for machines without SMPL files.

Construction, in order:
1. A rest skeleton in SMPL's T-pose (metres, y up, facing +z, the body's left at +x), proportions
   jittered by the seed.
2. The body as an implicit surface: a smooth union of ellipsoids and round cones, each owned by the
   SMPL joint whose part it forms (thigh cone -> left_hip, palm -> left_wrist, ...).
3. A closed triangle mesh of that surface (marching cubes, then Taubin smoothing).
4. Part label per vertex: the owner of the nearest primitive surface. Skinning weights: a softmax
   over the primitive distances of that part and its kinematic neighbours, so they blend smoothly
   across joints and never leak between unrelated parts (left and right thighs, say).
5. Joint regressors (SMPL-24, H36M-17 and SPIN's 9 extra joints): per joint, Gaussian weights on nearby vertices of the
   adjacent parts, corrected (least change) so that regressing the template gives the designed joint
   exactly.
6. Ten shape directions (stature, girth, leg and arm length, shoulder and hip width, belly, head
   size, torso length, limb girth), each a displacement field blended by the skinning weights.
7. Extra-joint vertex ids (nose, eyes, ears, toes, heels, fingertips): the nearest vertex of the
   right part to a landmark.

The demo body has no pose-corrective blend shapes: its posedirs are zero (plain LBS).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh
from scipy.optimize import nnls
from skimage.measure import marching_cubes

from pipeline.body.model import BodyModelData
from pipeline.skeleton import (
    EXTRA_JOINT_NAMES,
    H36M_JOINT_NAMES,
    NUM_BODY_POSE_JOINTS,
    SMPL_JOINT_NAMES,
    SMPL_PARENTS,
    SPIN_EXTRA_JOINT_NAMES,
    children_of,
)

JID = {name: i for i, name in enumerate(SMPL_JOINT_NAMES)}  # joint name -> index
NUM_BETAS = 10

# Left-side rest joints (metres); the right side mirrors x. Pelvis at the origin.
_LEFT_JOINTS = {
    "pelvis": (0.0, 0.0, 0.0), "left_hip": (0.085, -0.075, -0.005), "spine1": (0.0, 0.105, -0.02),
    "left_knee": (0.095, -0.48, 0.005), "spine2": (0.0, 0.235, -0.01), "left_ankle": (0.10, -0.88, -0.03),
    "spine3": (0.0, 0.29, 0.0), "left_foot": (0.11, -0.94, 0.085), "neck": (0.0, 0.505, -0.02),
    "left_collar": (0.075, 0.42, -0.01), "head": (0.0, 0.585, 0.01), "left_shoulder": (0.185, 0.445, -0.02),
    "left_elbow": (0.445, 0.445, -0.03), "left_wrist": (0.69, 0.445, -0.02), "left_hand": (0.775, 0.445, -0.02),
}
# End points of the leaf segments (joint -> end) and landmarks, left side.
_ENDS = {"head": (0.0, 0.80, 0.0), "left_foot": (0.115, -0.952, 0.165), "left_hand": (0.865, 0.445, -0.02)}


def _mirror(p):
    return (-p[0], p[1], p[2])


def rest_skeleton(rng: np.random.Generator) -> tuple[np.ndarray, dict[int, np.ndarray], float, float]:
    """(24, 3) rest joints, leaf end points by joint, and the seed's stature and girth factors."""
    stature = 1.0 + 0.03 * float(np.clip(rng.standard_normal(), -2, 2))
    girth = 1.0 + 0.05 * float(np.clip(rng.standard_normal(), -2, 2))
    joints = np.zeros((len(SMPL_JOINT_NAMES), 3))
    for name, p in _LEFT_JOINTS.items():
        joints[JID[name]] = p
        if name.startswith("left_"):
            joints[JID["right_" + name[5:]]] = _mirror(p)
    ends = {}
    for name, p in _ENDS.items():
        ends[JID[name]] = np.array(p)
        if name.startswith("left_"):
            ends[JID["right_" + name[5:]]] = np.array(_mirror(p))
    joints *= stature
    ends = {j: e * stature for j, e in ends.items()}
    return joints, ends, stature, girth


@dataclass
class Primitive:
    kind: str  # "ellipsoid" (a=center, radii) or "cone" (a, b, ra, rb)
    owner: int  # SMPL joint whose part this primitive forms
    a: np.ndarray
    b: np.ndarray | None = None
    radii: np.ndarray | None = None
    ra: float = 0.0
    rb: float = 0.0

    def sdf(self, p: np.ndarray) -> np.ndarray:
        """Approximate signed distance (metres, negative inside) for points (N, 3)."""
        if self.kind == "ellipsoid":
            q = (p - self.a) / self.radii
            k0 = np.linalg.norm(q, axis=1)
            k1 = np.linalg.norm(q / self.radii, axis=1)
            return k0 * (k0 - 1.0) / np.maximum(k1, 1e-9)
        ab = self.b - self.a
        t = np.clip(((p - self.a) @ ab) / (ab @ ab), 0.0, 1.0)
        closest = self.a + t[:, None] * ab
        return np.linalg.norm(p - closest, axis=1) - (self.ra + t * (self.rb - self.ra))


def body_primitives(joints: np.ndarray, ends: dict[int, np.ndarray], stature: float, girth: float) -> list[Primitive]:
    g, s = girth, stature

    def ell(owner, center, radii):
        return Primitive("ellipsoid", owner, a=np.array(center) * s, radii=np.array(radii) * np.array([g, 1.0, g]) * s)

    def cone(owner, a, b, ra, rb):
        return Primitive("cone", owner, a=np.asarray(a, float), b=np.asarray(b, float), ra=ra * g * s, rb=rb * g * s)

    prims = [
        ell(JID["pelvis"], (0, -0.04, -0.01), (0.165, 0.11, 0.11)),
        ell(JID["spine1"], (0, 0.09, 0.0), (0.145, 0.10, 0.10)),
        ell(JID["spine2"], (0, 0.21, 0.0), (0.15, 0.10, 0.105)),
        ell(JID["spine3"], (0, 0.345, -0.005), (0.165, 0.13, 0.115)),
        cone(JID["neck"], np.array([0, 0.44, -0.02]) * s, np.array([0, 0.60, 0.0]) * s, 0.052, 0.047),
        ell(JID["head"], (0, 0.685, 0.015), (0.078, 0.112, 0.095)),
        ell(JID["head"], (0, 0.628, 0.042), (0.058, 0.05, 0.064)),  # jaw
        ell(JID["head"], (0, 0.672, 0.112), (0.014, 0.024, 0.022)),  # nose
    ]
    for side, sign in (("left", 1.0), ("right", -1.0)):
        m = np.array([sign, 1.0, 1.0])
        j = {k: JID[f"{side}_{k}"] for k in ("hip", "knee", "ankle", "foot", "collar", "shoulder", "elbow", "wrist", "hand")}
        jp = {k: joints[v] for k, v in j.items()}
        prims += [
            ell(JID["pelvis"], m * (0.07, -0.085, -0.055), (0.085, 0.09, 0.08)),  # buttock
            ell(JID["head"], m * (0.078, 0.68, 0.0), (0.012, 0.028, 0.02)),  # ear
            cone(j["collar"], np.array([0.04 * sign, 0.43, -0.02]) * s, jp["shoulder"], 0.06, 0.058),
            cone(j["shoulder"], jp["shoulder"], jp["elbow"], 0.052, 0.04),
            cone(j["elbow"], jp["elbow"], jp["wrist"], 0.038, 0.029),
            ell(j["wrist"], m * (0.735, 0.445, -0.02), (0.05, 0.022, 0.043)),  # palm
            cone(j["wrist"], m * np.array([0.71, 0.437, 0.02]) * s, m * np.array([0.765, 0.432, 0.075]) * s, 0.017, 0.015),  # thumb
            ell(j["hand"], m * (0.818, 0.445, -0.022), (0.048, 0.019, 0.04)),  # fingers
            cone(j["hip"], jp["hip"], jp["knee"], 0.088, 0.055),
            cone(j["knee"], jp["knee"], jp["ankle"], 0.052, 0.036),
            ell(j["knee"], m * (0.097, -0.60, -0.03), (0.05, 0.11, 0.055)),  # calf
            cone(j["ankle"], m * np.array([0.10, -0.925, -0.05]) * s, jp["foot"], 0.04, 0.036),
            cone(j["foot"], jp["foot"], ends[j["foot"]], 0.034, 0.022),
        ]
    return prims


def _extract_surface(prims: list[Primitive], spacing: float, blend: float) -> trimesh.Trimesh:
    """Closed mesh of the smooth union (log-sum-exp, radius `blend` metres) of the primitives."""
    lo = np.min([p.a - 0.2 for p in prims], axis=0)
    hi = np.max([p.a + 0.2 for p in prims], axis=0)
    axes = [np.arange(lo[i], hi[i] + spacing, spacing) for i in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    d = np.stack([p.sdf(grid) for p in prims], axis=0)  # (P, N)
    dmin = d.min(axis=0)
    union = dmin - blend * np.log(np.exp(-(d - dmin) / blend).sum(axis=0))
    volume = union.reshape(len(axes[0]), len(axes[1]), len(axes[2]))
    verts, faces, _, _ = marching_cubes(-volume, level=0.0, spacing=(spacing,) * 3)
    mesh = trimesh.Trimesh(verts + lo, faces, process=True)
    parts = mesh.split(only_watertight=False)
    if len(parts) > 1:
        sizes = sorted((len(p.vertices) for p in parts), reverse=True)
        if sum(sizes[1:]) > 0.005 * sizes[0]:
            raise RuntimeError(f"demo body surface fell apart into pieces of {sizes} vertices; lower grid_spacing")
        mesh = max(parts, key=lambda p: len(p.vertices))
    trimesh.smoothing.filter_taubin(mesh, lamb=0.5, nu=0.53, iterations=10)
    if mesh.volume < 0:
        mesh.invert()
    return mesh


def _skinning(verts: np.ndarray, prims: list[Primitive], tau: float) -> tuple[np.ndarray, np.ndarray]:
    """Part label (V,) and skinning weights (V, 24) from primitive ownership."""
    n_joints = len(SMPL_JOINT_NAMES)
    owner_dist = np.full((len(verts), n_joints), np.inf)
    for p in prims:
        owner_dist[:, p.owner] = np.minimum(owner_dist[:, p.owner], p.sdf(verts))
    parts = owner_dist.argmin(axis=1)
    children = children_of(SMPL_PARENTS)
    neighbours = np.zeros((n_joints, n_joints), dtype=bool)
    for j in range(n_joints):
        neighbours[j, [j, *children[j]]] = True
        if SMPL_PARENTS[j] >= 0:
            neighbours[j, SMPL_PARENTS[j]] = True
    rel = owner_dist - owner_dist.min(axis=1, keepdims=True)
    logits = np.where(neighbours[parts], -rel / tau, -np.inf)
    w = np.exp(logits - logits.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    return parts, w


def _regressor_row(verts: np.ndarray, candidates: np.ndarray, target: np.ndarray, sigma: float,
                   max_vertices: int = 160, prior_strength: float = 0.05) -> np.ndarray:
    """Non-negative weights over vertices, summing to 1, whose weighted mean is the `target` joint:
    the fit nearest (least squares) to Gaussian weights on the candidate vertices around the target."""
    idx = np.flatnonzero(candidates)
    d2 = ((verts[idx] - target) ** 2).sum(axis=1)
    order = np.argsort(d2)[:max_vertices]
    idx, d2 = idx[order], d2[order]
    w0 = np.exp(-d2 / (2 * sigma**2))
    w0 /= w0.sum()
    # rows: sum_i w_i (v_i - target) = 0 (3 rows, scaled to ~unit), sum_i w_i = 1, then the prior
    a = np.vstack([(verts[idx] - target).T / sigma, np.ones(len(idx)), prior_strength * np.eye(len(idx))])
    b = np.concatenate([np.zeros(3), [1.0], prior_strength * w0])
    w, _ = nnls(a, b, maxiter=50 * len(idx))
    w /= w.sum()
    row = np.zeros(len(verts))
    row[idx] = w
    return row


def _joint_regressors(verts, parts, weights, joints, ends, stature) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    n_joints = len(SMPL_JOINT_NAMES)
    children = children_of(SMPL_PARENTS)
    reg = np.zeros((n_joints, len(verts)))
    for j in range(n_joints):
        near = [j, *children[j]] + ([SMPL_PARENTS[j]] if SMPL_PARENTS[j] >= 0 else [])
        torso_like = j in (JID["pelvis"], JID["spine1"], JID["spine2"], JID["spine3"], JID["neck"], JID["head"])
        reg[j] = _regressor_row(verts, np.isin(parts, near), joints[j], sigma=0.06 if torso_like else 0.035)
    head = parts == JID["head"]
    nose = int(np.flatnonzero(head)[np.argmax(verts[head, 2])])
    top = ends[JID["head"]] - np.array([0.0, 0.02, 0.0])
    h36m_rows = {
        "pelvis": reg[JID["pelvis"]], "right_hip": reg[JID["right_hip"]], "right_knee": reg[JID["right_knee"]],
        "right_ankle": reg[JID["right_ankle"]], "left_hip": reg[JID["left_hip"]], "left_knee": reg[JID["left_knee"]],
        "left_ankle": reg[JID["left_ankle"]], "torso": reg[JID["spine2"]], "neck": reg[JID["neck"]],
        "nose": _regressor_row(verts, head, 0.5 * (joints[JID["head"]] + verts[nose]), sigma=0.04),
        "head_top": _regressor_row(verts, head, top, sigma=0.03),
        "left_shoulder": reg[JID["left_shoulder"]], "left_elbow": reg[JID["left_elbow"]], "left_wrist": reg[JID["left_wrist"]],
        "right_shoulder": reg[JID["right_shoulder"]], "right_elbow": reg[JID["right_elbow"]], "right_wrist": reg[JID["right_wrist"]],
    }
    up = np.array([0.0, 1.0, 0.0])
    spin_targets = {  # where the LSP/MPII/H36M annotators put these joints, relative to SMPL's
        "lsp_right_hip": joints[JID["right_hip"]] + np.array([-0.015, -0.04, 0.0]),
        "lsp_left_hip": joints[JID["left_hip"]] + np.array([0.015, -0.04, 0.0]),
        "lsp_neck": joints[JID["neck"]] + 0.01 * up,
        "lsp_head_top": top,
        "mpii_pelvis": joints[JID["pelvis"]] - 0.04 * up,
        "mpii_thorax": joints[JID["neck"]] - 0.04 * up,
        "h36m_spine": joints[JID["spine2"]],
        "h36m_jaw": np.array([0.0, 0.60, 0.06]) * stature,
        "h36m_head": np.array([0.0, 0.685, 0.015]) * stature,
    }
    spin_rows = [_regressor_row(verts, np.ones(len(verts), bool), spin_targets[n], sigma=0.04) for n in SPIN_EXTRA_JOINT_NAMES]
    return reg, np.stack([h36m_rows[n] for n in H36M_JOINT_NAMES]), np.stack(spin_rows), nose


def _closest_on_segment(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip(((p - a) @ ab) / max(ab @ ab, 1e-12), 0.0, 1.0)
    return a + t[:, None] * ab


def _shape_directions(verts, weights, joints, ends) -> np.ndarray:
    """(V, 3, 10) displacement per unit of each beta (metres)."""
    n_joints = len(SMPL_JOINT_NAMES)
    children = children_of(SMPL_PARENTS)
    # radial offset of each vertex from each joint's bone axis, blended by the skinning weights
    radial = np.zeros_like(verts)
    limb_radial = np.zeros_like(verts)
    limbs = {JID[f"{s}_{k}"] for s in ("left", "right") for k in ("hip", "knee", "shoulder", "elbow")}
    for j in range(n_joints):
        end = ends.get(j, joints[children[j][0]] if children[j] else joints[j])
        if j in (JID["pelvis"], JID["spine3"]):
            end = joints[j] + np.array([0.0, 0.1, 0.0])  # torso bones are vertical
        r = verts - _closest_on_segment(verts, joints[j], end)
        radial += weights[:, j : j + 1] * r
        if j in limbs:
            limb_radial += weights[:, j : j + 1] * r
    x, y, z = verts.T
    sx = np.sign(x)
    hip_y, ankle_y = joints[JID["left_hip"], 1], joints[JID["left_ankle"], 1]
    shoulder_x, hand_x = joints[JID["left_shoulder"], 0], ends[JID["left_hand"]][0]
    arm_mask = weights[:, [JID[f"{s}_{k}"] for s in ("left", "right") for k in ("shoulder", "elbow", "wrist", "hand")]].sum(axis=1)
    torso_mask = weights[:, [JID[k] for k in ("pelvis", "spine1", "spine2", "spine3")]].sum(axis=1)
    clip01 = lambda a: np.clip(a, 0.0, 1.0)  # noqa: E731
    zeros = np.zeros_like(x)
    dirs = [
        0.045 * (verts - joints[JID["pelvis"]]) * np.array([0.4, 1.0, 0.4]),  # stature
        0.10 * radial,  # girth
        np.stack([zeros, -0.05 * clip01((hip_y - y) / (hip_y - ankle_y)), zeros], 1),  # leg length
        np.stack([sx * 0.04 * clip01((np.abs(x) - shoulder_x) / (hand_x - shoulder_x)) * arm_mask, zeros, zeros], 1),  # arm length
        np.stack([sx * 0.025 * clip01((np.abs(x) - 0.03) / 0.15) * clip01((y - 0.30) / 0.10), zeros, zeros], 1),  # shoulders
        np.stack([sx * 0.02 * clip01(np.abs(x) / 0.15) * clip01((0.12 - y) / 0.15), zeros, zeros], 1),  # hips
        np.stack([zeros, zeros, 0.035 * np.exp(-(((y - 0.12) / 0.12) ** 2)) * clip01(z / 0.1) * torso_mask], 1),  # belly
        0.10 * (verts - joints[JID["head"]] - np.array([0, 0.1, 0])) * weights[:, JID["head"] : JID["head"] + 1],  # head size
        np.stack([zeros, 0.04 * clip01(y / 0.5), zeros], 1),  # torso length
        0.10 * limb_radial - 0.05 * radial * torso_mask[:, None],  # limb vs torso girth
    ]
    return np.stack(dirs, axis=-1)


def _extra_vertex_ids(verts: np.ndarray, parts: np.ndarray, nose: int, stature: float) -> dict[str, int]:
    landmarks = {  # name: (part, left-side landmark); r* names mirror their l* twin
        "leye": ("head", (0.032, 0.70, 0.10)), "lear": ("head", (0.095, 0.68, 0.0)),
        "LBigToe": ("left_foot", (0.085, -0.95, 0.17)), "LSmallToe": ("left_foot", (0.14, -0.95, 0.13)),
        "LHeel": ("left_ankle", (0.10, -0.97, -0.10)),
        "lthumb": ("left_wrist", (0.775, 0.43, 0.09)), "lindex": ("left_hand", (0.87, 0.445, 0.005)),
        "lmiddle": ("left_hand", (0.875, 0.445, -0.015)), "lring": ("left_hand", (0.87, 0.445, -0.035)),
        "lpinky": ("left_hand", (0.855, 0.445, -0.055)),
    }
    ids = {"nose": nose}
    for name, (part, p) in landmarks.items():
        for side_name, side_part, point in (
            (name, part, p),
            ("r" + name[1:] if name[0] == "l" else "R" + name[1:], part.replace("left", "right"), _mirror(p)),
        ):
            cand = np.flatnonzero(parts == JID[side_part])
            ids[side_name] = int(cand[np.argmin(((verts[cand] - np.array(point) * stature) ** 2).sum(axis=1))])
    if len(set(ids.values())) != len(ids):
        raise RuntimeError("demo body: two landmarks share a vertex; lower grid_spacing")
    return {name: ids[name] for name in EXTRA_JOINT_NAMES}


def build_demo_body(seed: int = 0, grid_spacing: float = 0.02, blend: float = 0.01, skin_tau: float = 0.02) -> BodyModelData:
    """Build the demo body deterministically from `seed` (the same seed gives identical arrays)."""
    rng = np.random.default_rng(seed)
    joints, ends, stature, girth = rest_skeleton(rng)
    prims = body_primitives(joints, ends, stature, girth)
    mesh = _extract_surface(prims, grid_spacing, blend)
    verts = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    parts, weights = _skinning(verts, prims, skin_tau)
    j_reg, h36m_reg, extra_reg, nose = _joint_regressors(verts, parts, weights, joints, ends, stature)
    kintree = np.stack([SMPL_PARENTS, np.arange(len(SMPL_PARENTS))]).astype(np.int64)
    kintree[0, 0] = 4294967295  # SMPL files store the root's parent as uint32 -1
    return BodyModelData(
        v_template=verts,
        shapedirs=_shape_directions(verts, weights, joints, ends),
        posedirs=np.zeros((len(verts), 3, 9 * NUM_BODY_POSE_JOINTS)),
        J_regressor=j_reg,
        weights=weights,
        kintree_table=kintree,
        f=faces,
        part_labels=parts,
        extra_vertex_ids=_extra_vertex_ids(verts, parts, nose, stature),
        J_regressor_h36m=h36m_reg,
        J_regressor_extra=extra_reg,
        name="demo_body",
        provenance={"generator": "pipeline.body.demo", "seed": str(seed), "grid_spacing": repr(grid_spacing),
                    "blend": repr(blend), "skin_tau": repr(skin_tau)},
    )


def load_or_build(path: str | None) -> BodyModelData:
    """The model in `path`, or, without a path, the default demo body built in memory (benchmarks, tools)."""
    if path:
        from pipeline.body.model import load_body_model

        return load_body_model(path)
    return build_demo_body()
