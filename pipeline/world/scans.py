"""Clothed scans of the demo world, laid out like AGORA's scan folders:

    meshes/<scan>.ply     textured scan (vertex colours), world frame (y up, metres)
    fits/<scan>.npz       its exact SMPL-format fit: betas, global_orient, body_pose, transl, gender
    cameras/<scan>.json   the camera rig: per view intrinsics K, rotation R and translation t
                          (world -> OpenCV camera: x_cam = R x_world + t), width, height
    gt/<scan>.npy         ground truth: the CIHP garment label of every body vertex

A scan is the posed body with its garments as an offset surface (each garment pushed out along the
normals by its thickness), subdivided once so that textures have detail finer than the body mesh.
"""

from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path

import numpy as np
import scipy.sparse
import torch
import trimesh
from tqdm import tqdm

from pipeline.body.model import BodyModel
from pipeline.camera import RigSettings, camera_rig
from pipeline.mesh import vertex_adjacency, vertex_normals
from pipeline.world.clothing import face_labels, garment_labels, garment_thickness, sample_outfit
from pipeline.world.poses import PosePrior

SCAN_POSES = ("standing", "walking", "arms_raised", "reaching")  # scans are captured upright


def scan_name(index: int) -> str:
    return f"scan_{index:05d}"


def subdivide(vertices: np.ndarray, faces: np.ndarray, attributes: dict[str, np.ndarray], face_values: np.ndarray):
    """Split every face into four at its edge midpoints. Vertex attributes are averaged at midpoints;
    face values are inherited by the four children."""
    edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    unique, inverse = np.unique(edges, axis=0, return_inverse=True)
    mid = len(vertices) + inverse.reshape(-1, 3)  # (F, 3) midpoint of edges 01, 12, 20
    a, b, c = faces.T
    ab, bc, ca = mid.T
    new_faces = np.stack([np.stack([a, ab, ca], 1), np.stack([ab, b, bc], 1), np.stack([ca, bc, c], 1),
                          np.stack([ab, bc, ca], 1)], axis=1).reshape(-1, 3)
    new_vertices = np.concatenate([vertices, vertices[unique].mean(axis=1)])
    new_attributes = {k: np.concatenate([v, v[unique].mean(axis=1)]) for k, v in attributes.items()}
    return new_vertices, new_faces, new_attributes, np.repeat(face_values, 4)


def _smooth(values: np.ndarray, faces: np.ndarray, iterations: int = 2) -> np.ndarray:
    """Average each vertex value with its neighbours' (so garment edges slope instead of stepping)."""
    n = len(values)
    adj = vertex_adjacency(faces, n) + scipy.sparse.eye(n)
    norm = np.asarray(adj.sum(axis=1)).ravel()
    for _ in range(iterations):
        values = (adj @ values) / norm
    return values


def make_scan(model: BodyModel, prior: PosePrior, rng: np.random.Generator) -> dict:
    data = model.data
    faces = np.asarray(data.f, dtype=np.int64)
    rest = np.asarray(data.v_template)
    rest_joints = data.J_regressor @ rest
    betas = np.clip(rng.normal(0, 1, model.num_betas), -2.5, 2.5)
    template, body_pose = prior.sample(rng, template=SCAN_POSES[rng.integers(len(SCAN_POSES))])
    global_orient = np.array([0.0, rng.uniform(-np.pi, np.pi), 0.0])
    transl = np.array([rng.uniform(-0.5, 0.5), 0.0, rng.uniform(-0.5, 0.5)])
    with torch.no_grad():
        out = model(betas=torch.as_tensor(betas[None], dtype=torch.float32),
                    body_pose=torch.as_tensor(body_pose[None], dtype=torch.float32),
                    global_orient=torch.as_tensor(global_orient[None], dtype=torch.float32),
                    transl=torch.as_tensor(transl[None], dtype=torch.float32))
    body = out.vertices[0].double().numpy()
    outfit = sample_outfit(rng)
    labels = garment_labels(rest, data.part_labels, rest_joints, outfit)
    normals = vertex_normals(body, faces)
    offset = _smooth(garment_thickness(labels), faces)
    surface = body + offset[:, None] * normals
    verts, tris, attrs, flabels = subdivide(surface, faces, {"rest": rest}, face_labels(labels, faces))
    # a vertex takes the material of the first face that uses it (boundary vertices: either side)
    vertex_label = np.zeros(len(verts), dtype=np.uint8)
    vertex_label[tris[::-1].ravel()] = np.repeat(flabels[::-1], 3)
    colours = np.zeros((len(verts), 3))
    for label in np.unique(vertex_label):
        sel = vertex_label == label
        colours[sel] = outfit.materials[int(label)].albedo(attrs["rest"][sel])
    mesh = trimesh.Trimesh(verts, tris, vertex_colors=np.clip(colours * 255, 0, 255).astype(np.uint8), process=False)
    return {"mesh": mesh, "labels": labels, "face_labels": flabels, "template": template, "outfit": outfit.upper + "/" + outfit.lower,
            "fit": {"betas": betas, "global_orient": global_orient, "body_pose": body_pose, "transl": transl,
                    "gender": np.str_("neutral"), "body_model": np.str_(data.name)},
            "center": 0.5 * (surface.min(0) + surface.max(0)), "extent": float(np.ptp(surface, axis=0).max())}


def write_scan_shard(body_file: str | Path, out_dir: str | Path, indices: range, seed: int, rig: RigSettings,
                     progress: bool = True) -> None:
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in ("meshes", "fits", "cameras", "gt"):
        (tmp / sub).mkdir(parents=True)
    model = BodyModel.from_file(body_file)
    prior = PosePrior.load()
    index_rows = []
    for index in tqdm(indices, desc=f"scans {indices.start}-{indices.stop - 1}", disable=not progress, mininterval=5):
        rng = np.random.default_rng([seed, zlib.crc32(b"scans"), index])
        scan = make_scan(model, prior, rng)
        name = scan_name(index)
        scan["mesh"].export(tmp / "meshes" / f"{name}.ply")
        np.savez(tmp / "fits" / f"{name}.npz", **scan["fit"])
        (tmp / "cameras" / f"{name}.json").write_text(json.dumps({"views": camera_rig(scan["center"], scan["extent"], rng, rig)}))
        np.save(tmp / "gt" / f"{name}.npy", scan["labels"])
        index_rows.append({"scan": name, "template": scan["template"], "outfit": scan["outfit"]})
    (tmp / "scans.json").write_text(json.dumps(index_rows, indent=1))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)


def write_scan_index(shard_dirs: list[str | Path], root: str | Path, out: str | Path) -> int:
    """One index of every scan: its mesh, fit, cameras and ground-truth paths, relative to `root`."""
    from pipeline.io import atomic_output

    root = Path(root)
    scans = []
    for shard_dir in map(Path, shard_dirs):
        prefix = shard_dir.relative_to(root).as_posix()
        for row in json.loads((shard_dir / "scans.json").read_text()):
            name = row["scan"]
            scans.append({**row, "mesh": f"{prefix}/meshes/{name}.ply", "fit": f"{prefix}/fits/{name}.npz",
                          "cameras": f"{prefix}/cameras/{name}.json", "gt_vertex_labels": f"{prefix}/gt/{name}.npy"})
    with atomic_output(out) as tmp:
        Path(tmp).write_text(json.dumps({"scans": scans}, indent=1))
    return len(scans)
