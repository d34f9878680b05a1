"""One demo-world image: people in clothes in front of clutter, a perspective camera, optional
occluding objects; the photo, its annotation row in the SPIN/EFT format, and exact ground truth.

Camera frame: OpenCV (x right, y down, z forward, metres). Ground-truth maps are rendered with the
project's rasteriser at pixel centres (exact ids); the photo is rendered at twice the resolution,
shaded, and box-filtered down.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import trimesh
from scipy.spatial.transform import Rotation

from pipeline.body.model import BodyModel, joints49
from pipeline.camera import crop_intrinsics, project, supersampled_intrinsics
from pipeline.crop import PIXELS_PER_SCALE
from pipeline.mesh import vertex_normals
from pipeline.raster import rasterize
from pipeline.skeleton import JOINTS49_NAMES, NUM_OPENPOSE_JOINTS
from pipeline.world.clothing import Material, Outfit, face_labels, garment_labels, sample_outfit
from pipeline.world.poses import PosePrior

SMPL_TO_CAMERA = np.diag([1.0, -1.0, -1.0])  # SMPL (y up, facing +z) -> OpenCV camera, facing the camera
INSTANCE = {"background": 0, "person": 1, "other_person": 2, "occluder": 3}
_SURFACE_JOINTS = {i for i, n in enumerate(JOINTS49_NAMES)
                   if any(k in n for k in ("Nose", "Eye", "Ear", "Toe", "Heel"))}


@dataclass
class WorldSettings:
    image_sizes: tuple[tuple[int, int], ...] = ((320, 320), (288, 384), (384, 288), (256, 320))  # (height, width)
    focal_factor: tuple[float, float] = (1.1, 1.8)  # focal length / image width
    person_height: tuple[float, float] = (0.45, 0.85)  # fraction of the image height
    second_person_prob: float = 0.3
    occluders: tuple[int, int] = (0, 0)  # how many objects cover the person (min, max)
    occluded_fraction: tuple[float, float] = (0.1, 0.6)  # wanted share of the person covered, when occluded
    no_smpl_fraction: float = 0.0  # rows written with has_smpl = 0 (as COCO rows without fits)
    crop_res: int = 224
    bbox_rescale: float = 1.2
    supersample: int = 2


@dataclass
class SceneContext:
    """What every sample of a run shares: the body model and its rest-pose tables."""

    model: BodyModel
    prior: PosePrior
    faces: torch.Tensor  # (F, 3)
    rest_vertices: np.ndarray
    rest_joints: np.ndarray
    parts: np.ndarray  # (V,) part id per vertex
    face_parts: np.ndarray  # (F,) part id per face: the minimum of its vertices

    @classmethod
    def create(cls, model: BodyModel, prior: PosePrior | None = None) -> "SceneContext":
        data = model.data
        faces = np.asarray(data.f, dtype=np.int64)
        return cls(model=model, prior=prior or PosePrior.load(), faces=torch.as_tensor(faces),
                   rest_vertices=np.asarray(data.v_template), rest_joints=data.J_regressor @ data.v_template,
                   parts=np.asarray(data.part_labels), face_parts=np.asarray(data.part_labels)[faces].min(axis=1))


@dataclass
class Person:
    betas: np.ndarray
    body_pose: np.ndarray  # (69,)
    global_orient: np.ndarray  # (3,) axis-angle, camera frame
    transl: np.ndarray  # (3,) camera frame
    template: str
    outfit: Outfit
    vertices: np.ndarray  # (V, 3) camera frame
    normals: np.ndarray  # (V, 3)
    joints49: np.ndarray  # (49, 3) camera frame
    vertex_labels: np.ndarray  # (V,) CIHP


@dataclass
class Occluder:
    vertices: np.ndarray  # camera frame
    faces: np.ndarray
    normals: np.ndarray
    local: np.ndarray  # object-frame points, for the material
    material: Material


@dataclass
class Sample:
    image: np.ndarray  # (H, W, 3) uint8
    K: np.ndarray  # (3, 3)
    person: Person
    others: list[Person]
    occluders: list[Occluder]
    center: np.ndarray
    scale: float
    keypoints: np.ndarray  # (49, 3) pixels + visibility/confidence, openpose first
    has_smpl: bool
    full: dict[str, np.ndarray]  # "parts", "cihp", "instance": (H, W) uint8
    crop: dict[str, np.ndarray]  # same, (res, res), in the crop frame
    depth: np.ndarray  # (H, W) metres, inf on background
    meta: dict = field(default_factory=dict)


def _pose_person(ctx: SceneContext, rng: np.random.Generator, rotation: np.ndarray) -> tuple:
    betas = np.clip(rng.normal(0.0, 1.0, ctx.model.num_betas), -2.5, 2.5)
    template, body_pose = ctx.prior.sample(rng)
    orient = Rotation.from_matrix(rotation).as_rotvec()
    with torch.no_grad():
        out = ctx.model(betas=torch.as_tensor(betas[None], dtype=torch.float32),
                        body_pose=torch.as_tensor(body_pose[None], dtype=torch.float32),
                        global_orient=torch.as_tensor(orient[None], dtype=torch.float32))
    return betas, body_pose, orient, template, out.vertices[0].double().numpy(), joints49(out)[0].double().numpy()


def _person(ctx: SceneContext, rng: np.random.Generator, camera_pitch: float, place) -> Person:
    yaw = rng.uniform(0, 2 * np.pi)
    tilt = Rotation.from_rotvec(rng.normal(0, 0.06, 3)).as_matrix()
    rotation = Rotation.from_rotvec([camera_pitch, 0, 0]).as_matrix() @ SMPL_TO_CAMERA @ \
        Rotation.from_rotvec([0, yaw, 0]).as_matrix() @ tilt
    betas, body_pose, orient, template, verts, j49 = _pose_person(ctx, rng, rotation)
    transl = place(verts)
    verts = verts + transl
    outfit = sample_outfit(rng)
    labels = garment_labels(ctx.rest_vertices, ctx.parts, ctx.rest_joints, outfit)
    return Person(betas, body_pose, orient, transl, template, outfit, verts,
                  vertex_normals(verts, ctx.faces.numpy()), j49 + transl, labels)


def _occluder(rng: np.random.Generator, K: np.ndarray, target_px: np.ndarray, size_px: np.ndarray, depth: float) -> Occluder:
    f = K[0, 0]
    size = size_px * depth / f  # metres (width, height)
    kind = rng.choice(["box", "cylinder", "sphere"], p=[0.5, 0.3, 0.2])
    if kind == "box":
        mesh = trimesh.creation.box(extents=[size[0], size[1], rng.uniform(0.1, 0.5)])
    elif kind == "cylinder":
        mesh = trimesh.creation.cylinder(radius=size[0] / 2, height=size[1], sections=32)
        mesh.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))
    else:
        mesh = trimesh.creation.icosphere(subdivisions=3, radius=float(size.mean()) / 2)
    local = np.asarray(mesh.vertices).copy()
    spin = Rotation.from_rotvec([rng.normal(0, 0.1), rng.uniform(-0.6, 0.6), rng.normal(0, 0.1)]).as_matrix()
    center = np.array([(target_px[0] - K[0, 2]) * depth / f, (target_px[1] - K[1, 2]) * depth / f, depth])
    verts = local @ spin.T + center
    faces = np.asarray(mesh.faces)
    colour = rng.uniform(0.1, 0.9, 3)
    pattern = rng.choice(["solid", "stripes", "checks", "mottled"])
    material = Material(colour, np.clip(colour * rng.uniform(0.3, 0.8), 0, 1), str(pattern), period=rng.uniform(0.03, 0.12))
    return Occluder(verts, faces, vertex_normals(verts, faces), local, material)


def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) float image of clutter: a wall and a floor, then random rectangles, discs and bars."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    horizon = rng.uniform(0.35, 0.75) * height
    wall, floor = rng.uniform(0.2, 0.9, 3), rng.uniform(0.15, 0.7, 3)
    img = np.where((ys < horizon)[..., None], wall * (0.8 + 0.2 * ys[..., None] / height), floor * (0.7 + 0.3 * ys[..., None] / height))
    for _ in range(rng.integers(8, 25)):
        colour = rng.uniform(0.05, 0.95, 3)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        sx, sy = rng.uniform(0.03, 0.3) * width, rng.uniform(0.03, 0.3) * height
        kind = rng.integers(3)
        freq = rng.uniform(0.05, 0.4, 2)
        if kind < 2:  # rectangle or disc: work inside its box only
            r0, r1 = int(max(cy - sy / 2, 0)), int(min(cy + sy / 2, height - 1)) + 1
            c0, c1 = int(max(cx - sx / 2, 0)), int(min(cx + sx / 2, width - 1)) + 1
            yy, xx = ys[r0:r1, c0:c1], xs[r0:r1, c0:c1]
            if kind == 1:
                mask = ((xx - cx) / sx) ** 2 + ((yy - cy) / sy) ** 2 < 0.25
            else:
                mask = np.ones(yy.shape, bool)
            region = img[r0:r1, c0:c1]
        else:  # a thin bar across the frame
            a = rng.uniform(0, np.pi)
            yy, xx = ys, xs
            mask = np.abs((xx - cx) * np.sin(a) - (yy - cy) * np.cos(a)) < rng.uniform(1, 6) * width / 320
            region = img
        shade = 1.0 + 0.15 * np.sin(xx[mask] * freq[0] + yy[mask] * freq[1])
        region[mask] = colour * shade[:, None]
    return np.clip(img, 0, 1)


class SceneMeshes:
    """All geometry of a scene as one mesh, with per-face object, label and material indices."""

    def __init__(self, ctx: SceneContext, people: list[Person], occluders: list[Occluder]):
        faces = ctx.faces.numpy()
        verts, fs, tex, normals, obj, labels, mats, materials = [], [], [], [], [], [], [], []
        offset = 0
        for k, p in enumerate(people):
            flab = face_labels(p.vertex_labels, faces)
            mat_index = {}
            for label in np.unique(flab):
                mat_index[label] = len(materials)
                materials.append(p.outfit.materials[int(label)])
            verts.append(p.vertices), fs.append(faces + offset), tex.append(ctx.rest_vertices), normals.append(p.normals)
            obj.append(np.full(len(faces), INSTANCE["person"] if k == 0 else INSTANCE["other_person"]))
            labels.append(flab), mats.append(np.vectorize(mat_index.get)(flab))
            offset += len(p.vertices)
        for o in occluders:
            verts.append(o.vertices), fs.append(o.faces + offset), tex.append(o.local), normals.append(o.normals)
            obj.append(np.full(len(o.faces), INSTANCE["occluder"])), labels.append(np.zeros(len(o.faces), np.uint8))
            mats.append(np.full(len(o.faces), len(materials)))
            materials.append(o.material)
            offset += len(o.vertices)
        self.vertices = torch.as_tensor(np.concatenate(verts))
        self.faces = torch.as_tensor(np.concatenate(fs))
        self.texcoords = torch.as_tensor(np.concatenate(tex))
        self.normals = torch.as_tensor(np.concatenate(normals))
        self.face_object = np.concatenate(obj).astype(np.uint8)
        self.face_label = np.concatenate(labels).astype(np.uint8)
        self.face_material = np.concatenate(mats).astype(np.int64)
        self.materials = materials
        self.num_person_faces = len(faces)


def render_label_maps(scene: SceneMeshes, ctx: SceneContext, K: np.ndarray, height: int, width: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Modal instance and CIHP maps of everything, amodal part map of the main person alone, and the depth."""
    Kt = torch.as_tensor(K)
    r = rasterize(scene.vertices, scene.faces, Kt, height, width)
    fid = r.face_id.numpy()
    hit = fid >= 0
    instance = np.zeros((height, width), np.uint8)
    cihp = np.zeros((height, width), np.uint8)
    instance[hit] = scene.face_object[fid[hit]]
    cihp[hit] = scene.face_label[fid[hit]]
    main = rasterize(scene.vertices[: len(ctx.rest_vertices)], ctx.faces, Kt, height, width).face_id.numpy()
    parts = np.where(main >= 0, ctx.face_parts[np.maximum(main, 0)] + 1, 0).astype(np.uint8)
    return {"parts": parts, "cihp": cihp, "instance": instance}, r.depth.numpy()


