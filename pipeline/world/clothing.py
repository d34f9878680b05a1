"""Clothing of the demo world: outfits, the CIHP garment label of every body vertex, and procedural
materials.

Garments are regions of the body surface, decided on the rest (T-pose) body from its parts and its
rest joints, so the rules hold for any SMPL-format model. Materials are evaluated at rest-pose surface
points, per pixel, so stripes and checks stay sharp whatever the mesh resolution and follow the body
when it moves.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np

from pipeline.labelsets import CIHP
from pipeline.skeleton import SMPL_JOINT_NAMES

JID = {name: i for i, name in enumerate(SMPL_JOINT_NAMES)}
_SIDE_PARTS = {
    side: {
        "arm": [JID[f"{side}_{k}"] for k in ("shoulder", "elbow", "wrist", "hand")],
        "leg": [JID[f"{side}_{k}"] for k in ("hip", "knee")],
        "foot": [JID[f"{side}_{k}"] for k in ("ankle", "foot")],
    }
    for side in ("left", "right")
}
_TORSO = [JID[k] for k in ("pelvis", "spine1", "spine2", "spine3", "left_collar", "right_collar")]
PATTERNS = ("solid", "stripes", "checks", "mottled", "denim")


@dataclass
class Material:
    base: np.ndarray  # (3,) RGB in [0, 1]
    accent: np.ndarray  # (3,) second colour of the pattern
    pattern: str = "solid"
    period: float = 0.05  # metres
    angle: float = 0.0  # radians, of stripes in the body's x-y plane

    def albedo(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) colours at rest-pose points (N, 3) metres."""
        x, y, z = points.T
        if self.pattern == "solid":
            t = np.zeros_like(x)
        elif self.pattern == "stripes":
            u = np.cos(self.angle) * y + np.sin(self.angle) * (x + z)
            t = (np.sin(2 * np.pi * u / self.period) > 0).astype(float)
        elif self.pattern == "checks":
            t = ((np.floor(y / self.period) + np.floor((x + z) / self.period)) % 2).astype(float)
        elif self.pattern == "mottled":
            t = 0.5 + 0.25 * (np.sin(x * 53 + y * 31) + np.sin(y * 71 - z * 43 + 1.3)) * np.sin(z * 29 + x * 17)
        else:  # denim: fine diagonal twill with a faint weave
            t = 0.35 + 0.3 * (np.sin(2 * np.pi * (x + y + z) / 0.006) > 0.2) * (0.5 + 0.5 * np.sin(y * 90))
        t = np.clip(t, 0.0, 1.0)[:, None]
        return (1 - t) * self.base + t * self.accent


def _random_colour(rng: np.random.Generator, saturation=(0.3, 0.9), value=(0.25, 0.95)) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(*saturation), rng.uniform(*value)))


def _random_material(rng: np.random.Generator, denim_ok: bool = False) -> Material:
    patterns = PATTERNS if denim_ok else PATTERNS[:4]
    pattern = patterns[rng.choice(len(patterns), p=None)]
    base = _random_colour(rng)
    if pattern == "denim":
        base = np.array(colorsys.hsv_to_rgb(rng.uniform(0.55, 0.65), rng.uniform(0.4, 0.7), rng.uniform(0.25, 0.6)))
    accent = np.clip(base * rng.uniform(0.3, 0.7) + rng.uniform(0.0, 0.4) * _random_colour(rng), 0, 1)
    return Material(base, accent, pattern, period=rng.uniform(0.02, 0.08), angle=rng.uniform(-0.4, 0.4))


SKIN_TONES = np.array([[0.98, 0.85, 0.75], [0.92, 0.74, 0.60], [0.80, 0.60, 0.45], [0.62, 0.43, 0.30],
                       [0.45, 0.30, 0.20], [0.30, 0.20, 0.14]])


