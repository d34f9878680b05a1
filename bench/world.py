"""Demo-world generation throughput, and the choice of label renderer it rests on.

Measured on the same scenes in the same run:
- images/s of the production generator (photo, annotations, full-frame and crop-frame ground truth);
- ground-truth label maps of each scene rendered by the project's rasteriser (exact ids) and, as
  the baseline, by pyrender (OpenGL, flat colours encoding the ids; one renderer reused),
  with the share of pixels where pyrender's ids equal the exact ones.

    python bench/world.py [--images 20] [--model results/body/demo_body.npz]

Last line: one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.body.demo import load_or_build  # noqa: E402
from pipeline.body.model import BodyModel  # noqa: E402
from pipeline.camera import crop_intrinsics  # noqa: E402
from pipeline.world.images import sample_rng  # noqa: E402
from pipeline.world.scene import SceneContext, SceneMeshes, WorldSettings, generate_sample, render_label_maps  # noqa: E402


def pyrender_label_maps(renderers: dict, scene: SceneMeshes, ctx: SceneContext, K: np.ndarray, height: int, width: int):
    """The baseline: the same three maps through pyrender; ids are encoded in flat face colours."""
    import trimesh

    from pipeline.render import offscreen_renderer

    if "gl" not in renderers:  # one renderer, resized per view (several EGL renderers break on delete)
        renderers["gl"] = offscreen_renderer(width, height)
    pyrender, renderer = renderers["gl"]
    renderer.viewport_width, renderer.viewport_height = width, height
    gl = np.diag([1.0, -1.0, -1.0])  # OpenCV camera frame -> OpenGL camera frame
    camera = pyrender.IntrinsicsCamera(K[0, 0], K[1, 1], K[0, 2], K[1, 2], znear=0.05, zfar=100)

    def render(vertices, faces, face_codes):
        colours = np.zeros((len(faces), 4), np.uint8)
        colours[:, 0], colours[:, 1], colours[:, 3] = face_codes % 256, face_codes // 256, 255
        mesh = trimesh.Trimesh(vertices @ gl.T, faces, face_colors=colours, process=False)
        s = pyrender.Scene(bg_color=(0, 0, 0, 0), ambient_light=(1.0, 1.0, 1.0))
        s.add(pyrender.Mesh.from_trimesh(mesh, smooth=False))
        s.add(camera, pose=np.eye(4))
        rgb, _ = renderer.render(s, flags=pyrender.RenderFlags.FLAT)
        return rgb[..., 0].astype(np.int64) + 256 * rgb[..., 1].astype(np.int64)

    v, f = scene.vertices.numpy(), scene.faces.numpy()
    both = render(v, f, scene.face_object.astype(np.int64) * 32 + scene.face_label.astype(np.int64))
    n = len(ctx.rest_vertices)
    parts = render(v[:n], f[: scene.num_person_faces], ctx.face_parts.astype(np.int64) + 1)
    return {"parts": parts.astype(np.uint8), "cihp": (both % 32).astype(np.uint8), "instance": (both // 32).astype(np.uint8)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--model", help="body model file; default: build the demo body in memory")
    args = parser.parse_args()
    data = load_or_build(args.model)
    ctx = SceneContext.create(BodyModel(data))
    settings = WorldSettings(second_person_prob=0.3, occluders=(0, 1))

    generate_sample(ctx, settings, sample_rng(0, "bench", 10_000))  # warm-up
    start = time.perf_counter()
    samples = [generate_sample(ctx, settings, sample_rng(0, "bench", i)) for i in range(args.images)]
    generate_s = time.perf_counter() - start

    scenes = []
    for s in samples:
        scene = SceneMeshes(ctx, [s.person, *s.others], s.occluders)
        h, w = s.image.shape[:2]
        res = settings.crop_res
        scenes.append((scene, [(s.K, h, w), (crop_intrinsics(s.K, s.center, s.scale, res), res, res)]))

    start = time.perf_counter()
    ours = [[render_label_maps(scene, ctx, K, h, w)[0] for K, h, w in views] for scene, views in scenes]
    ours_s = time.perf_counter() - start
    renderers: dict = {}
    pyrender_label_maps(renderers, *scenes[0][:1], ctx, *scenes[0][1][0])  # warm-up: GL context and shaders
    start = time.perf_counter()
    theirs = [[pyrender_label_maps(renderers, scene, ctx, K, h, w) for K, h, w in views] for scene, views in scenes]
    pyrender_s = time.perf_counter() - start
    for _, r in renderers.values():
        r.delete()

    equal = total = 0
    for a_views, b_views in zip(ours, theirs):
        for a, b in zip(a_views, b_views):
            for key in a:
                equal += int((a[key] == b[key]).sum())
                total += a[key].size
    figures = {
        "images": args.images,
        "images_per_s": round(args.images / generate_s, 2),
        "label_maps_per_s": round(len(scenes) * 2 / ours_s, 1),
        "baseline_pyrender_label_maps_per_s": round(len(scenes) * 2 / pyrender_s, 1),
        "label_speedup": round(pyrender_s / ours_s, 2),
        "pyrender_pixels_equal": round(equal / total, 5),
    }
    print(f"generator: {figures['images_per_s']} images/s over {args.images} images; ground-truth map sets: ours "
          f"{figures['label_maps_per_s']}/s, pyrender {figures['baseline_pyrender_label_maps_per_s']}/s "
          f"(x{figures['label_speedup']}), pyrender ids equal to exact ids on {100 * figures['pyrender_pixels_equal']:.3f}% of pixels")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
