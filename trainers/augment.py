"""Augmentation of one training sample, applied consistently to the image, the part labels, the parser
labels, the 2D keypoints, the 3D joints and the SMPL pose (SPIN / PARE / DSR conventions).

Geometry: every sample arrives as an image crop of C x C pixels whose central R x R window is the label
crop (pipeline.pack), both in pixels with centres on integers. One affine map takes the label crop to
the output crop (O x O): scale `s` about the crop centre (s > 1 shows more context, SPIN's convention),
in-plane rotation, the PARE random crop (a random sub-box), and a horizontal flip. The image, both label
maps and the keypoints go through that same map; the 3D joints and the global orientation turn with the
image rotation about the camera axis and mirror with the flip; the body pose mirrors (joints permuted,
axis-angle y and z negated). Label pixels outside the stored label crop become 255 (ignored), image
pixels outside the stored image crop 0.

Occlusion (Sarandi et al. 2018, used by PARE): objects pasted over the person, from a folder of RGBA
images (e.g. PASCAL VOC object cut-outs) or procedural shapes (the demo). Parser labels under an
occluder become 255: the parser never saw the clothing there. Part labels and keypoints stay (PARE's
part attention and SPIN's keypoint losses supervise occluded parts too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.camera import camera_z_rotation
from pipeline.labelsets import CIHP_IGNORE, min_clothing_flip_permutation
from pipeline.skeleton import JOINTS49_NAMES, SMPL_JOINT_NAMES, SMPL_PART_NAMES



@dataclass
class AugmentSettings:
    """Defaults follow SPIN (scale, rotation, colour noise, flip) and PARE (occlusion, random crop).
    Each `*_from_step` switches an augmentation on from that training step (PARE turns occlusion on
    after the part branch has started to learn)."""

    output_resolution: int = 224
    flip_prob: float = 0.5
    rotation_std: float = 30.0  # degrees; clipped at 2 std
    rotation_prob: float = 0.6
    scale_std: float = 0.25  # s = clip(1 + N(0, std), 1 - std, 1 + std)
    colour_noise: float = 0.4  # per-channel gain uniform in [1 - n, 1 + n]
    occlusion_prob: float = 0.5
    occlusion_from_step: int = 0
    occluders: str | None = None  # folder of RGBA PNG occluders; None: procedural shapes
    occluder_size: tuple[float, float] = (0.15, 0.45)  # side of an occluder / output side
    random_crop_prob: float = 0.3
    random_crop_cut: tuple[float, float] = (0.3, 0.5)  # fraction of the box side cut away
    random_crop_from_step: int = 0
    enabled: bool = True

    def __post_init__(self):
        for name in ("flip_prob", "rotation_prob", "occlusion_prob", "random_crop_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"augmentation {name} must be a probability in [0, 1], got {getattr(self, name)}")
        lo, hi = self.random_crop_cut
        if not 0.0 <= lo <= hi < 1.0:
            raise ValueError(f"random_crop_cut must satisfy 0 <= low <= high < 1, got {self.random_crop_cut}")
        if self.occluders is not None and not Path(self.occluders).is_dir():
            raise ValueError(f"augmentation occluders: {self.occluders} is not a folder of RGBA PNG images "
                             "(set it to null for procedural occluders)")


def _swap_name(name: str) -> str:
    for a, b in (("Left ", "Right "), ("left_", "right_"), ("left", "right")):
        if name.startswith(a):
            return b + name[len(a):]
        if name.startswith(b):
            return a + name[len(b):]
    return name


def _name_permutation(names) -> np.ndarray:
    """Index of each name's mirror image (left <-> right by name), checked to be an involution."""
    index = {n: i for i, n in enumerate(names)}
    perm = np.array([index.get(_swap_name(n), i) for i, n in enumerate(names)])
    if not np.array_equal(perm[perm], np.arange(len(names))):
        raise AssertionError("left/right name permutation is not an involution")
    return perm


def _openpose_name_swap(name: str) -> str:
    # "OP LShoulder" <-> "OP RShoulder", "OP LBigToe" <-> "OP RBigToe"; "OP Nose" stays
    if name.startswith("OP L") and name[4:5].isupper():
        return "OP R" + name[4:]
    if name.startswith("OP R") and name[4:5].isupper():
        return "OP L" + name[4:]
    return _swap_name(name) if not name.startswith("OP ") else name


def joints49_flip_permutation() -> np.ndarray:
    index = {n: i for i, n in enumerate(JOINTS49_NAMES)}
    perm = np.array([index[_openpose_name_swap(n)] for n in JOINTS49_NAMES])
    assert np.array_equal(perm[perm], np.arange(len(perm)))
    return perm