def _shade(scene: SceneMeshes, K: np.ndarray, height: int, width: int, rng: np.random.Generator, ss: int) -> tuple[np.ndarray, np.ndarray]:
    """(H*ss, W*ss, 3) shaded colours and coverage mask at `ss` times the resolution."""
    r = rasterize(scene.vertices, scene.faces, torch.as_tensor(supersampled_intrinsics(K, ss)), height * ss, width * ss)
    mask = r.mask.numpy()
    fid = r.face_id.numpy()[mask]
    points = r.interpolate_covered(scene.texcoords, scene.faces).numpy()
    normals = r.interpolate_covered(scene.normals, scene.faces).numpy()
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-9)
    albedo = np.zeros((len(fid), 3))
    mat = scene.face_material[fid]
    for m in np.unique(mat):
        sel = mat == m
        albedo[sel] = scene.materials[m].albedo(points[sel])
    light = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.8, -0.2), -1.0])
    light /= np.linalg.norm(light)
    ambient = rng.uniform(0.35, 0.55)
    diffuse = np.clip(normals @ light, 0, 1)
    rim = 0.15 * np.clip(-normals[:, 2], 0, 1) ** 4  # a little light from the camera side
    colour = np.zeros((height * ss, width * ss, 3))
    colour[mask] = albedo * (ambient + (1 - ambient) * diffuse + rim)[:, None]
    return colour, mask


