"""Clothed scans and their body fits, as the prior's map stage reads them: the scan index (the demo
world writes one; `build_scan_index` makes one for an AGORA-style folder), mesh loading (vertex
colours or a UV texture) and shaded rendering, fit reading (SMPL parameters, or SMPL-X through the
deformation transfer) and each scan's camera rig (its own file, or one generated from config).

Every bad file stops with a `ScanInputError` naming the scan, the file and the fix.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.io import atomic_output
from pipeline.camera import RigSettings, camera_rig, supersampled_intrinsics
from pipeline.raster import rasterize
from pipeline.skeleton import BODY_POSE_SIZE, SMPL_POSE_SIZE


class ScanInputError(ValueError):
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
    root = Path(root).resolve()
    meshes_dir = root / "meshes"
    if not meshes_dir.is_dir():
        raise ScanInputError(f"{root}: no meshes/ folder; an AGORA-style scan folder holds meshes/, fits/ and optionally cameras/")
    meshes = {}
    for path in sorted(meshes_dir.rglob("*")):
        if path.suffix.lower() in MESH_SUFFIXES and path.is_file():
            if path.stem in meshes:
                raise ScanInputError(f"scan {path.stem!r} has two meshes: {meshes[path.stem]} and {path}")
            meshes[path.stem] = path
    if not meshes:
        raise ScanInputError(f"{meshes_dir}: no scan meshes ({', '.join(MESH_SUFFIXES)})")
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
        raise ScanInputError("scans without a body fit (fit each scan, or remove it):\n  " + "\n  ".join(missing))
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
        raise ScanInputError(f"scan mesh not found: {path}")
    try:
        mesh = trimesh.load(path, process=False, force="mesh")
    except Exception as e:  # trimesh raises many types for unreadable files
        raise ScanInputError(f"cannot read scan mesh {path}: {e}") from e
    if len(mesh.faces) == 0:
        raise ScanInputError(f"scan mesh {path} has no faces")
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    normals = np.asarray(mesh.vertex_normals, dtype=np.float64)
    visual = mesh.visual
    if visual.kind == "texture" and getattr(visual, "uv", None) is not None:
        material = visual.material
        image = getattr(material, "image", None) or getattr(material, "baseColorTexture", None)
        if image is None:
            raise ScanInputError(f"scan mesh {path} has texture coordinates but its texture image was not found "
                                  "(check the .mtl file's map_Kd path)")
        texture = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        return ScanMesh(vertices, np.asarray(mesh.faces), normals, None, np.asarray(visual.uv, dtype=np.float64), texture)
    if visual.kind == "vertex":
        colours = np.asarray(visual.vertex_colors[:, :3], dtype=np.float64) / 255.0
        return ScanMesh(vertices, np.asarray(mesh.faces), normals, colours)
    raise ScanInputError(f"scan mesh {path} has neither vertex colours nor a UV texture: the parser needs its appearance")


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
        raise ScanInputError(f"scan {scan}: body fit not found at {path}; every scan needs its fit (SMPL parameters, "
                              "or SMPL-X parameters with prior.fit_type smplx)")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    if path.suffix == ".pkl":
        from pipeline.body.smpl_pickle import loads_smpl_pickle

        try:
            return {k: np.asarray(v) for k, v in loads_smpl_pickle(path.read_bytes(), source=str(path)).items()}
        except Exception as e:
            raise ScanInputError(f"scan {scan}: cannot read the fit {path} ({e}); convert it to .npz with numpy arrays "
                                  "betas, global_orient, body_pose, transl") from e
    raise ScanInputError(f"scan {scan}: fit {path} is neither .npz nor .pkl")


def _param(fit: dict, key: str, size: int, scan: str, path: Path) -> np.ndarray:
    if key not in fit:
        raise ScanInputError(f"scan {scan}: fit {path} has no {key!r} (keys: {sorted(fit)})")
    value = np.asarray(fit[key], dtype=np.float64).reshape(-1)
    if value.size < size:
        raise ScanInputError(f"scan {scan}: fit {path}: {key!r} has {value.size} values, expected {size}")
    return value[:size]


def read_deformation_transfer(path: str | Path | None) -> np.ndarray:
    """SMPL-X -> SMPL deformation transfer (the SMPL-X release's smplx2smpl_deftrafo_setup.pkl): a
    (6890, 10475) matrix, or (6890, 2 * 10475) whose second half acts on normals and is dropped."""
    if path is None or not Path(path).is_file():
        raise ScanInputError(
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
            raise ScanInputError(f"{path}: no 'mtx' (or 'matrix') entry; is this a deformation transfer file?")
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
            body_pose = _param(fit, "body_pose", BODY_POSE_SIZE, scan, path)
            global_orient = _param(fit, "global_orient", 3, scan, path)
        else:  # SMPLify-style single 72-vector
            pose = _param(fit, "pose", SMPL_POSE_SIZE, scan, path)
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
            raise ScanInputError(f"scan {scan}: the SMPL-X fit {path} holds parameters, not vertices; set "
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
                raise ScanInputError(f"scan {scan}: the deformation transfer maps {self._transfer.shape[1]} vertices, "
                                      f"the SMPL-X fit has {len(source)}")
            vertices = self._transfer @ source
        else:
            raise ScanInputError(f"scan {scan}: unknown fit type {fit_type!r} (smpl or smplx)")
        if vertices.shape != (self.model.data.num_vertices, 3):
            raise ScanInputError(f"scan {scan}: the fit gives {len(vertices)} vertices, the body model has "
                                  f"{self.model.data.num_vertices}: fits must use the configured body model")
        return vertices


# ---------------------------------------------------------------------------------------------------
# Camera rigs


def scan_views(row: dict, scan: ScanMesh, rig: RigSettings, seed: int) -> list[dict]:
    """The scan's own rig file, or `rig.views` cameras around it generated from config."""
    if row.get("cameras"):
        path = Path(row["cameras"])
        if not path.is_file():
            raise ScanInputError(f"scan {row['scan']}: camera file {path} not found")
        views = json.loads(path.read_text())["views"]
        for v in views:
            missing = {"K", "R", "t", "width", "height"} - set(v)
            if missing:
                raise ScanInputError(f"scan {row['scan']}: a view in {path} lacks {sorted(missing)}")
        return views
    lo, hi = scan.vertices.min(0), scan.vertices.max(0)
    rng = np.random.default_rng([seed, zlib.crc32(b"prior-rig"), zlib.crc32(row["scan"].encode())])
    return camera_rig(0.5 * (lo + hi), float((hi - lo).max()), rng, rig)
