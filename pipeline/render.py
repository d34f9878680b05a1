"""Headless OpenGL rendering with pyrender: EGL first (Mesa llvmpipe on CPU, the driver on GPU nodes),
then OSMesa; if neither works, an error that names the system packages to install.

The platform must be chosen before OpenGL is first imported, so every renderer of the project comes
from `offscreen_renderer` here.
"""

from __future__ import annotations

import importlib
import os
import sys

import numpy as np

_PLATFORM_PACKAGES = {
    "egl": "libegl1 libgl1-mesa-dri libegl-mesa0",
    "osmesa": "libosmesa6",
}


class HeadlessGLError(RuntimeError):
    """No headless OpenGL platform works on this machine."""


_WORKING_PLATFORM: str | None = None


def _purge_opengl_modules() -> None:
    """Forget PyOpenGL and pyrender, which bind their platform at import, so another can be tried."""
    for name in [m for m in sys.modules if m == "OpenGL" or m.startswith(("OpenGL.", "pyrender"))]:
        del sys.modules[name]


def _select_platform() -> str:
    requested = os.environ.get("PYOPENGL_PLATFORM")
    if "OpenGL" in sys.modules:  # someone imported OpenGL already: its platform is fixed for this process
        candidates, can_switch = [requested or "default"], False
    else:
        candidates, can_switch = ([requested] if requested else ["egl", "osmesa"]), True
    failures = []
    for platform in candidates:
        if can_switch:
            os.environ["PYOPENGL_PLATFORM"] = platform
        try:
            pyrender = importlib.import_module("pyrender")
            pyrender.OffscreenRenderer(8, 8).delete()
            return platform
        except Exception as e:  # noqa: BLE001 - each platform fails in its own way (ImportError, GLError, ...)
            failures.append(f"{platform}: {type(e).__name__}: {e}")
            if can_switch:
                _purge_opengl_modules()
    hints = "; ".join(f"for {p}: apt-get install {_PLATFORM_PACKAGES[p]}" for p in candidates if p in _PLATFORM_PACKAGES)
    raise HeadlessGLError(
        "no headless OpenGL platform works here (" + " | ".join(failures) + "). Install the system "
        f"packages ({hints or 'libegl1 libgl1-mesa-dri libegl-mesa0'}), or on GPU nodes make sure the NVIDIA "
        "driver's EGL library is visible. Call pipeline.render.offscreen_renderer before importing pyrender."
    )


def offscreen_renderer(width: int, height: int):
    """(pyrender module, OffscreenRenderer) on the first headless platform that works (EGL, then
    OSMesa); PYOPENGL_PLATFORM, when set, is the only one tried. Call it before importing pyrender."""
    global _WORKING_PLATFORM
    if _WORKING_PLATFORM is None:
        _WORKING_PLATFORM = _select_platform()
    import pyrender

    return pyrender, pyrender.OffscreenRenderer(width, height)


def look_at(eye: np.ndarray, target: np.ndarray, up=(0.0, 1.0, 0.0)) -> np.ndarray:
    """4x4 camera-to-world pose (OpenGL convention: the camera looks down its -z axis)."""
    forward = np.asarray(target, float) - np.asarray(eye, float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    true_up = np.cross(right, forward)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, true_up, -forward, eye
    return pose


def render_vertex_colors(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray, camera_pose: np.ndarray,
                         yfov: float, width: int, height: int, flat: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """RGB image (H, W, 3) uint8 and depth (H, W) of a mesh with per-vertex colours (uint8 RGB).

    flat=True renders unlit, without anti-aliasing (exact colours); False adds simple shading for figures.
    """
    import trimesh

    pyrender, renderer = offscreen_renderer(width, height)
    try:
        mesh = trimesh.Trimesh(vertices, faces, vertex_colors=colors, process=False)
        scene = pyrender.Scene(bg_color=(0, 0, 0, 0), ambient_light=(1.0, 1.0, 1.0) if flat else (0.35, 0.35, 0.35))
        scene.add(pyrender.Mesh.from_trimesh(mesh, smooth=not flat))
        scene.add(pyrender.PerspectiveCamera(yfov=yfov, aspectRatio=width / height), pose=camera_pose)
        if not flat:
            scene.add(pyrender.DirectionalLight(intensity=3.0), pose=camera_pose)
        flags = pyrender.RenderFlags.FLAT if flat else pyrender.RenderFlags.NONE
        color, depth = renderer.render(scene, flags=flags)
    finally:
        renderer.delete()
    return color, depth
