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


_EXACT = False


def _disable_multisampling() -> None:
    """pyrender renders into a 4x multisampled framebuffer, which blends ids at edges; asking for 0
    samples makes that framebuffer a plain one, so flat colours (ids) come back exactly. This holds
    for every renderer the process creates afterwards (figures included: they lose anti-aliasing)."""
    global _EXACT
    if _EXACT:
        return
    import pyrender.renderer

    multisample = pyrender.renderer.glRenderbufferStorageMultisample

    def single_sample(target, samples, internal_format, width, height):
        return multisample(target, 0, internal_format, width, height)

    pyrender.renderer.glRenderbufferStorageMultisample = single_sample
    _EXACT = True


def offscreen_renderer(width: int, height: int, exact: bool = False):
    """(pyrender module, OffscreenRenderer) on the first headless platform that works (EGL, then
    OSMesa); PYOPENGL_PLATFORM, when set, is the only one tried. Call it before importing pyrender.
    exact=True turns multisampling off (see _disable_multisampling) for id buffers."""
    global _WORKING_PLATFORM
    if _WORKING_PLATFORM is None:
        _WORKING_PLATFORM = _select_platform()
    if exact:
        _disable_multisampling()
    import pyrender

    return pyrender, pyrender.OffscreenRenderer(width, height)


class FaceIdRenderer:
    """Exact face-id buffers through pyrender (EGL/OSMesa), for an OpenCV camera (K, pixel centres on
    integers). One GL renderer serves every call; its viewport follows the requested size.

    pyrender's EGL renderers share one display and deleting any of them ends it for all: keep one
    renderer alive per process, and close it before another is made."""

    def __init__(self):
        self.pyrender, self.renderer = offscreen_renderer(8, 8, exact=True)

    def render(self, vertices: np.ndarray, faces: np.ndarray, K: np.ndarray, height: int, width: int) -> np.ndarray:
        """(H, W) int64 face id per pixel, -1 on background; vertices (V, 3) in the OpenCV camera frame."""
        import trimesh

        pyrender = self.pyrender
        self.renderer.viewport_width, self.renderer.viewport_height = width, height
        code = np.arange(1, len(faces) + 1, dtype=np.int64)  # 0 is the background
        colours = np.stack([code & 255, (code >> 8) & 255, (code >> 16) & 255, np.full_like(code, 255)], 1).astype(np.uint8)
        gl_vertices = np.asarray(vertices, dtype=np.float64) * np.array([1.0, -1.0, -1.0])
        mesh = trimesh.Trimesh(gl_vertices, faces, face_colors=colours, process=False)
        scene = pyrender.Scene(bg_color=(0, 0, 0, 0), ambient_light=(1.0, 1.0, 1.0))
        scene.add(pyrender.Mesh.from_trimesh(mesh, smooth=False))
        # OpenGL puts pixel centres at +0.5: the principal point moves by half a pixel
        camera = pyrender.IntrinsicsCamera(K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5, znear=0.01, zfar=1000.0)
        scene.add(camera, pose=np.eye(4))
        rgb, _ = self.renderer.render(scene, flags=pyrender.RenderFlags.FLAT)
        ids = rgb[..., 0].astype(np.int64) | (rgb[..., 1].astype(np.int64) << 8) | (rgb[..., 2].astype(np.int64) << 16)
        return ids - 1

    def close(self) -> None:
        self.renderer.delete()


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
