"""DSR's clothing semantic prior: for every body vertex, a distribution over the 20 CIHP labels,
learned from clothed scans rendered from several views and parsed.

Map (per shard of scans, `map_shard`): every view of a textured scan is rendered headless (our torch
rasteriser, CPU or CUDA), parsed with the pseudo-label stage's own inference code
(`ParserRunner.label_crops`, same settings), and the scan's fitted body is rendered from the same
camera into the same crop frame as an exact face-id buffer. Every pixel of a visible body face with
a parser label other than background votes for one vertex: the face's corner nearest to the pixel
(largest barycentric coordinate). Counts therefore go through vertices and are integers (V, 20), so
the reduce is exact and independent of the order of shards. A vertex is *seen* in a view when at
least one pixel votes for it, whatever its label.

Reduce (`reduce_counts`): the sum of every shard's counts, normalised per vertex; vertices never seen
take the mean of their seen neighbours (spread over the mesh); optionally, a left/right label pair
(arm, leg, shoe) takes the side of the vertex's own body part (`pool_sides`: a parser's left/right is
unreliable on people seen from behind, the fitted body's is not); optionally, labels implausible for a
vertex's body part are zeroed (`resources/prior_part_rules.yaml`); a small background probability
is mixed in; the per-face table DSR's renderer uses is the mean of each face's three vertices.

Scans come from an index (JSON; the demo world writes one, `python -m pipeline.prior index` builds
one for an AGORA-style folder), each with a mesh (vertex colours or a UV texture), a body fit and
optionally a camera rig file.
"""

from __future__ import annotations

import json
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.labelsets import CIHP, CIHP_FLIP_PAIRS, CIHP_IGNORE, CIHP_LABELS, NUM_CIHP_CLASSES
from pipeline.io import sha256_file as file_hash
from pipeline.mesh import vertex_adjacency, vertex_normals
from pipeline.raster import rasterize, supersampled_intrinsics

log = logging.getLogger("pipeline.prior")

PART_RULES_PATH = Path(__file__).resolve().parents[1] / "resources" / "prior_part_rules.yaml"
PRIOR_FORMAT = 1


class PriorInputError(ValueError):
    """A scan, fit, camera or transfer file that cannot be used; the message names the file and the fix."""


# ---------------------------------------------------------------------------------------------------
# Scan index


def read_scan_index(index_file: str | Path) -> list[dict]:
    """Rows {scan, mesh, fit, fit_type, cameras (or None)} with absolute paths; relative paths in the
    file are relative to the index's folder."""
    index_file = Path(index_file)
    root = index_file.parent
    rows = []
    for row in json.loads(index_file.read_text())["scans"]:
        def resolve(key):
            value = row.get(key)
            return None if value is None else str((root / value) if not Path(value).is_absolute() else Path(value))

        rows.append({"scan": row["scan"], "mesh": resolve("mesh"), "fit": resolve("fit"),
                     "fit_type": row.get("fit_type", "smpl"), "cameras": resolve("cameras"),
                     "gt_vertex_labels": resolve("gt_vertex_labels")})
    return rows


MESH_SUFFIXES = (".obj", ".ply", ".glb", ".gltf")
FIT_SUFFIXES = (".npz", ".pkl")


def build_scan_index(root: str | Path, out: str | Path, fit_type: str = "smpl") -> int:
    """Index an AGORA-style folder:

        ROOT/meshes/<scan>.obj|.ply|.glb   (or ROOT/meshes/<scan>/<scan>.obj with its .mtl and texture)
        ROOT/fits/<scan>.npz|.pkl          the body fit (SMPL, or SMPL-X with fit_type smplx)
        ROOT/cameras/<scan>.json           optional camera rig; without it the rig comes from config

    A scan without a fit stops the index with the scan named."""
    from pipeline.io import atomic_output

    root = Path(root).resolve()
    meshes_dir = root / "meshes"
    if not meshes_dir.is_dir():
        raise PriorInputError(f"{root}: no meshes/ folder; an AGORA-style scan folder holds meshes/, fits/ and optionally cameras/")
    meshes = {}
    for path in sorted(meshes_dir.rglob("*")):
        if path.suffix.lower() in MESH_SUFFIXES and path.is_file():
            if path.stem in meshes:
                raise PriorInputError(f"scan {path.stem!r} has two meshes: {meshes[path.stem]} and {path}")
            meshes[path.stem] = path
    if not meshes:
        raise PriorInputError(f"{meshes_dir}: no scan meshes ({', '.join(MESH_SUFFIXES)})")
    rows, missing = [], []
    for name, mesh in meshes.items():
        fits = [root / "fits" / f"{name}{suffix}" for suffix in FIT_SUFFIXES]
        fit = next((f for f in fits if f.is_file()), None)
        if fit is None:
            missing.append(f"scan {name}: no fit at {' or '.join(map(str, fits))}")
            continue
        cameras = root / "cameras" / f"{name}.json"
        rows.append({"scan": name, "mesh": str(mesh), "fit": str(fit), "fit_type": fit_type,
                     "cameras": str(cameras) if cameras.is_file() else None})
    if missing:
        raise PriorInputError("scans without a body fit (fit each scan, or remove it):\n  " + "\n  ".join(missing))
    with atomic_output(out) as tmp:
        Path(tmp).write_text(json.dumps({"scans": rows}, indent=1))
    return len(rows)