def smpl_joint_flip_permutation() -> np.ndarray:
    return _name_permutation(SMPL_JOINT_NAMES)


def part_label_flip_lut() -> np.ndarray:
    """(256,) label -> mirrored label for part maps (0 background, 1 + SMPL part index, 255 kept)."""
    lut = np.arange(256, dtype=np.uint8)
    lut[1:1 + len(SMPL_PART_NAMES)] = 1 + _name_permutation(SMPL_PART_NAMES)
    return lut


MIN_CLOTHING_FLIP = min_clothing_flip_permutation()  # Face, Left-arm, Right-arm, Left-shoe, Right-shoe


def flip_pose(pose: np.ndarray) -> np.ndarray:
    """SMPL pose (72,) of the mirrored body: joints swapped left/right, axis-angle (x, -y, -z)."""
    p = pose.reshape(-1, 3)[smpl_joint_flip_permutation()].copy()
    p[:, 1:] *= -1
    return p.reshape(-1)


def _axis_angle_to_matrix(aa: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(aa))
    if angle < 1e-12:
        return np.eye(3)
    k = aa / angle
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def _matrix_to_axis_angle(R: np.ndarray) -> np.ndarray:
    cos = np.clip((np.trace(R) - 1) / 2, -1.0, 1.0)
    angle = math.acos(cos)
    if angle < 1e-8:
        return np.zeros(3)
    if math.pi - angle < 1e-4:  # near pi: the axis from the symmetric part
        B = (R + np.eye(3)) / 2
        axis = np.sqrt(np.clip(np.diag(B), 0, None))
        j = int(np.argmax(axis))
        axis = B[j] / max(axis[j], 1e-12)
        return axis / np.linalg.norm(axis) * angle
    axis = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]]) / (2 * math.sin(angle))
    return axis * angle


def rotate_global_orient(pose: np.ndarray, degrees: float) -> np.ndarray:
    out = pose.copy()
    out[:3] = _matrix_to_axis_angle(camera_z_rotation(degrees) @ _axis_angle_to_matrix(pose[:3]))
    return out


@dataclass
class SampleParams:
    """The random draws of one sample, recorded with it."""

    flip: bool = False
    rotation: float = 0.0  # degrees
    scale: float = 1.0
    crop: tuple[float, float, float] | None = None  # (x0, y0, side) of the random crop in units of the box
    gains: tuple[float, float, float] = (1.0, 1.0, 1.0)
    occluders: list = field(default_factory=list)


def draw_params(settings: AugmentSettings, rng: np.random.Generator, step: int) -> SampleParams:
    s = settings
    if not s.enabled:
        return SampleParams()
    p = SampleParams()
    p.flip = bool(rng.random() < s.flip_prob)
    if rng.random() < s.rotation_prob:
        p.rotation = float(np.clip(rng.normal() * s.rotation_std, -2 * s.rotation_std, 2 * s.rotation_std))
    p.scale = float(np.clip(1.0 + rng.normal() * s.scale_std, 1.0 - s.scale_std, 1.0 + s.scale_std))
    if step >= s.random_crop_from_step and rng.random() < s.random_crop_prob:
        side = 1.0 - rng.uniform(*s.random_crop_cut)
        p.crop = (float(rng.uniform(0, 1 - side)), float(rng.uniform(0, 1 - side)), float(side))
    p.gains = tuple(float(g) for g in rng.uniform(1 - s.colour_noise, 1 + s.colour_noise, 3))
    if step >= s.occlusion_from_step and rng.random() < s.occlusion_prob:
        p.occluders.append(int(rng.integers(2**31)))
    return p


def label_to_output_matrix(p: SampleParams, label_res: int, out_res: int) -> np.ndarray:
    """(3, 3) map from label-crop pixels to output pixels for the draws `p`."""
    c_in, c_out = (label_res - 1) / 2.0, (out_res - 1) / 2.0
    T = np.eye(3)
    T[:2, 2] = -c_in
    if p.crop is not None:  # the sub-box (in box units) becomes the whole view
        x0, y0, side = p.crop
        centre = (np.array([x0, y0]) + side / 2 - 0.5) * label_res
        C = np.eye(3)
        C[:2, 2] = -centre
        Z = np.diag([1 / side, 1 / side, 1.0])
        T = Z @ C @ T
    R = camera_z_rotation(p.rotation)
    A = np.eye(3)
    A[:2, :2] = R[:2, :2] * (out_res / label_res) / p.scale
    M = A @ T
    M[:2, 2] += c_out
    if p.flip:
        F = np.array([[-1.0, 0, out_res - 1], [0, 1, 0], [0, 0, 1]])
        M = F @ M
    return M