@dataclass
class Outfit:
    upper: str  # "tshirt", "longsleeve", "tank", "coat", "dress"
    lower: str  # "pants", "shorts", "skirt" (ignored for a dress)
    hair: str  # "short", "long", "bald"
    hat: bool
    gloves: bool
    socks: bool
    sleeve: float  # sleeve length along the arm, metres from the shoulder joint (at most to the wrist)
    hem: float  # how far the trousers/shorts/skirt/dress reach below the knee (+) or above it (-), metres
    waist: float  # waist line relative to the pelvis joint, metres
    materials: dict[int, Material] = field(default_factory=dict)  # CIHP label -> material

    @property
    def labels(self) -> list[int]:
        return sorted(self.materials)


def sample_outfit(rng: np.random.Generator) -> Outfit:
    upper = ["tshirt", "longsleeve", "tank", "coat", "dress"][rng.choice(5, p=[0.35, 0.25, 0.1, 0.15, 0.15])]
    lower = ["pants", "shorts", "skirt"][rng.choice(3, p=[0.55, 0.25, 0.2])]
    sleeve = {"tshirt": rng.uniform(0.08, 0.16), "tank": 0.0, "dress": rng.uniform(0.0, 0.14)}.get(upper, 0.56)
    if lower == "pants" and upper != "dress":
        hem = rng.uniform(0.32, 0.38)  # to the ankle
    elif lower == "shorts" and upper != "dress":
        hem = rng.uniform(-0.25, -0.08)
    else:  # skirt or dress
        hem = rng.uniform(-0.2, 0.12)
    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.9, 1.05)
    hair_colour = np.array(colorsys.hsv_to_rgb(rng.uniform(0.02, 0.12), rng.uniform(0.3, 0.8), rng.uniform(0.05, 0.6)))
    outfit = Outfit(upper=upper, lower=lower, hair=["short", "long", "bald"][rng.choice(3, p=[0.5, 0.42, 0.08])],
                    hat=bool(rng.random() < 0.1), gloves=bool(rng.random() < 0.05), socks=bool(rng.random() < 0.2),
                    sleeve=float(sleeve), hem=float(hem), waist=float(rng.uniform(0.0, 0.06)))
    skin_material = Material(np.clip(skin, 0, 1), np.clip(skin * 0.93, 0, 1), "mottled")
    m = outfit.materials
    for label in ("Face", "Torso-skin", "Left-arm", "Right-arm", "Left-leg", "Right-leg"):
        m[CIHP[label]] = skin_material
    m[CIHP["Hair"]] = Material(hair_colour, hair_colour * 0.7, "stripes", period=0.008, angle=1.4)
    m[CIHP["Dress" if upper == "dress" else "Coat" if upper == "coat" else "UpperClothes"]] = _random_material(rng)
    if upper != "dress":
        m[CIHP["Skirt" if lower == "skirt" else "Pants"]] = _random_material(rng, denim_ok=lower != "skirt")
    if upper == "coat":  # something is worn under the coat, visible below it
        m[CIHP["Pants"]] = m.get(CIHP["Pants"], _random_material(rng, denim_ok=True))
    shoe = Material(_random_colour(rng, value=(0.1, 0.8)), _random_colour(rng, value=(0.1, 0.9)), "solid")
    m[CIHP["Left-shoe"]] = m[CIHP["Right-shoe"]] = shoe
    if outfit.hat:
        m[CIHP["Hat"]] = _random_material(rng)
    if outfit.gloves:
        m[CIHP["Glove"]] = Material(_random_colour(rng), _random_colour(rng), "solid")
    if outfit.socks:
        m[CIHP["Socks"]] = _random_material(rng)
    return outfit


