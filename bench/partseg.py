"""Part-label throughput: the production path against a naive loop, same samples, same run.

- production: `PartLabelRenderer` (batched body forward, the torch rasteriser, renderer reused);
- also measured: the same renderer class with its pyrender backend (one GL context reused);
- naive baseline: per sample, a single-body forward, a new pyrender scene and a new OffscreenRenderer
  (as code that renders labels on the fly does).

Memory: resident set size after labelling N and 4N samples with the production path (flat when
memory does not grow with the number of samples).

    python bench/partseg.py [--samples 100] [--annotations results/world/demo/test.npz] [--model ...]

Without --annotations, a demo split is generated in a temporary folder first. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.body.demo import load_or_build  # noqa: E402
from pipeline.body.model import BodyModel  # noqa: E402
from pipeline.camera import crop_intrinsics  # noqa: E402
from pipeline.datasets import Annotations, load_annotations  # noqa: E402
from pipeline.partseg import PartLabelRenderer, PartsegSettings, face_part_labels  # noqa: E402


def naive_labels(body: BodyModel, ann: Annotations, indices, res: int) -> list[np.ndarray]:
    """One sample at a time: forward, new scene, new renderer, render, delete."""
    import trimesh

    from pipeline.render import offscreen_renderer

    face_parts = face_part_labels(body.data.part_labels, body.faces) + 1
    colours = np.zeros((len(body.faces), 4), np.uint8)
    colours[:, 0], colours[:, 3] = face_parts, 255
    maps = []
    for i in indices:
        if not ann.has_smpl[i]:
            continue
        pose = torch.as_tensor(ann["pose"][i][None], dtype=torch.float32)
        with torch.inference_mode():
            verts = body(betas=torch.as_tensor(ann["shape"][i][None], dtype=torch.float32), body_pose=pose[:, 3:],
                         global_orient=pose[:, :3], transl=torch.as_tensor(ann["transl"][i][None], dtype=torch.float32)).vertices[0]
        K = crop_intrinsics(ann["cam_intrinsics"][i], ann["center"][i], ann["scale"][i], res)
        pyrender, renderer = offscreen_renderer(res, res, exact=True)
        scene = pyrender.Scene(bg_color=(0, 0, 0, 0), ambient_light=(1.0, 1.0, 1.0))
        mesh = trimesh.Trimesh(verts.double().numpy() * np.array([1.0, -1.0, -1.0]), body.faces, face_colors=colours, process=False)
        scene.add(pyrender.Mesh.from_trimesh(mesh, smooth=False))
        scene.add(pyrender.IntrinsicsCamera(K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5, znear=0.01, zfar=1000.0), pose=np.eye(4))
        rgb, _ = renderer.render(scene, flags=pyrender.RenderFlags.FLAT)
        renderer.delete()
        maps.append(rgb[..., 0].copy())
    return maps


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--annotations", help="a demo-world split (with cameras); default: generate one")
    parser.add_argument("--model", help="body model file; default: build the demo body in memory")
    parser.add_argument("--resolution", type=int, default=224)
    args = parser.parse_args()

    data = load_or_build(args.model)
    body = BodyModel(data)
    tmp = None
    if args.annotations:
        ann = load_annotations(args.annotations)
    else:
        from pipeline.world.images import merge_split, write_image_shard
        from pipeline.world.scene import WorldSettings

        tmp = tempfile.TemporaryDirectory()
        root = Path(tmp.name) / "demo"
        body_file = Path(tmp.name) / "body.npz"
        data.save(body_file)
        write_image_shard(body_file, root / "shards" / "bench-0000", "bench", range(args.samples), 0, WorldSettings(), progress=False)
        merge_split([root / "shards" / "bench-0000"], root, root / "bench.npz", root / "bench_gt.npz")
        ann = load_annotations(root / "bench.npz")
    n = min(args.samples, len(ann))
    indices = range(n)
    settings = PartsegSettings(resolution=args.resolution)

    production = PartLabelRenderer(body, settings)
    production.render(ann, range(min(8, n)))  # warm-up
    start = time.perf_counter()
    fast = production.render(ann, indices)
    production_s = time.perf_counter() - start
    rss_n = rss_mb()
    for _ in range(3):
        production.render(ann, indices)
    rss_4n = rss_mb()

    gl = PartLabelRenderer(body, PartsegSettings(resolution=args.resolution, backend="pyrender"))
    gl.render(ann, range(min(8, n)))
    start = time.perf_counter()
    gl_out = gl.render(ann, indices)
    gl_s = time.perf_counter() - start
    gl.close()  # pyrender's EGL renderers share one display: delete this one before the naive loop makes its own

    naive_labels(body, ann, range(2), args.resolution)  # warm-up: GL context and shaders
    start = time.perf_counter()
    naive = naive_labels(body, ann, indices, args.resolution)
    naive_s = time.perf_counter() - start

    labelled = ~fast["absent"]
    equal = float((np.stack(naive) == fast["parts"][labelled]).mean())
    figures = {
        "samples": n,
        "resolution": args.resolution,
        "labels_per_s": round(n / production_s, 1),
        "pyrender_reused_labels_per_s": round(n / gl_s, 1),
        "naive_labels_per_s": round(n / naive_s, 1),
        "speedup": round(naive_s / production_s, 2),
        "pixels_equal_naive": round(equal, 6),
        "pixels_equal_pyrender_backend": round(float((gl_out["parts"] == fast["parts"]).mean()), 6),
        "rss_mb_after_n": round(rss_n, 1),
        "rss_mb_after_4n": round(rss_4n, 1),
    }
    production.close()
    print(f"part labels at {args.resolution}px over {n} samples: production {figures['labels_per_s']}/s, pyrender reused "
          f"{figures['pyrender_reused_labels_per_s']}/s, naive {figures['naive_labels_per_s']}/s, speedup {figures['speedup']}x; "
          f"RSS {figures['rss_mb_after_n']} MB after {n}, {figures['rss_mb_after_4n']} MB after {4 * n}")
    print(json.dumps(figures))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