# ---------------------------------------------------------------------------------------------------
# Scan meshes


@dataclass
class ScanMesh:
    vertices: np.ndarray  # (V, 3) world frame, metres
    faces: np.ndarray  # (F, 3)
    normals: np.ndarray  # (V, 3)
    colours: np.ndarray | None  # (V, 3) float in [0, 1], or None with a texture
    uv: np.ndarray | None = None  # (V, 2)
    texture: np.ndarray | None = None  # (H, W, 3) float in [0, 1]


def load_scan_mesh(path: str | Path) -> ScanMesh:
    import trimesh

    path = Path(path)
    if not path.is_file():
        raise PriorInputError(f"scan mesh not found: {path}")
    try:
        mesh = trimesh.load(path, process=False, force="mesh")
    except Exception as e:  # trimesh raises many types for unreadable files
        raise PriorInputError(f"cannot read scan mesh {path}: {e}") from e
    if len(mesh.faces) == 0:
        raise PriorInputError(f"scan mesh {path} has no faces")
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    normals = np.asarray(mesh.vertex_normals, dtype=np.float64)
    visual = mesh.visual
    if visual.kind == "texture" and getattr(visual, "uv", None) is not None:
        material = visual.material
        image = getattr(material, "image", None) or getattr(material, "baseColorTexture", None)
        if image is None:
            raise PriorInputError(f"scan mesh {path} has texture coordinates but its texture image was not found "
                                  "(check the .mtl file's map_Kd path)")
        texture = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        return ScanMesh(vertices, np.asarray(mesh.faces), normals, None, np.asarray(visual.uv, dtype=np.float64), texture)
    if visual.kind == "vertex":
        colours = np.asarray(visual.vertex_colors[:, :3], dtype=np.float64) / 255.0
        return ScanMesh(vertices, np.asarray(mesh.faces), normals, colours)
    raise PriorInputError(f"scan mesh {path} has neither vertex colours nor a UV texture: the parser needs its appearance")


