"""Report figure of the body model: part labels on the rest pose (front, side, back) and a posed body."""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.body.model import BodyModel
from pipeline.camera import look_at
from pipeline.io import atomic_output
from pipeline.render import render_vertex_colors
from pipeline.skeleton import NUM_SMPL_JOINTS, SMPL_JOINT_NAMES


def part_palette(num_parts: int = NUM_SMPL_JOINTS) -> np.ndarray:
    """(num_parts, 3) uint8 colours, neighbouring ids far apart in hue."""
    hues = (np.arange(num_parts) * 0.618034) % 1.0
    return np.array([[int(255 * c) for c in colorsys.hsv_to_rgb(h, 0.75, 0.95)] for h in hues], dtype=np.uint8)


def example_pose(batch: int = 1) -> torch.Tensor:
    """A walking-like body pose (B, 69) axis-angle: one arm forward, elbows and a knee bent."""
    pose = torch.zeros(batch, NUM_SMPL_JOINTS, 3)
    name = {n: i for i, n in enumerate(SMPL_JOINT_NAMES)}
    pose[:, name["left_hip"], 0] = -0.5
    pose[:, name["right_hip"], 0] = 0.35
    pose[:, name["left_knee"], 0] = 0.6
    pose[:, name["left_shoulder"], 2] = -1.1
    pose[:, name["right_shoulder"], 2] = 1.2
    pose[:, name["right_shoulder"], 1] = 0.5
    pose[:, name["left_elbow"], 1] = 0.9
    pose[:, name["right_elbow"], 1] = -1.2
    pose[:, name["neck"], 0] = 0.2
    pose[:, name["spine2"], 1] = 0.2
    return pose[:, 1:].reshape(batch, -1)


def body_figure(model: BodyModel, out: str | Path, size: int = 384) -> None:
    colors = part_palette()[model.data.part_labels]
    with torch.no_grad():
        rest = model().vertices[0].numpy()
        posed = model(body_pose=example_pose(), betas=torch.full((1, model.num_betas), 0.5)).vertices[0].numpy()
    panels = []
    for verts, azimuth, flat in ((rest, 0.0, True), (rest, 90.0, True), (rest, 180.0, True), (posed, 25.0, False)):
        center = 0.5 * (verts.min(0) + verts.max(0))
        a = np.deg2rad(azimuth)
        eye = center + 3.2 * np.array([np.sin(a), 0.0, np.cos(a)])
        rgb, depth = render_vertex_colors(verts, model.faces, colors, look_at(eye, center), yfov=np.deg2rad(34),
                                          width=size, height=size, flat=flat)
        rgb = np.where(depth[..., None] > 0, rgb, 255).astype(np.uint8)
        panels.append(rgb)
    with atomic_output(out) as tmp:
        Image.fromarray(np.concatenate(panels, axis=1)).save(tmp, format="PNG")
