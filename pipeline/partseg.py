"""Body-part labels for PARE: per sample, the 24 SMPL parts + background in the crop frame.

For each row with SMPL parameters the body is posed and placed with the camera the dataset implies,
then rendered as a face-id buffer directly in the crop frame; a face takes the minimum part id of its
vertices, and the map stores 1 + part id (0 is background).

Cameras:
- rows with `cam_intrinsics` and `transl` (the demo world, 3DPW-style data): that camera, exactly;
- SPIN/EFT-style rows without a camera: SPIN's and PARE's convention, a focal length of 5000 pixels
  at a 224-pixel crop (scaled with the resolution) and the principal point at the crop centre, with
  the translation estimated from the 2D joints by weighted least squares (`pipeline.camera.estimate_translation`).

Rows with `has_smpl == 0` get the flag `absent` (and an empty map that must not be used); rows whose
camera cannot be estimated (too few confident 2D joints) are skipped with the reason recorded.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline import cli
from pipeline.body.model import BodyModel, joints49
from pipeline.camera import SPIN_FOCAL_AT_224, crop_focal_length, crop_intrinsics, estimate_translation, intrinsics
from pipeline.config import resolve_device, schema_defaults
from pipeline.crop import crop_matrix, transform_points
from pipeline.datasets import Annotations, load_annotations
from pipeline.figures import save_grid
from pipeline.io import atomic_output, save_npz
from pipeline.labelsets import NUM_PART_CLASSES, palette
from pipeline.metrics import segmentation_scores
from pipeline.raster import rasterize
from pipeline.shards import load_shards
from pipeline.shards import write_index as write_shard_index
from pipeline.skeleton import NUM_JOINTS49, NUM_OPENPOSE_JOINTS, SMPL_PART_NAMES

log = logging.getLogger("pipeline.partseg")
STAGE_DEFAULTS = schema_defaults("partseg")  # the config schema: the one place the stage's defaults live

CAMERA_DATASET, CAMERA_ESTIMATED, CAMERA_NONE = 0, 1, 2


@dataclass
class PartsegSettings:
    resolution: int = schema_defaults("labels")["resolution"]
    focal_at_224: float = SPIN_FOCAL_AT_224
    min_joints: int = 4  # confident 2D joints needed to estimate a translation
    keypoint_threshold: float = 0.3  # OpenPose confidence that counts as a detection
    backend: str = STAGE_DEFAULTS["backend"]  # "raster" (torch, CPU/CUDA) or "pyrender" (OpenGL through EGL/OSMesa)
    batch_size: int = STAGE_DEFAULTS["batch_size"]
    device: str = "cpu"


def face_part_labels(part_labels: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(F,) part id of each face: the minimum part id of its three vertices."""
    return np.asarray(part_labels)[np.asarray(faces)].min(axis=1)


def part_branch_labels(parts: np.ndarray, size: int = 56) -> np.ndarray:
    """Labels (..., R, R) at PARE's part-branch resolution (56 at a 224 crop): each low-resolution
    pixel takes the label of the crop pixel under its centre (R must be a multiple of `size`)."""
    res = parts.shape[-1]
    if res % size:
        raise ValueError(f"part maps of {res} pixels do not divide into {size}")
    factor = res // size
    centres = np.arange(size) * factor + factor // 2
    return parts[..., centres[:, None], centres[None, :]]