def pil_warp(image, matrix: np.ndarray, out_res: int, nearest: bool, fill):
    """Resample a PIL image with `matrix` mapping its pixels (centres on integers) to output pixels."""
    from PIL import Image

    # PIL samples output pixel (x, y) at input (a, b, c) . (x + 0.5, y + 0.5, 1) with centres at +0.5
    shift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    inv = np.linalg.inv(shift @ matrix @ np.linalg.inv(shift))
    data = tuple(inv[:2].ravel())
    return image.transform((out_res, out_res), Image.AFFINE, data,
                           resample=Image.NEAREST if nearest else Image.BILINEAR, fillcolor=fill)


def colour_gain(image, gains):
    """Per-channel gain on a PIL RGB image through a lookup table (rounded, clipped at 255)."""
    if all(g == 1.0 for g in gains):
        return image
    levels = np.arange(256, dtype=np.float64)
    lut = np.concatenate([np.clip(np.rint(levels * g), 0, 255) for g in gains]).astype(np.uint8)
    return image.point(lut.tolist())


def procedural_occluder(rng: np.random.Generator, side: int) -> tuple[np.ndarray, np.ndarray]:
    """An RGBA-like occluder: (side, side, 3) uint8 texture and (side, side) bool mask; an ellipse or a
    random polygon in one or two colours with stripes."""
    from PIL import Image, ImageDraw

    mask = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(mask)
    if rng.random() < 0.5:
        w, h = side * rng.uniform(0.5, 1.0), side * rng.uniform(0.5, 1.0)
        x0, y0 = rng.uniform(0, side - w), rng.uniform(0, side - h)
        draw.ellipse([x0, y0, x0 + w, y0 + h], fill=255)
    else:
        k = int(rng.integers(3, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, k))
        radii = rng.uniform(0.3, 0.5, k) * side
        pts = [(side / 2 + r * np.cos(a), side / 2 + r * np.sin(a)) for a, r in zip(angles, radii)]
        draw.polygon(pts, fill=255)
    colours = rng.integers(0, 256, (2, 3))
    yy, xx = np.mgrid[0:side, 0:side]
    theta, period = rng.uniform(0, np.pi), rng.uniform(4, 16)
    stripes = ((xx * np.cos(theta) + yy * np.sin(theta)) // period).astype(int) % 2
    texture = colours[stripes].astype(np.uint8)
    return texture, np.asarray(mask) > 127


class OccluderSet:
    """Occluders from a folder of RGBA PNGs (alpha > 127 is the object), loaded once per process."""

    def __init__(self, folder: str | None):
        self.folder = folder
        self._items = None

    def _load(self):
        from PIL import Image

        files = sorted(Path(self.folder).glob("*.png"))
        if not files:
            raise ValueError(f"augmentation occluders: no *.png in {self.folder}")
        items = []
        for f in files:
            im = Image.open(f)
            if im.mode != "RGBA":
                raise ValueError(f"occluder {f} is {im.mode}, not RGBA: save the object with an alpha channel")
            items.append(np.asarray(im))
        self._items = items

    def draw(self, rng: np.random.Generator, side: int) -> tuple[np.ndarray, np.ndarray]:
        if self.folder is None:
            return procedural_occluder(rng, side)
        from PIL import Image

        if self._items is None:
            self._load()
        item = self._items[int(rng.integers(len(self._items)))]
        h, w = item.shape[:2]
        k = side / max(h, w)
        im = Image.fromarray(item).resize((max(1, int(w * k)), max(1, int(h * k))), Image.BILINEAR)
        arr = np.zeros((side, side, 4), np.uint8)
        a = np.asarray(im)
        arr[:a.shape[0], :a.shape[1]] = a
        return arr[..., :3], arr[..., 3] > 127


def paste_occluders(image: np.ndarray, parser_labels: np.ndarray | None, seeds: list[int], settings: AugmentSettings,
                    occluders: OccluderSet) -> np.ndarray:
    """Paste occluders (in place) over the output image, centred near the middle where the person is;
    parser labels under them become 255. Returns the union mask."""
    out_res = image.shape[0]
    union = np.zeros(image.shape[:2], bool)
    for seed in seeds:
        rng = np.random.default_rng(seed)
        side = max(4, int(out_res * rng.uniform(*settings.occluder_size)))
        texture, mask = occluders.draw(rng, side)
        cx, cy = rng.uniform(0.2, 0.8, 2) * out_res
        x0, y0 = int(cx - side / 2), int(cy - side / 2)
        xs, ys = slice(max(x0, 0), min(x0 + side, out_res)), slice(max(y0, 0), min(y0 + side, out_res))
        m = mask[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
        region = image[ys, xs]
        region[m] = texture[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0][m]
        union[ys, xs] |= m
    if parser_labels is not None:
        parser_labels[union] = CIHP_IGNORE
    return union