def garment_labels(rest_vertices: np.ndarray, parts: np.ndarray, rest_joints: np.ndarray, outfit: Outfit) -> np.ndarray:
    """(V,) CIHP label of every body vertex for this outfit."""
    x, y, z = rest_vertices.T
    j = rest_joints
    labels = np.zeros(len(rest_vertices), dtype=np.uint8)
    head, neck = parts == JID["head"], parts == JID["neck"]
    torso = np.isin(parts, _TORSO)
    waist_y = j[JID["pelvis"], 1] + outfit.waist
    knee_y = j[JID["left_knee"], 1]
    ankle_y = j[JID["left_ankle"], 1]
    hem_y = knee_y - outfit.hem
    upper = CIHP["Dress" if outfit.upper == "dress" else "Coat" if outfit.upper == "coat" else "UpperClothes"]
    lower = upper if outfit.upper == "dress" else CIHP["Skirt" if outfit.lower == "skirt" else "Pants"]
    if outfit.upper == "coat":
        lower = CIHP["Pants"]

    # torso: top above the waist, bottom below; a coat reaches down over the hips
    labels[torso] = np.where(y[torso] >= waist_y, upper, lower)
    if outfit.upper == "coat":
        labels[torso & (y < waist_y) & (y >= waist_y - 0.22)] = upper
    labels[neck] = CIHP["Torso-skin"]

    # arms: sleeve from the shoulder joint outwards, skin beyond; hands may wear gloves
    for side, skin in (("left", CIHP["Left-arm"]), ("right", CIHP["Right-arm"])):
        arm = np.isin(parts, _SIDE_PARTS[side]["arm"])
        shoulder_x = abs(j[JID[f"{side}_shoulder"], 0])
        sleeve = min(outfit.sleeve, abs(j[JID[f"{side}_wrist"], 0]) - shoulder_x - 0.015)  # long sleeves end at the wrist
        labels[arm] = np.where(np.abs(x[arm]) - shoulder_x <= sleeve, upper, skin)
        if outfit.gloves:
            labels[arm & np.isin(parts, [JID[f"{side}_wrist"], JID[f"{side}_hand"]]) &
                   (np.abs(x) >= abs(j[JID[f"{side}_wrist"], 0]) - 0.01)] = CIHP["Glove"]

    # legs: the lower garment down to its hem, then skin, socks and shoes
    for side, skin, shoe in (("left", CIHP["Left-leg"], CIHP["Left-shoe"]), ("right", CIHP["Right-leg"], CIHP["Right-shoe"])):
        leg = np.isin(parts, _SIDE_PARTS[side]["leg"] + _SIDE_PARTS[side]["foot"])
        labels[leg] = np.where(y[leg] >= max(hem_y, ankle_y + 0.03), lower, skin)
        if outfit.upper == "coat":
            labels[leg & (y >= waist_y - 0.22)] = upper
        if outfit.socks:
            labels[leg & (y < ankle_y + 0.09) & (labels == skin)] = CIHP["Socks"]
        labels[np.isin(parts, _SIDE_PARTS[side]["foot"]) & (y < ankle_y + 0.03)] = shoe

    # head: face in front, hair on top and behind (long hair down the neck and upper back), hat on top
    head_y, head_z = j[JID["head"], 1], j[JID["head"], 2]
    labels[head] = CIHP["Face"]
    if outfit.hair != "bald":
        hair = head & ((y > head_y + 0.13) | ((z < head_z - 0.005) & (y > head_y + 0.015)))
        if outfit.hair == "long":
            hair |= (head | neck | torso) & (z < head_z - 0.01) & (y > j[JID["neck"], 1] - 0.12) & (np.abs(x) < 0.12)
        labels[hair] = CIHP["Hair"]
    if outfit.hat:
        labels[head & (y > head_y + 0.15)] = CIHP["Hat"]
    return labels


def face_labels(vertex_labels: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """A face's label: the label two or three of its vertices share, else the smallest."""
    a, b, c = (vertex_labels[faces[:, k]] for k in range(3))
    return np.where((a == b) | (a == c), a, np.where(b == c, b, np.minimum(np.minimum(a, b), c)))


def garment_thickness(labels: np.ndarray) -> np.ndarray:
    """Offset of the clothed surface from the body (metres) per vertex label, for clothed scans."""
    table = np.zeros(256)
    for name, t in (("Hair", 0.012), ("Hat", 0.02), ("UpperClothes", 0.008), ("Dress", 0.012), ("Coat", 0.02),
                    ("Pants", 0.01), ("Skirt", 0.018), ("Left-shoe", 0.012), ("Right-shoe", 0.012),
                    ("Socks", 0.003), ("Glove", 0.004)):
        table[CIHP[name]] = t
    return table[labels]