class PartLabelRenderer:
    """Renders part-label maps for rows of a dataset; the body model and the GL context (pyrender
    backend) are created once and reused for every batch."""

    def __init__(self, body: BodyModel, settings: PartsegSettings):
        self.settings = settings
        self.body = body.to(settings.device)
        self.faces = torch.as_tensor(body.faces, device=settings.device)
        self.face_parts = torch.as_tensor(face_part_labels(body.data.part_labels, body.faces) + 1, dtype=torch.uint8)
        self.gl = None
        if settings.backend == "pyrender":
            from pipeline.render import FaceIdRenderer

            self.gl = FaceIdRenderer()
        elif settings.backend != "raster":
            raise ValueError(f"unknown part-label backend {settings.backend!r} (raster or pyrender)")

    def close(self) -> None:
        if self.gl is not None:
            self.gl.close()

    def _face_ids(self, vertices: torch.Tensor, K: np.ndarray) -> torch.Tensor:
        res = self.settings.resolution
        if self.gl is not None:
            return torch.as_tensor(self.gl.render(vertices.cpu().numpy(), self.faces.cpu().numpy(), K, res, res))
        K_t = torch.as_tensor(K, dtype=vertices.dtype, device=vertices.device)
        return rasterize(vertices, self.faces, K_t, res, res).face_id.cpu()

    def _keypoints_in_crop(self, ann: Annotations, i: int, matrix: np.ndarray) -> np.ndarray:
        """(49, 3) 2D joints in the crop frame: OpenPose detections above the threshold, then the
        annotated joints; a joint that is not there has confidence 0."""
        kp = np.zeros((NUM_JOINTS49, 3))
        if "openpose" in ann:
            op = ann["openpose"][i]
            kp[:NUM_OPENPOSE_JOINTS] = np.where((op[:, 2:] > self.settings.keypoint_threshold), op, 0.0)
        if "part" in ann:
            kp[NUM_OPENPOSE_JOINTS:] = ann["part"][i]
        kp[:, :2] = transform_points(kp[:, :2], matrix)
        if (kp[NUM_OPENPOSE_JOINTS:, 2] > 0).sum() >= self.settings.min_joints:
            kp[:NUM_OPENPOSE_JOINTS, 2] = 0  # annotated joints alone when there are enough (SPIN's choice)
        return kp

    def render(self, ann: Annotations, indices: range) -> dict[str, np.ndarray]:
        """Part maps and flags for rows `indices` of `ann`."""
        s = self.settings
        res = s.resolution
        n = len(indices)
        out = {
            "index": np.asarray(indices, dtype=np.int64),
            "parts": np.zeros((n, res, res), np.uint8),
            "absent": np.zeros(n, bool),
            "skipped": np.zeros(n, bool),
            "camera_source": np.full(n, CAMERA_NONE, np.uint8),
            "cam_t": np.zeros((n, 3)),
            "reason": np.full(n, "", dtype=object),
        }
        has_camera = "cam_intrinsics" in ann and "transl" in ann
        smpl = ann.has_smpl
        for start in range(0, n, s.batch_size):
            rows = [i for i in indices[start:start + s.batch_size]]
            posed = [i for i in rows if smpl[i]]
            for i in rows:
                ann.check_row(i, need_smpl=True)
                if not smpl[i]:
                    out["absent"][i - indices.start] = True
                    out["reason"][i - indices.start] = "no SMPL parameters (has_smpl = 0)"
            if not posed:
                continue
            pose = torch.as_tensor(np.stack([ann["pose"][i] for i in posed]), dtype=torch.float32, device=s.device)
            betas = torch.as_tensor(np.stack([ann["shape"][i][: self.body.num_betas] for i in posed]), dtype=torch.float32, device=s.device)
            transl = None
            if has_camera:
                transl = torch.as_tensor(np.stack([ann["transl"][i] for i in posed]), dtype=torch.float32, device=s.device)
            with torch.inference_mode():
                body = self.body(betas=betas, body_pose=pose[:, 3:], global_orient=pose[:, :3], transl=transl)
                joints = joints49(body) if not has_camera else None
            for k, i in enumerate(posed):
                j = i - indices.start
                matrix = crop_matrix(ann["center"][i], ann["scale"][i], res)
                vertices = body.vertices[k].double()
                if has_camera:
                    K = crop_intrinsics(ann["cam_intrinsics"][i], ann["center"][i], ann["scale"][i], res)
                    out["camera_source"][j] = CAMERA_DATASET
                    out["cam_t"][j] = ann["transl"][i]
                else:
                    K = intrinsics(crop_focal_length(res, s.focal_at_224), res)
                    t = estimate_translation(joints[k].double().cpu().numpy(), self._keypoints_in_crop(ann, i, matrix),
                                             K[0, 0], K[:2, 2], s.min_joints)
                    if t is None:
                        out["skipped"][j] = True
                        out["reason"][j] = f"camera not estimable: fewer than {s.min_joints} confident 2D joints"
                        continue
                    vertices = vertices + torch.as_tensor(t, dtype=vertices.dtype, device=vertices.device)
                    out["camera_source"][j] = CAMERA_ESTIMATED
                    out["cam_t"][j] = t
                fid = self._face_ids(vertices, K)
                out["parts"][j] = torch.where(fid >= 0, self.face_parts[fid.clamp(min=0)], 0).numpy()
        out["reason"] = out["reason"].astype(str)
        return out


