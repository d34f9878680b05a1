"""Sampling plausible body poses: templates of everyday poses plus noise, clipped to per-joint limits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from scipy.spatial.transform import Rotation

from pipeline.skeleton import NUM_SMPL_JOINTS, SMPL_JOINT_NAMES

POSE_PRIOR_PATH = Path(__file__).resolve().parents[2] / "resources" / "pose_prior.yaml"
_MIRROR = np.array([1.0, -1.0, -1.0])  # Euler XYZ of the left joint -> its right twin


def _right_twin(name: str) -> str | None:
    return "right_" + name[5:] if name.startswith("left_") else None


@dataclass
class PosePrior:
    lower: np.ndarray  # (24, 3) Euler XYZ limits, radians
    upper: np.ndarray
    templates: dict[str, np.ndarray]  # name -> (24, 3) Euler XYZ
    weights: dict[str, float]
    noise_std: float

    @classmethod
    def load(cls, path: str | Path = POSE_PRIOR_PATH) -> "PosePrior":
        with open(path) as f:
            spec = yaml.safe_load(f)
        index = {n: i for i, n in enumerate(SMPL_JOINT_NAMES)}
        lower = np.zeros((NUM_SMPL_JOINTS, 3))
        upper = np.zeros((NUM_SMPL_JOINTS, 3))
        for name, axes in spec["limits"].items():
            lo, hi = np.array([axes[a][0] for a in "xyz"]), np.array([axes[a][1] for a in "xyz"])
            lower[index[name]], upper[index[name]] = lo, hi
            twin = _right_twin(name)
            if twin:
                mirrored = np.stack([lo * _MIRROR, hi * _MIRROR])
                lower[index[twin]], upper[index[twin]] = mirrored.min(0), mirrored.max(0)
        templates, weights = {}, {}
        for tname, t in spec["templates"].items():
            euler = np.zeros((NUM_SMPL_JOINTS, 3))
            named = t["joints"]
            for name, angles in named.items():
                euler[index[name]] = angles
                twin = _right_twin(name)
                if twin and twin not in named:
                    euler[index[twin]] = np.asarray(angles) * _MIRROR
            templates[tname] = euler
            weights[tname] = float(t["weight"])
        return cls(lower, upper, templates, weights, float(spec["noise_std"]))

    def sample(self, rng: np.random.Generator, template: str | None = None) -> tuple[str, np.ndarray]:
        """(template name, body pose (69,) axis-angle) for joints 1..23; the root is set by the scene."""
        names = sorted(self.templates)
        if template is None:
            p = np.array([self.weights[n] for n in names])
            template = names[rng.choice(len(names), p=p / p.sum())]
        euler = self.templates[template] + rng.normal(0.0, self.noise_std, size=(NUM_SMPL_JOINTS, 3))
        euler = np.clip(euler, self.lower, self.upper)
        rotvec = Rotation.from_euler("xyz", euler[1:]).as_rotvec()
        return template, rotvec.reshape(-1)