def generate_sample(ctx: SceneContext, settings: WorldSettings, rng: np.random.Generator) -> Sample:
    height, width = settings.image_sizes[rng.integers(len(settings.image_sizes))]
    f = width * rng.uniform(*settings.focal_factor)
    K = np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1.0]])
    pitch = rng.uniform(-0.12, 0.25)
    frac = rng.uniform(*settings.person_height)
    target = np.array([(width - 1) / 2 + rng.uniform(-0.12, 0.12) * width, (height - 1) / 2 + rng.uniform(-0.08, 0.08) * height])

    def place_main(verts):
        lo, hi = verts.min(0), verts.max(0)
        depth = f * (hi[1] - lo[1]) / (frac * height)
        mid = (lo + hi) / 2
        return np.array([(target[0] - K[0, 2]) * depth / f, (target[1] - K[1, 2]) * depth / f, depth]) - mid

    person = _person(ctx, rng, pitch, place_main)
    main_depth = float(np.median(person.vertices[:, 2]))
    width_m = np.ptp(person.vertices[:, 0])

    others = []
    if rng.random() < settings.second_person_prob:
        def place_other(verts):
            lo, hi = verts.min(0), verts.max(0)
            depth = main_depth * rng.uniform(0.9, 1.6)
            side = rng.choice([-1.0, 1.0])
            x = person.transl[0] + side * rng.uniform(0.5, 1.1) * max(width_m, 0.5) * depth / main_depth
            feet_y = person.vertices[:, 1].max() * depth / main_depth  # stand on the same floor, roughly
            return np.array([x, feet_y - hi[1], depth]) - np.array([(lo[0] + hi[0]) / 2, 0, (lo[2] + hi[2]) / 2])

        others.append(_person(ctx, rng, pitch, place_other))

    uv = project(torch.as_tensor(person.vertices), torch.as_tensor(K)).numpy()
    box_lo, box_hi = uv.min(0), uv.max(0)
    center = (box_lo + box_hi) / 2
    scale = float(np.max(box_hi - box_lo)) * settings.bbox_rescale / PIXELS_PER_SCALE

    occluders: list[Occluder] = []
    wanted = int(rng.integers(settings.occluders[0], settings.occluders[1] + 1))
    for _attempt in range(12):
        if len(occluders) >= wanted:
            break
        size_px = (box_hi - box_lo) * rng.uniform([0.35, 0.2], [0.9, 0.5])
        spot = box_lo + (box_hi - box_lo) * rng.uniform([0.3, 0.2], [0.7, 0.85])
        candidate = _occluder(rng, K, spot, size_px, main_depth * rng.uniform(0.55, 0.85))
        trial = SceneMeshes(ctx, [person], occluders + [candidate])
        maps, _ = render_label_maps(trial, ctx, K, height, width)
        body = maps["parts"] > 0
        covered = (maps["instance"][body] == INSTANCE["occluder"]).mean()
        if settings.occluded_fraction[0] <= covered <= settings.occluded_fraction[1]:
            occluders.append(candidate)

    scene = SceneMeshes(ctx, [person, *others], occluders)
    full, depth = render_label_maps(scene, ctx, K, height, width)
    K_crop = crop_intrinsics(K, center, scale, settings.crop_res)
    crop, _ = render_label_maps(scene, ctx, K_crop, settings.crop_res, settings.crop_res)

    ss = settings.supersample
    colour, covered = _shade(scene, K, height, width, rng, ss)
    # the background is drawn at the output resolution: the box filter below reproduces it exactly
    bg = np.repeat(np.repeat(background(rng, height, width), ss, axis=0), ss, axis=1)
    colour = np.where(covered[..., None], colour, bg)
    image = colour.reshape(height, ss, width, ss, 3).mean(axis=(1, 3))
    image = np.clip(image * 255 + rng.normal(0, 2.0, image.shape), 0, 255).astype(np.uint8)

    keypoints = _keypoints(person, K, full, depth, rng, max(box_hi - box_lo))
    body = full["parts"] > 0
    meta = {"template": person.template, "upper": person.outfit.upper, "lower": person.outfit.lower,
            "hair": person.outfit.hair, "second_person": bool(others),
            "occluded_fraction": float((full["instance"][body] == INSTANCE["occluder"]).mean()) if body.any() else 0.0}
    has_smpl = bool(rng.random() >= settings.no_smpl_fraction)
    return Sample(image, K, person, others, occluders, center, scale, keypoints, has_smpl, full, crop, depth, meta)