def label_agreement(predicted: np.ndarray, truth: np.ndarray, num_parts: int = NUM_PART_CLASSES - 1) -> dict:
    """Pixel agreement and IoU per part (1..num_parts) between two stacks of part maps."""
    scores = segmentation_scores(predicted, truth, range(1, num_parts + 1))
    return {"pixel_agreement": scores["pixel_accuracy"], "miou": scores["miou"], "per_part_iou": scores["per_label_iou"]}


def write_shard(body_file: str, annotations_file: str, images_root: str, dataset: str, indices: range, out: str,
                settings: PartsegSettings) -> dict:
    """Render the rows `indices` of a dataset into one shard file (atomically); returns its counts."""
    ann = load_annotations(annotations_file, image_root=images_root, name=dataset)
    ann.require_rows(indices)
    renderer = PartLabelRenderer(BodyModel.from_file(body_file), settings)
    try:
        out_arrays = renderer.render(ann, indices)
    finally:
        renderer.close()
    out_arrays["imgname"] = ann["imgname"][indices.start:indices.stop]
    out_arrays["resolution"] = np.array(settings.resolution)
    save_npz(out, out_arrays)
    return {k: int(out_arrays[k].sum()) for k in ("absent", "skipped")} | {"rows": len(indices)}


PARTSEG_FLAGS = ("absent", "skipped")


def write_index(shard_files: list[str], out: str) -> dict:
    """Index of a dataset's part-label shards with the manifest of rows without labels."""
    return write_shard_index(shard_files, out, PARTSEG_FLAGS)


def _load_dataset_labels(index_file: str) -> dict[str, np.ndarray]:
    return load_shards(index_file, ("index", "parts", *PARTSEG_FLAGS))


def check_against_ground_truth(pairs: list[tuple[str, str]], out: str, min_agreement: float,
                               estimated: tuple[str, str, str] | None = None) -> dict:
    """Compare the labels of demo datasets with the world's ground truth; write the figures to `out`.

    `estimated` (body file, annotations, ground truth) also measures SPIN's estimated-camera path on
    one split, by rendering it again without its camera."""
    predicted, truth, per_dataset = [], [], {}
    for index_file, gt_file in pairs:
        labels = _load_dataset_labels(index_file)
        with np.load(gt_file, allow_pickle=False) as z:
            gt = z["crop_parts"][labels["index"]]
        use = ~labels["absent"] & ~labels["skipped"]
        predicted.append(labels["parts"][use])
        truth.append(gt[use])
        m = label_agreement(labels["parts"][use], gt[use])
        per_dataset[Path(index_file).parent.name] = {"samples": int(use.sum()), "pixel_agreement": m["pixel_agreement"], "miou": m["miou"]}
    metrics = label_agreement(np.concatenate(predicted), np.concatenate(truth))
    result = {
        "pixel_agreement": metrics["pixel_agreement"],
        "miou": metrics["miou"],
        "per_part_iou": {SMPL_PART_NAMES[p - 1]: v for p, v in metrics["per_part_iou"].items()},
        "samples": int(sum(len(p) for p in predicted)),
        "min_agreement": min_agreement,
        "per_dataset": per_dataset,
    }
    if estimated is not None:
        body_file, annotations_file, gt_file = estimated
        ann = load_annotations(annotations_file)
        for key in ("cam_intrinsics", "transl"):
            ann.arrays.pop(key, None)
        with np.load(gt_file, allow_pickle=False) as z:
            gt = z["crop_parts"]
        renderer = PartLabelRenderer(BodyModel.from_file(body_file), PartsegSettings(resolution=gt.shape[-1]))
        labels = renderer.render(ann, range(len(ann)))
        use = ~labels["absent"] & ~labels["skipped"]
        m = label_agreement(labels["parts"][use], gt[use])
        silhouette = (labels["parts"][use] > 0), (gt[use] > 0)
        result["estimated_camera"] = {
            "note": "SPIN/PARE convention (focal 5000 at 224, translation from 2D joints) on the perspective demo photos",
            "split": Path(annotations_file).stem, "samples": int(use.sum()), "pixel_agreement": m["pixel_agreement"],
            "miou": m["miou"], "silhouette_iou": float((silhouette[0] & silhouette[1]).sum() / (silhouette[0] | silhouette[1]).sum()),
        }
    with atomic_output(out) as tmp:
        Path(tmp).write_text(json.dumps(result, indent=1))
    if result["pixel_agreement"] < min_agreement:
        raise RuntimeError(f"part labels agree with the ground truth on {100 * result['pixel_agreement']:.2f}% of pixels, "
                           f"below the required {100 * min_agreement:.2f}% ({out})")
    return result