def sample_texture(texture: np.ndarray, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear texture lookup: uv (M, 2) with v up (OBJ convention) -> (M, 3)."""
    tex = torch.as_tensor(texture, dtype=torch.float32, device=uv.device).permute(2, 0, 1)[None]
    grid = torch.stack([uv[:, 0] * 2 - 1, (1 - uv[:, 1]) * 2 - 1], dim=-1).to(torch.float32)
    return torch.nn.functional.grid_sample(tex, grid[None, None],
                                           mode="bilinear", padding_mode="border", align_corners=False)[0, :, 0].T


@dataclass
class RenderSettings:
    supersample: int = 2  # rendered at this multiple of the view's size, then box-filtered
    ambient: float = 0.45  # 1.0: unlit (textures with baked lighting)
    light: tuple = (0.3, -0.5, -1.0)  # towards the light, camera frame (x right, y down, z forward): above, by the camera
    background: tuple = (0.5, 0.5, 0.5)


def render_scan(scan: ScanMesh, R: np.ndarray, t: np.ndarray, K: np.ndarray, height: int, width: int,
                settings: RenderSettings = RenderSettings(), device: str = "cpu") -> np.ndarray:
    """The scan seen by an OpenCV camera (x_cam = R x + t): uint8 RGB (H, W, 3), Lambertian shading."""
    ss = settings.supersample
    K_ss = supersampled_intrinsics(K, ss)
    R, t = np.asarray(R, dtype=np.float64), np.asarray(t, dtype=np.float64)
    cam = torch.as_tensor(scan.vertices @ R.T + t, device=device)
    faces = torch.as_tensor(scan.faces, device=device)
    r = rasterize(cam, faces, torch.as_tensor(K_ss, device=device), height * ss, width * ss)
    normals = r.interpolate_covered(torch.as_tensor(scan.normals @ R.T, device=device), faces)
    normals = normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    if scan.texture is not None:
        albedo = sample_texture(scan.texture, r.interpolate_covered(torch.as_tensor(scan.uv, device=device), faces)).double()
    else:
        albedo = r.interpolate_covered(torch.as_tensor(scan.colours, device=device), faces)
    light = torch.as_tensor(settings.light, dtype=normals.dtype, device=device)
    light = light / light.norm()
    diffuse = (normals @ light).clamp(0, 1)
    rim = 0.15 * (-normals[:, 2]).clamp(0, 1) ** 4  # a little light from the camera side, as in the demo images
    shade = settings.ambient + (1 - settings.ambient) * (diffuse + rim)
    image = torch.empty((height * ss, width * ss, 3), dtype=albedo.dtype, device=device)
    image[:] = torch.as_tensor(settings.background, dtype=albedo.dtype, device=device)
    image[r.mask] = (albedo * shade[:, None]).clamp(0, 1)
    image = image.reshape(height, ss, width, ss, 3).mean(dim=(1, 3))
    return (image * 255 + 0.5).clamp(0, 255).to(torch.uint8).cpu().numpy()


# ---------------------------------------------------------------------------------------------------
# Body fits


def _read_fit_file(path: Path, scan: str) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise PriorInputError(f"scan {scan}: body fit not found at {path}; every scan needs its fit (SMPL parameters, "
                              "or SMPL-X parameters with prior.fit_type smplx)")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    if path.suffix == ".pkl":
        from pipeline.body.smpl_pickle import loads_smpl_pickle

        try:
            return {k: np.asarray(v) for k, v in loads_smpl_pickle(path.read_bytes(), source=str(path)).items()}
        except Exception as e:
            raise PriorInputError(f"scan {scan}: cannot read the fit {path} ({e}); convert it to .npz with numpy arrays "
                                  "betas, global_orient, body_pose, transl") from e
    raise PriorInputError(f"scan {scan}: fit {path} is neither .npz nor .pkl")


def _param(fit: dict, key: str, size: int, scan: str, path: Path) -> np.ndarray:
    if key not in fit:
        raise PriorInputError(f"scan {scan}: fit {path} has no {key!r} (keys: {sorted(fit)})")
    value = np.asarray(fit[key], dtype=np.float64).reshape(-1)
    if value.size < size:
        raise PriorInputError(f"scan {scan}: fit {path}: {key!r} has {value.size} values, expected {size}")
    return value[:size]


def read_deformation_transfer(path: str | Path | None) -> np.ndarray:
    """SMPL-X -> SMPL deformation transfer (the SMPL-X release's smplx2smpl_deftrafo_setup.pkl): a
    (6890, 10475) matrix, or (6890, 2 * 10475) whose second half acts on normals and is dropped."""
    if path is None or not Path(path).is_file():
        raise PriorInputError(
            f"SMPL-X fits need the SMPL-X -> SMPL deformation transfer matrix, not found at {path}: download "
            "smplx2smpl_deftrafo_setup.pkl (SMPL-X website, 'model transfer') and set prior.deformation_transfer")
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            matrix = z["mtx"] if "mtx" in z.files else z["matrix"]
    else:
        from pipeline.body.smpl_pickle import load_smpl_pickle

        raw = load_smpl_pickle(path)
        matrix = raw.get("mtx", raw.get("matrix"))
        if matrix is None:
            raise PriorInputError(f"{path}: no 'mtx' (or 'matrix') entry; is this a deformation transfer file?")
    matrix = matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix)
    return np.asarray(matrix, dtype=np.float64)


class FitReader:
    """World-frame body vertices of a scan's fit, in the configured body model's topology."""

    def __init__(self, body_model, deformation_transfer: str | None = None, smplx_model_dir: str | None = None):
        self.model = body_model
        self.deformation_transfer = deformation_transfer
        self.smplx_model_dir = smplx_model_dir
        self._transfer = None
        self._smplx = None

    def _smpl_vertices(self, fit: dict, scan: str, path: Path) -> np.ndarray:
        nb = self.model.num_betas
        betas = np.zeros(nb)
        given = np.asarray(fit.get("betas", np.zeros(nb)), dtype=np.float64).reshape(-1)[:nb]
        betas[:len(given)] = given
        if "body_pose" in fit:
            body_pose = _param(fit, "body_pose", 69, scan, path)
            global_orient = _param(fit, "global_orient", 3, scan, path)
        else:  # SMPLify-style single 72-vector
            pose = _param(fit, "pose", 72, scan, path)
            global_orient, body_pose = pose[:3], pose[3:]
        transl = _param(fit, "transl", 3, scan, path) if "transl" in fit else np.zeros(3)

        def t(x):
            return torch.as_tensor(x[None], dtype=torch.float32)

        with torch.no_grad():
            out = self.model(betas=t(betas), body_pose=t(body_pose), global_orient=t(global_orient), transl=t(transl))
        return out.vertices[0].double().numpy()

    def _smplx_vertices(self, fit: dict, scan: str, path: Path) -> np.ndarray:
        if "vertices" in fit:
            return np.asarray(fit["vertices"], dtype=np.float64).reshape(-1, 3)
        if self.smplx_model_dir is None:
            raise PriorInputError(f"scan {scan}: the SMPL-X fit {path} holds parameters, not vertices; set "
                                  "prior.smplx_model_dir to the SMPL-X model folder (https://smpl-x.is.tue.mpg.de)")
        import smplx

        if self._smplx is None:
            self._smplx = smplx.create(self.smplx_model_dir, model_type="smplx", gender=str(fit.get("gender", "neutral")),
                                       use_pca=False, num_betas=int(np.asarray(fit["betas"]).size))
        kwargs = {k: torch.as_tensor(np.asarray(fit[k], dtype=np.float32).reshape(1, -1))
                  for k in ("betas", "global_orient", "body_pose", "transl", "left_hand_pose", "right_hand_pose",
                            "jaw_pose", "leye_pose", "reye_pose", "expression") if k in fit}
        with torch.no_grad():
            return self._smplx(**kwargs).vertices[0].double().numpy()

    def vertices(self, fit_file: str | Path, fit_type: str, scan: str) -> np.ndarray:
        path = Path(fit_file) if fit_file is not None else Path(f"<no fit listed for {scan}>")
        fit = _read_fit_file(path, scan)
        if fit_type == "smpl":
            vertices = self._smpl_vertices(fit, scan, path)
        elif fit_type == "smplx":
            if self._transfer is None:
                self._transfer = read_deformation_transfer(self.deformation_transfer)
            source = self._smplx_vertices(fit, scan, path)
            if self._transfer.shape[1] == 2 * len(source):
                self._transfer = self._transfer[:, :len(source)]
            if self._transfer.shape[1] != len(source):
                raise PriorInputError(f"scan {scan}: the deformation transfer maps {self._transfer.shape[1]} vertices, "
                                      f"the SMPL-X fit has {len(source)}")
            vertices = self._transfer @ source
        else:
            raise PriorInputError(f"scan {scan}: unknown fit type {fit_type!r} (smpl or smplx)")
        if vertices.shape != (self.model.data.num_vertices, 3):
            raise PriorInputError(f"scan {scan}: the fit gives {len(vertices)} vertices, the body model has "
                                  f"{self.model.data.num_vertices}: fits must use the configured body model")
        return vertices


# ---------------------------------------------------------------------------------------------------
# Camera rigs


def scan_views(row: dict, scan: ScanMesh, rig, seed: int) -> list[dict]:
    """The scan's own rig file, or `rig.views` cameras around it generated from config."""
    if row.get("cameras"):
        path = Path(row["cameras"])
        if not path.is_file():
            raise PriorInputError(f"scan {row['scan']}: camera file {path} not found")
        views = json.loads(path.read_text())["views"]
        for v in views:
            missing = {"K", "R", "t", "width", "height"} - set(v)
            if missing:
                raise PriorInputError(f"scan {row['scan']}: a view in {path} lacks {sorted(missing)}")
        return views
    from pipeline.world.scans import camera_rig

    lo, hi = scan.vertices.min(0), scan.vertices.max(0)
    rng = np.random.default_rng([seed, zlib.crc32(b"prior-rig"), zlib.crc32(row["scan"].encode())])
    return camera_rig(0.5 * (lo + hi), float((hi - lo).max()), rng, rig)


# ---------------------------------------------------------------------------------------------------
# Map


def vote(face_id: np.ndarray, bary: np.ndarray, labels: np.ndarray, faces: np.ndarray, num_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts (V, 20) int64 from one view and the vertices seen in it (V,) bool.

    face_id (H, W) body face per pixel (-1: none), bary (H, W, 3), labels (H, W) parser labels in the
    same frame. Each covered pixel picks its face's nearest corner; labelled pixels (not background,
    not ignored) add one to that vertex's count of their label."""
    covered = face_id >= 0
    corner = bary[covered].argmax(axis=1)
    vertex = faces[face_id[covered], corner]
    seen = np.zeros(num_vertices, bool)
    seen[vertex] = True
    label = labels[covered].astype(np.int64)
    keep = (label != CIHP["Background"]) & (label != CIHP_IGNORE) & (label < NUM_CIHP_CLASSES)
    flat = np.bincount(vertex[keep] * NUM_CIHP_CLASSES + label[keep], minlength=num_vertices * NUM_CIHP_CLASSES)
    return flat.reshape(num_vertices, NUM_CIHP_CLASSES).astype(np.int64), seen


@dataclass
class MapSettings:
    label_resolution: int = 256  # side of the crop frame in which parser labels meet body faces
    box_rescale: float = 1.2  # the crop box around the projected body (SPIN's 1.2)
    seed: int = 0
    device: str = "cpu"


def map_scans(rows: list[dict], fits: FitReader, runner, rig, render: RenderSettings, settings: MapSettings,
              progress: bool = True, keep_views: int = 0) -> dict:
    """Counts, seen-view counts and per-scan records for `rows`; memory is one scan at a time.
    `keep_views` > 0 keeps that many (image, labels, face ids) triples for figures and tests."""
    from tqdm import tqdm

    from pipeline.crop import crop_intrinsics
    from pipeline.datasets import keypoints_center_scale

    model = fits.model
    faces = np.asarray(model.data.f, dtype=np.int64)
    faces_t = torch.as_tensor(faces, device=settings.device)
    V = model.data.num_vertices
    res = settings.label_resolution
    runner_res = getattr(getattr(runner, "settings", None), "label_resolution", res)
    if runner_res != res:
        raise ValueError(f"the parser writes labels at {runner_res} px, the prior's crop frame is {res} px")
    counts = np.zeros((V, NUM_CIHP_CLASSES), np.int64)
    seen_views = np.zeros(V, np.int32)
    records, kept = [], []
    for row in tqdm(rows, desc="prior scans", disable=not progress, mininterval=5):
        scan = load_scan_mesh(row["mesh"])
        body = fits.vertices(row["fit"], row["fit_type"], row["scan"])
        views = scan_views(row, scan, rig, settings.seed)
        jobs, geometry = [], []
        for k, view in enumerate(views):
            K, R, t = (np.asarray(view[key], dtype=np.float64) for key in ("K", "R", "t"))
            image = render_scan(scan, R, t, K, int(view["height"]), int(view["width"]), render, settings.device)
            cam = body @ R.T + t
            if (cam[:, 2] <= 1e-3).any():
                raise PriorInputError(f"scan {row['scan']}: view {k} has the camera inside or behind the body")
            projected = cam[:, :2] / cam[:, 2:3] * K[[0, 1], [0, 1]] + K[:2, 2]
            center, scale = keypoints_center_scale(np.c_[projected, np.ones(len(projected))], 0.0, settings.box_rescale)
            jobs.append((k, image, center, scale))
            geometry.append((cam, crop_intrinsics(K, center, scale, res)))
        for k, labels in runner.label_crops(iter(jobs)):
            cam, K_crop = geometry[k]
            r = rasterize(torch.as_tensor(cam, device=settings.device), faces_t, torch.as_tensor(K_crop, device=settings.device), res, res)
            face_id, bary = r.face_id.cpu().numpy(), r.bary.cpu().numpy()
            c, seen = vote(face_id, bary, labels, faces, V)
            counts += c
            seen_views += seen
            if len(kept) < keep_views:
                kept.append({"image": jobs[k][1], "labels": labels, "face_id": face_id, "center": jobs[k][2], "scale": jobs[k][3]})
        records.append({"scan": row["scan"], "views": len(views), "mesh_sha256": file_hash(row["mesh"]),
                        "fit_sha256": file_hash(row["fit"])})
    return {"counts": counts, "seen_views": seen_views, "records": records, "kept": kept}


def write_map_shard(index_file: str, indices: range, body_file: str, weights: str, variant: str, parse_settings,
                    rig, render: RenderSettings, settings: MapSettings, out: str, fit_type: str | None = None,
                    deformation_transfer: str | None = None, smplx_model_dir: str | None = None) -> dict:
    from models.graphonomy import from_pretrained
    from pipeline.body.model import BodyModel
    from pipeline.io import save_npz
    from pipeline.parsing import ParserRunner

    rows = read_scan_index(index_file)
    if indices.stop > len(rows):
        raise PriorInputError(f"{index_file} lists {len(rows)} scans; this shard asks for {indices.start}..{indices.stop - 1}: "
                              "the scan count in config does not match the index (rebuild it)")
    rows = rows[indices.start:indices.stop]
    if fit_type is not None:
        rows = [{**r, "fit_type": fit_type} for r in rows]
    fits = FitReader(BodyModel.from_file(body_file), deformation_transfer, smplx_model_dir)
    import dataclasses

    # the parser writes its labels straight into the prior's crop frame
    parse_settings = dataclasses.replace(parse_settings, label_resolution=settings.label_resolution)
    runner = ParserRunner(from_pretrained(weights, variant=variant), parse_settings)
    result = map_scans(rows, fits, runner, rig, render, settings)
    records = result["records"]
    save_npz(out, {
        "counts": result["counts"],
        "seen_views": result["seen_views"],
        "scans": np.array([r["scan"] for r in records], dtype=str),
        "views": np.array([r["views"] for r in records], dtype=np.int64),
        "mesh_sha256": np.array([r["mesh_sha256"] for r in records], dtype=str),
        "fit_sha256": np.array([r["fit_sha256"] for r in records], dtype=str),
        "parser_sha256": np.array(file_hash(weights)),
    })
    return {"scans": len(records), "views": int(sum(r["views"] for r in records))}


# ---------------------------------------------------------------------------------------------------
# Reduce


def load_part_rules(path: str | Path = PART_RULES_PATH) -> np.ndarray:
    """(24 parts, 20 labels) bool: which labels a body part may carry."""
    import yaml

    from pipeline.skeleton import SMPL_PART_NAMES

    spec = yaml.safe_load(Path(path).read_text())["allowed_parts"]
    allowed = np.zeros((len(SMPL_PART_NAMES), NUM_CIHP_CLASSES), bool)
    allowed[:, CIHP["Background"]] = True
    unknown_labels = set(spec) - set(CIHP_LABELS)
    if unknown_labels:
        raise ValueError(f"{path}: unknown labels {sorted(unknown_labels)}")
    for label, parts in spec.items():
        if parts == "all":
            allowed[:, CIHP[label]] = True
            continue
        unknown = set(parts) - set(SMPL_PART_NAMES)
        if unknown:
            raise ValueError(f"{path}: label {label}: unknown parts {sorted(unknown)}")
        for part in parts:
            allowed[SMPL_PART_NAMES.index(part), CIHP[label]] = True
    missing = set(CIHP_LABELS[1:]) - set(spec)
    if missing:
        raise ValueError(f"{path}: no rule for labels {sorted(missing)}")
    return allowed


def pool_sides(counts: np.ndarray, part_labels: np.ndarray) -> np.ndarray:
    """Counts with every left/right label pair pooled onto the side of the vertex's own body part.

    A parser decides left from right by how the person faces the camera; from behind it often gets
    it wrong, but the fitted body knows which side each vertex is on (SMPL's part names: the
    person's own left and right). On a left-side part, votes for Right-arm count as Left-arm (and
    the mirror); vertices of central parts (spine, hips, neck, head) keep their counts."""
    from pipeline.skeleton import SMPL_PART_NAMES

    names = [SMPL_PART_NAMES[p] for p in np.asarray(part_labels)]
    left = np.array([n.startswith("left") for n in names])
    right = np.array([n.startswith("right") for n in names])
    pooled = counts.copy()
    for lo, ro in CIHP_FLIP_PAIRS:
        both = counts[:, lo] + counts[:, ro]
        pooled[left, lo], pooled[left, ro] = both[left], 0
        pooled[right, ro], pooled[right, lo] = both[right], 0
    return pooled


def fill_unseen(dist: np.ndarray, seen: np.ndarray, faces: np.ndarray, max_iterations: int = 200) -> np.ndarray:
    """Vertices never seen take the mean distribution of their already-filled neighbours, ring by ring."""
    adj = vertex_adjacency(faces, len(dist))
    dist = dist.copy()
    known = seen.copy()
    for _ in range(max_iterations):
        if known.all():
            break
        sums = adj @ (dist * known[:, None])
        weight = adj @ known.astype(np.float64)
        grow = ~known & (weight > 0)
        if not grow.any():
            break
        dist[grow] = sums[grow] / weight[grow, None]
        known |= grow
    dist[~known] = 1.0 / NUM_CIHP_CLASSES  # parts of the mesh no seen vertex connects to
    return dist


def reduce_counts(shard_files: list[str], body_file: str, out: str, background_probability: float = 0.01,
                  part_cleaning: bool = True, rules_file: str | Path = PART_RULES_PATH, sides_from_body: bool = True) -> dict:
    from pipeline.body.model import load_body_model
    from pipeline.io import save_npz

    data = load_body_model(body_file)
    faces = np.asarray(data.f, dtype=np.int64)
    V = data.num_vertices
    counts = np.zeros((V, NUM_CIHP_CLASSES), np.int64)
    seen_views = np.zeros(V, np.int64)
    scans, views, mesh_hashes, fit_hashes, parser_hashes = [], [], [], [], set()
    for f in shard_files:  # one shard in memory at a time
        with np.load(f, allow_pickle=False) as z:
            if z["counts"].shape != counts.shape:
                raise ValueError(f"{f}: counts of shape {z['counts'].shape}, the body model needs {counts.shape}: "
                                 "shards from another body model; rerun the prior's map jobs")
            counts += z["counts"]
            seen_views += z["seen_views"]
            scans += z["scans"].tolist()
            views += z["views"].tolist()
            mesh_hashes += z["mesh_sha256"].tolist()
            fit_hashes += z["fit_sha256"].tolist()
            parser_hashes.add(str(z["parser_sha256"]))
    if len(parser_hashes) > 1:
        raise ValueError(f"prior shards were parsed with different parser weights ({sorted(parser_hashes)}): rerun them")
    # one canonical order, so the file does not depend on the order shards were listed in
    order = np.argsort(scans, kind="stable")
    scans, views = np.array(scans, dtype=str)[order], np.array(views, dtype=np.int64)[order]
    mesh_hashes, fit_hashes = np.array(mesh_hashes, dtype=str)[order], np.array(fit_hashes, dtype=str)[order]
    seen = counts.sum(1) > 0
    votes = pool_sides(counts, data.part_labels) if sides_from_body else counts
    dist = np.zeros((V, NUM_CIHP_CLASSES))
    dist[seen] = votes[seen] / votes[seen].sum(1, keepdims=True)
    dist = fill_unseen(dist, seen, faces)
    if part_cleaning:
        allowed = load_part_rules(rules_file)[np.asarray(data.part_labels)]
        cleaned = dist * allowed
        total = cleaned.sum(1, keepdims=True)
        # a vertex whose every label is implausible keeps its distribution (nothing better is known)
        dist = np.where(total > 0, cleaned / np.maximum(total, 1e-12), dist)
    dist[:, CIHP["Background"]] = 0.0
    dist = dist / dist.sum(1, keepdims=True)
    dist = (1 - background_probability) * dist
    dist[:, CIHP["Background"]] += background_probability
    face_prior = dist[faces].mean(axis=1)
    result = {
        "format_version": np.array(PRIOR_FORMAT),
        "vertex_prior": dist.astype(np.float32),
        "face_prior": face_prior.astype(np.float32),
        "counts": counts,
        "seen_views": seen_views,
        "labels": np.array(CIHP_LABELS, dtype=str),
        "num_scans": np.array(len(scans)),
        "num_views": np.array(int(views.sum())),
        "scans": scans,
        "views": views,
        "mesh_sha256": mesh_hashes,
        "fit_sha256": fit_hashes,
        "parser_sha256": np.array(next(iter(parser_hashes), "")),
        "body_sha256": np.array(file_hash(body_file)),
        "background_probability": np.array(background_probability),
        "part_cleaning": np.array(part_cleaning),
        "sides_from_body": np.array(sides_from_body),
    }
    save_npz(out, result)
    return {"scans": len(scans), "views": int(views.sum()), "seen_vertices": int(seen.sum()), "vertices": V}


# ---------------------------------------------------------------------------------------------------
# Check and figure


def ground_truth_distribution(index_file: str | Path, num_vertices: int) -> tuple[np.ndarray, int]:
    """Summed one-hot ground-truth labels (V, 20) over the scans of the index that carry them."""
    total = np.zeros((num_vertices, NUM_CIHP_CLASSES), np.int64)
    n = 0
    for row in read_scan_index(index_file):
        if row.get("gt_vertex_labels"):
            labels = np.load(row["gt_vertex_labels"])
            total[np.arange(num_vertices), labels.astype(np.int64)] += 1
            n += 1
    return total, n


def check_prior(prior_file: str, index_file: str, out: str, goal_agreement: float = 0.9,
                min_agreement: float | None = None) -> dict:
    """Argmax agreement with the demo scans' ground truth over seen vertices; reported against
    `goal_agreement`, and a failure below `min_agreement` when that is set."""
    from pipeline.io import atomic_output

    with np.load(prior_file, allow_pickle=False) as z:
        prior, seen_views = z["vertex_prior"], z["seen_views"]
    truth, n = ground_truth_distribution(index_file, len(prior))
    if n == 0:
        raise ValueError(f"{index_file}: no scan has ground-truth vertex labels; the check needs the demo world's scans")
    seen = seen_views > 0
    clothing = prior.copy()
    clothing[:, CIHP["Background"]] = -1
    predicted, expected = clothing.argmax(1), truth.argmax(1)
    agree = predicted == expected
    per_label = {}
    for label in np.unique(expected[seen]):
        sel = seen & (expected == label)
        per_label[CIHP_LABELS[label]] = {"vertices": int(sel.sum()), "agreement": float(agree[sel].mean())}
    result = {
        "argmax_agreement": float(agree[seen].mean()),
        "seen_vertices": int(seen.sum()),
        "vertices": int(len(prior)),
        "scans_with_ground_truth": n,
        "per_label": per_label,
        "goal_agreement": goal_agreement,
        "meets_goal": bool(agree[seen].mean() >= goal_agreement),
        "min_agreement": min_agreement,
    }
    with atomic_output(out) as tmp:
        Path(tmp).write_text(json.dumps(result, indent=1))
    if min_agreement is not None and result["argmax_agreement"] < min_agreement:
        raise RuntimeError(f"the clothing prior's argmax agrees with the ground truth on {result['argmax_agreement']:.3f} "
                           f"of seen vertices, below {min_agreement} ({out})")
    return result


def prior_figure(prior_file: str, body_file: str, out: str, size: int = 320) -> None:
    """The body in its rest pose coloured by its most likely clothing label, front and back."""
    from PIL import Image, ImageDraw

    from pipeline.body.model import load_body_model
    from pipeline.figures import save_grid
    from pipeline.labelsets import palette
    from pipeline.world.scans import opencv_look_at

    data = load_body_model(body_file)
    with np.load(prior_file, allow_pickle=False) as z:
        prior = z["vertex_prior"].copy()
        num_scans, num_views = int(z["num_scans"]), int(z["num_views"])
    prior[:, CIHP["Background"]] = -1
    colours = palette(NUM_CIHP_CLASSES)[prior.argmax(1)].astype(np.float64) / 255.0
    verts = np.asarray(data.v_template, dtype=np.float64)
    faces = np.asarray(data.f, dtype=np.int64)
    lo, hi = verts.min(0), verts.max(0)
    center, extent = 0.5 * (lo + hi), float((hi - lo).max())
    scan = ScanMesh(verts, faces, vertex_normals(verts, faces), colours)
    f = size * 0.85 * 3.0 / extent
    K = np.array([[f, 0, (size - 1) / 2], [0, f, (size - 1) / 2], [0, 0, 1.0]])
    tiles = []
    for name, direction in (("front", 1.0), ("back", -1.0)):
        R, t = opencv_look_at(center + np.array([0.0, 0.0, 3.0 * direction]), center)
        tile = render_scan(scan, R, t, K, size, size, RenderSettings(ambient=0.55, background=(1.0, 1.0, 1.0)))
        im = Image.fromarray(tile)
        ImageDraw.Draw(im).text((6, 6), name, fill=(0, 0, 0))
        tiles.append(np.asarray(im))
    present = sorted(set(prior.argmax(1).tolist()))
    legend = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(legend)
    for k, label in enumerate(present):
        draw.rectangle((10, 10 + 18 * k, 24, 24 + 18 * k), fill=tuple(int(c) for c in palette(NUM_CIHP_CLASSES)[label]))
        draw.text((32, 11 + 18 * k), CIHP_LABELS[label], fill=(0, 0, 0))
    tiles.append(np.asarray(legend))
    save_grid(tiles, out, per_row=3, banner=f"clothing prior: most likely label per vertex ({num_scans} scans, {num_views} views)")


# ---------------------------------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> int:
    import argparse
    import time

    from pipeline.config import resolve_device
    from pipeline.parsing import add_inference_arguments, settings_from_arguments

    parser = argparse.ArgumentParser(prog="python -m pipeline.prior", description="DSR's clothing semantic prior")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("index", help="index an AGORA-style scan folder (meshes/, fits/, cameras/)")
    p.add_argument("root")
    p.add_argument("out")
    p.add_argument("--fit-type", choices=("smpl", "smplx"), default="smpl")
    p = sub.add_parser("map", help="render, parse and count labels per body vertex for scans START..STOP-1")
    p.add_argument("index")
    p.add_argument("body")
    p.add_argument("weights")
    p.add_argument("out")
    p.add_argument("--indices", type=int, nargs=2, required=True, metavar=("START", "STOP"))
    p.add_argument("--fit-type", choices=("smpl", "smplx"))
    p.add_argument("--deformation-transfer")
    p.add_argument("--smplx-model-dir")
    p.add_argument("--views", type=int, default=10)
    p.add_argument("--elevation-deg", type=float, default=10.0)
    p.add_argument("--distance", type=float, default=2.6)
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--ambient", type=float, default=0.45)
    p.add_argument("--prior-resolution", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    add_inference_arguments(p)
    p = sub.add_parser("reduce", help="sum shard counts into the prior")
    p.add_argument("body")
    p.add_argument("out")
    p.add_argument("shards", nargs="+")
    p.add_argument("--background-probability", type=float, default=0.01)
    p.add_argument("--no-part-cleaning", dest="part_cleaning", action="store_false")
    p.add_argument("--rules", default=str(PART_RULES_PATH))
    p.add_argument("--sides", choices=("body", "parser"), default="body",
                   help="left/right label pairs: pooled onto the side of the vertex's own body part (default) or as voted")
    p = sub.add_parser("check", help="argmax agreement with the demo scans' ground truth")
    p.add_argument("prior")
    p.add_argument("index")
    p.add_argument("out")
    p.add_argument("--goal-agreement", type=float, default=0.9)
    p.add_argument("--min-agreement", type=float, help="fail below this agreement (default: report only)")
    p = sub.add_parser("figure", help="the body coloured by its most likely label, front and back")
    p.add_argument("prior")
    p.add_argument("body")
    p.add_argument("out")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    if args.command == "index":
        log.info("%d scans indexed in %s", build_scan_index(args.root, args.out, args.fit_type), args.out)
    elif args.command == "map":
        from pipeline.world.scans import RigSettings

        parse_settings = settings_from_arguments(args)
        rig = RigSettings(views=args.views, elevation_deg=args.elevation_deg, distance=args.distance, resolution=args.resolution)
        settings = MapSettings(label_resolution=args.prior_resolution, seed=args.seed, device=resolve_device(args.device))
        done = write_map_shard(args.index, range(*args.indices), args.body, args.weights, args.variant, parse_settings, rig,
                               RenderSettings(ambient=args.ambient), settings, args.out, args.fit_type,
                               args.deformation_transfer, args.smplx_model_dir)
        seconds = time.perf_counter() - start
        log.info("scans %d-%d: %s on %s, %.2f views/s", args.indices[0], args.indices[1] - 1, done, settings.device,
                 done["views"] / seconds)
    elif args.command == "reduce":
        log.info("%s", reduce_counts(args.shards, args.body, args.out, args.background_probability, args.part_cleaning, args.rules,
                                     args.sides == "body"))
    elif args.command == "check":
        result = check_prior(args.prior, args.index, args.out, args.goal_agreement, args.min_agreement)
        log.info("argmax agreement %.4f over %d seen vertices (goal %.2f: %s)", result["argmax_agreement"],
                 result["seen_vertices"], args.goal_agreement, "met" if result["meets_goal"] else "NOT met")
    elif args.command == "figure":
        prior_figure(args.prior, args.body, args.out)
    log.info("done in %.1f s", time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