def _keypoints(person: Person, K: np.ndarray, full: dict, depth: np.ndarray, rng: np.random.Generator, box_px: float) -> np.ndarray:
    """(49, 3): 25 OpenPose detections (noisy, with confidence) then 24 annotated joints (exact, 0/1 visibility).

    A joint is visible when it is in the image and the main person is the nearest surface at its
    pixel; surface landmarks (nose, eyes, ears, toes, heels) must also be that surface themselves.
    """
    height, width = depth.shape
    uv = project(torch.as_tensor(person.joints49), torch.as_tensor(K)).numpy()
    z = person.joints49[:, 2]
    col, row = np.rint(uv[:, 0]).astype(int), np.rint(uv[:, 1]).astype(int)
    inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
    visible = np.zeros(len(uv), bool)
    for i in np.flatnonzero(inside):
        front = full["instance"][row[i], col[i]] == INSTANCE["person"]
        if i in _SURFACE_JOINTS:
            front &= abs(depth[row[i], col[i]] - z[i]) < 0.03
        visible[i] = front
    out = np.zeros((len(uv), 3))
    gt = slice(NUM_OPENPOSE_JOINTS, None)
    out[gt, :2] = uv[gt]
    out[gt, 2] = visible[gt]
    sigma = 0.01 * box_px
    for i in range(NUM_OPENPOSE_JOINTS):
        if visible[i]:
            out[i] = [*(uv[i] + rng.normal(0, sigma, 2)), rng.uniform(0.5, 0.95)]
        elif inside[i] and rng.random() < 0.3:  # a weak guess at a hidden joint, as detectors make
            out[i] = [*(uv[i] + rng.normal(0, 3 * sigma, 2)), rng.uniform(0.05, 0.25)]
    return out


def annotation_row(sample: Sample) -> dict[str, np.ndarray]:
    """The sample's row in the SPIN/EFT annotation format (plus the camera, which real data may lack)."""
    p = sample.person
    pose = np.concatenate([p.global_orient, p.body_pose]) if sample.has_smpl else np.zeros(72)
    return {
        "center": sample.center, "scale": np.float64(sample.scale),
        "pose": pose, "shape": p.betas if sample.has_smpl else np.zeros_like(p.betas),
        "has_smpl": np.float64(sample.has_smpl),
        # rows standing for 2D-only datasets (has_smpl = 0) carry no 3D joints either
        "S": np.concatenate([p.joints49[NUM_OPENPOSE_JOINTS:], np.ones((24, 1))], axis=1) if sample.has_smpl else np.zeros((24, 4)),
        "part": sample.keypoints[NUM_OPENPOSE_JOINTS:], "openpose": sample.keypoints[:NUM_OPENPOSE_JOINTS],
        "gender": np.str_("n"),
        "cam_intrinsics": sample.K, "transl": p.transl if sample.has_smpl else np.zeros(3),
    }