def partseg_figure(items: list[tuple[str, str, str]], out: str, per_dataset: int = 4, check_file: str | None = None) -> None:
    """Grid of crops with part-label overlays; `items` are (annotations, images root, index) triples."""
    colours = palette(NUM_PART_CLASSES)
    tiles = []
    for annotations_file, images_root, index_file in items:
        ann = load_annotations(annotations_file, image_root=images_root)
        labels = _load_dataset_labels(index_file)
        shown = 0
        for k in np.flatnonzero(~labels["absent"] & ~labels["skipped"]):
            if shown == per_dataset:
                break
            i = int(labels["index"][k])
            res = labels["parts"].shape[-1]
            crop = ann.crop(i, res)
            parts = labels["parts"][k]
            mixed = crop.astype(float)
            mixed[parts > 0] = 0.35 * mixed[parts > 0] + 0.65 * colours[parts[parts > 0]]
            tiles.append(np.concatenate([crop, mixed.astype(np.uint8)], axis=1))
            shown += 1
    banner = None
    if check_file:
        check = json.loads(Path(check_file).read_text())
        banner = (f"vs ground truth: pixel agreement {100 * check['pixel_agreement']:.3f}%, mIoU {check['miou']:.4f} "
                  f"over {check['samples']} samples")
    save_grid(tiles, out, banner=banner)


def main(argv: list[str] | None = None) -> int:
    d = STAGE_DEFAULTS
    parser, sub = cli.stage_parser("python -m pipeline.partseg", "SMPL part labels in the crop frame")
    p = sub.add_parser("shard", help="render the part labels of rows START..STOP-1 of a dataset")
    p.add_argument("body")
    p.add_argument("annotations")
    p.add_argument("out")
    p.add_argument("--dataset", required=True)
    p.add_argument("--images", required=True, help="image root of the dataset")
    cli.add_indices(p)
    p.add_argument("--resolution", type=int, default=PartsegSettings.resolution)
    p.add_argument("--focal-at-224", type=float, default=d["focal_length"])
    p.add_argument("--backend", choices=("raster", "pyrender"), default=d["backend"])
    p.add_argument("--batch-size", type=int, default=d["batch_size"])
    p.add_argument("--device", default=d["device"], help="cpu, cuda, or auto (cuda when available)")
    cli.add_index_command(sub, "index a dataset's shards, with the manifest of rows without labels")
    p = cli.add_check_command(sub, "compare demo labels with the world's ground truth")
    p.add_argument("--min-agreement", type=float, default=d["min_agreement"])
    p.add_argument("--estimated", nargs=3, metavar=("BODY", "ANNOTATIONS", "GT"), help="also measure the estimated-camera path")
    p = sub.add_parser("figure", help="crops with part-label overlays")
    p.add_argument("out")
    p.add_argument("items", nargs="+", help="ANNOTATIONS:IMAGES_ROOT:INDEX_JSON")
    p.add_argument("--check", help="checks json whose figures go into the banner")
    args = parser.parse_args(argv)
    start = cli.start_logging()
    if args.command == "shard":
        device = resolve_device(args.device)
        settings = PartsegSettings(resolution=args.resolution, focal_at_224=args.focal_at_224, backend=args.backend,
                                   batch_size=args.batch_size, device=device)
        counts = write_shard(args.body, args.annotations, args.images, args.dataset, range(*args.indices), args.out, settings)
        elapsed = time.perf_counter() - start
        log.info("%s rows %d-%d on %s (%s): %s, %.1f labels/s", args.dataset, args.indices[0], args.indices[1] - 1,
                 device, args.backend, counts, counts["rows"] / elapsed)
    elif args.command == "index":
        log.info("%s", write_index(args.shards, args.out))
    elif args.command == "check":
        pairs = [tuple(p.split(":", 1)) for p in args.pairs]
        result = check_against_ground_truth(pairs, args.out, args.min_agreement, tuple(args.estimated) if args.estimated else None)
        log.info("pixel agreement %.5f, mIoU %.5f over %d samples", result["pixel_agreement"], result["miou"], result["samples"])
    elif args.command == "figure":
        partseg_figure([tuple(i.split(":", 2)) for i in args.items], args.out, check_file=args.check)
    cli.log_done(log, start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
