"""DSR's clothing semantic prior: for every body vertex, a distribution over the 20 CIHP labels,
learned from clothed scans rendered from several views and parsed.

Map (per shard of scans, `map_shard`): every view of a textured scan is rendered headless (our torch
rasteriser, CPU or CUDA), parsed with the pseudo-label stage's own inference code
(`ParserRunner.label_crops`, same settings), and the scan's fitted body is rendered from the same
camera into the same crop frame as an exact face-id buffer. Every pixel of a visible body face with
a parser label other than background votes for one vertex: the face's corner nearest to the pixel
(largest barycentric coordinate). Counts therefore go through vertices and are integers (V, 20), so
the reduce is exact and independent of the order of shards. A vertex is *seen* in a view when at
least one pixel votes for it, whatever its label.

Reduce (`reduce_counts`): the sum of every shard's counts, normalised per vertex; vertices never seen
take the mean of their seen neighbours (spread over the mesh); optionally, a left/right label pair
(arm, leg, shoe) takes the side of the vertex's own body part (`pool_sides`: a parser's left/right is
unreliable on people seen from behind, the fitted body's is not); optionally, labels implausible for a
vertex's body part are zeroed (`resources/prior_part_rules.yaml`); a small background probability
is mixed in; the per-face table DSR's renderer uses is the mean of each face's three vertices.

Scans come from an index (JSON; the demo world writes one, `python -m pipeline.prior index` builds
one for an AGORA-style folder), each with a mesh (vertex colours or a UV texture), a body fit and
optionally a camera rig file.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image, ImageDraw
from tqdm import tqdm

from models.graphonomy import from_pretrained
from pipeline import cli
from pipeline.body.model import BodyModel, load_body_model
from pipeline.camera import RigSettings, crop_intrinsics, intrinsics, opencv_look_at
from pipeline.config import resolve_device, schema_defaults
from pipeline.datasets import keypoints_center_scale
from pipeline.figures import save_grid
from pipeline.human_parser import ParserRunner, add_inference_arguments, settings_from_arguments
from pipeline.io import atomic_output, save_npz
from pipeline.io import sha256_file as file_hash
from pipeline.labelsets import CIHP, CIHP_FLIP_PAIRS, CIHP_IGNORE, CIHP_LABELS, NUM_CIHP_CLASSES, palette
from pipeline.mesh import vertex_adjacency, vertex_normals
from pipeline.raster import rasterize
from pipeline.scans import (FitReader, RenderSettings, ScanInputError, ScanMesh, build_scan_index, load_scan_mesh,
                            read_scan_index, render_scan, scan_views)
from pipeline.skeleton import SMPL_PART_NAMES

log = logging.getLogger("pipeline.prior")

PART_RULES_PATH = Path(__file__).resolve().parents[1] / "resources" / "prior_part_rules.yaml"
PRIOR_FORMAT = 1
STAGE_DEFAULTS = schema_defaults("prior")  # the config schema: the one place the prior's defaults live


# ---------------------------------------------------------------------------------------------------
# Map


def vote(face_id: np.ndarray, bary: np.ndarray, labels: np.ndarray, faces: np.ndarray, num_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts (V, 20) int64 from one view and the vertices seen in it (V,) bool.

    face_id (H, W) body face per pixel (-1: none), bary (H, W, 3), labels (H, W) parser labels in the
    same frame. Each covered pixel picks its face's nearest corner; labelled pixels (not background,
    not ignored) add one to that vertex's count of their label."""
    covered = face_id >= 0
    corner = bary[covered].argmax(axis=1)
    vertex = faces[face_id[covered], corner]
    seen = np.zeros(num_vertices, bool)
    seen[vertex] = True
    label = labels[covered].astype(np.int64)
    keep = (label != CIHP["Background"]) & (label != CIHP_IGNORE) & (label < NUM_CIHP_CLASSES)
    flat = np.bincount(vertex[keep] * NUM_CIHP_CLASSES + label[keep], minlength=num_vertices * NUM_CIHP_CLASSES)
    return flat.reshape(num_vertices, NUM_CIHP_CLASSES).astype(np.int64), seen


@dataclass
class MapSettings:
    label_resolution: int = STAGE_DEFAULTS["resolution"]  # side of the crop frame in which parser labels meet body faces
    box_rescale: float = 1.2  # the crop box around the projected body (SPIN's 1.2)
    seed: int = 0
    device: str = "cpu"


def map_scans(rows: list[dict], fits: FitReader, runner, rig, render: RenderSettings, settings: MapSettings,
              progress: bool = True, keep_views: int = 0) -> dict:
    """Counts, seen-view counts and per-scan records for `rows`; memory is one scan at a time.
    `keep_views` > 0 keeps that many (image, labels, face ids) triples for figures and tests."""
    model = fits.model
    faces = np.asarray(model.data.f, dtype=np.int64)
    faces_t = torch.as_tensor(faces, device=settings.device)
    V = model.data.num_vertices
    res = settings.label_resolution
    runner_res = getattr(getattr(runner, "settings", None), "label_resolution", res)
    if runner_res != res:
        raise ValueError(f"the parser writes labels at {runner_res} px, the prior's crop frame is {res} px")
    counts = np.zeros((V, NUM_CIHP_CLASSES), np.int64)
    seen_views = np.zeros(V, np.int32)
    records, kept = [], []
    for row in tqdm(rows, desc="prior scans", disable=not progress, mininterval=5):
        scan = load_scan_mesh(row["mesh"])
        body = fits.vertices(row["fit"], row["fit_type"], row["scan"])
        views = scan_views(row, scan, rig, settings.seed)
        jobs, geometry = [], []
        for k, view in enumerate(views):
            K, R, t = (np.asarray(view[key], dtype=np.float64) for key in ("K", "R", "t"))
            image = render_scan(scan, R, t, K, int(view["height"]), int(view["width"]), render, settings.device)
            cam = body @ R.T + t
            if (cam[:, 2] <= 1e-3).any():
                raise ScanInputError(f"scan {row['scan']}: view {k} has the camera inside or behind the body")
            projected = cam[:, :2] / cam[:, 2:3] * K[[0, 1], [0, 1]] + K[:2, 2]
            center, scale = keypoints_center_scale(np.c_[projected, np.ones(len(projected))], 0.0, settings.box_rescale)
            jobs.append((k, image, center, scale))
            geometry.append((cam, crop_intrinsics(K, center, scale, res)))
        for k, labels in runner.label_crops(iter(jobs)):
            cam, K_crop = geometry[k]
            r = rasterize(torch.as_tensor(cam, device=settings.device), faces_t, torch.as_tensor(K_crop, device=settings.device), res, res)
            face_id, bary = r.face_id.cpu().numpy(), r.bary.cpu().numpy()
            c, seen = vote(face_id, bary, labels, faces, V)
            counts += c
            seen_views += seen
            if len(kept) < keep_views:
                kept.append({"image": jobs[k][1], "labels": labels, "face_id": face_id, "center": jobs[k][2], "scale": jobs[k][3]})
        records.append({"scan": row["scan"], "views": len(views), "mesh_sha256": file_hash(row["mesh"]),
                        "fit_sha256": file_hash(row["fit"])})
    return {"counts": counts, "seen_views": seen_views, "records": records, "kept": kept}


def write_map_shard(index_file: str, indices: range, body_file: str, weights: str, variant: str, parse_settings,
                    rig, render: RenderSettings, settings: MapSettings, out: str, fit_type: str | None = None,
                    deformation_transfer: str | None = None, smplx_model_dir: str | None = None) -> dict:
    rows = read_scan_index(index_file)
    if indices.stop > len(rows):
        raise ScanInputError(f"{index_file} lists {len(rows)} scans; this shard asks for {indices.start}..{indices.stop - 1}: "
                              "the scan count in config does not match the index (rebuild it)")
    rows = rows[indices.start:indices.stop]
    if fit_type is not None:
        rows = [{**r, "fit_type": fit_type} for r in rows]
    fits = FitReader(BodyModel.from_file(body_file), deformation_transfer, smplx_model_dir)
    # the parser writes its labels straight into the prior's crop frame
    parse_settings = replace(parse_settings, label_resolution=settings.label_resolution)
    runner = ParserRunner(from_pretrained(weights, variant=variant), parse_settings)
    result = map_scans(rows, fits, runner, rig, render, settings)
    records = result["records"]
    save_npz(out, {
        "counts": result["counts"],
        "seen_views": result["seen_views"],
        "scans": np.array([r["scan"] for r in records], dtype=str),
        "views": np.array([r["views"] for r in records], dtype=np.int64),
        "mesh_sha256": np.array([r["mesh_sha256"] for r in records], dtype=str),
        "fit_sha256": np.array([r["fit_sha256"] for r in records], dtype=str),
        "parser_sha256": np.array(file_hash(weights)),
    })
    return {"scans": len(records), "views": int(sum(r["views"] for r in records))}


# ---------------------------------------------------------------------------------------------------
# Reduce


def load_part_rules(path: str | Path = PART_RULES_PATH) -> np.ndarray:
    """(24 parts, 20 labels) bool: which labels a body part may carry."""
    spec = yaml.safe_load(Path(path).read_text())["allowed_parts"]
    allowed = np.zeros((len(SMPL_PART_NAMES), NUM_CIHP_CLASSES), bool)
    allowed[:, CIHP["Background"]] = True
    unknown_labels = set(spec) - set(CIHP_LABELS)
    if unknown_labels:
        raise ValueError(f"{path}: unknown labels {sorted(unknown_labels)}")
    for label, parts in spec.items():
        if parts == "all":
            allowed[:, CIHP[label]] = True
            continue
        unknown = set(parts) - set(SMPL_PART_NAMES)
        if unknown:
            raise ValueError(f"{path}: label {label}: unknown parts {sorted(unknown)}")
        for part in parts:
            allowed[SMPL_PART_NAMES.index(part), CIHP[label]] = True
    missing = set(CIHP_LABELS[1:]) - set(spec)
    if missing:
        raise ValueError(f"{path}: no rule for labels {sorted(missing)}")
    return allowed


def pool_sides(counts: np.ndarray, part_labels: np.ndarray) -> np.ndarray:
    """Counts with every left/right label pair pooled onto the side of the vertex's own body part.

    A parser decides left from right by how the person faces the camera; from behind it often gets
    it wrong, but the fitted body knows which side each vertex is on (SMPL's part names: the
    person's own left and right). On a left-side part, votes for Right-arm count as Left-arm (and
    the mirror); vertices of central parts (spine, hips, neck, head) keep their counts."""
    names = [SMPL_PART_NAMES[p] for p in np.asarray(part_labels)]
    left = np.array([n.startswith("left") for n in names])
    right = np.array([n.startswith("right") for n in names])
    pooled = counts.copy()
    for lo, ro in CIHP_FLIP_PAIRS:
        both = counts[:, lo] + counts[:, ro]
        pooled[left, lo], pooled[left, ro] = both[left], 0
        pooled[right, ro], pooled[right, lo] = both[right], 0
    return pooled


def fill_unseen(dist: np.ndarray, seen: np.ndarray, faces: np.ndarray, max_iterations: int = 200) -> np.ndarray:
    """Vertices never seen take the mean distribution of their already-filled neighbours, ring by ring."""
    adj = vertex_adjacency(faces, len(dist))
    dist = dist.copy()
    known = seen.copy()
    for _ in range(max_iterations):
        if known.all():
            break
        sums = adj @ (dist * known[:, None])
        weight = adj @ known.astype(np.float64)
        grow = ~known & (weight > 0)
        if not grow.any():
            break
        dist[grow] = sums[grow] / weight[grow, None]
        known |= grow
    dist[~known] = 1.0 / NUM_CIHP_CLASSES  # parts of the mesh no seen vertex connects to
    return dist


def reduce_counts(shard_files: list[str], body_file: str, out: str, background_probability: float = 0.01,
                  part_cleaning: bool = True, rules_file: str | Path = PART_RULES_PATH, sides_from_body: bool = True) -> dict:
    data = load_body_model(body_file)
    faces = np.asarray(data.f, dtype=np.int64)
    V = data.num_vertices
    counts = np.zeros((V, NUM_CIHP_CLASSES), np.int64)
    seen_views = np.zeros(V, np.int64)
    scans, views, mesh_hashes, fit_hashes, parser_hashes = [], [], [], [], set()
    for f in shard_files:  # one shard in memory at a time
        with np.load(f, allow_pickle=False) as z:
            if z["counts"].shape != counts.shape:
                raise ValueError(f"{f}: counts of shape {z['counts'].shape}, the body model needs {counts.shape}: "
                                 "shards from another body model; rerun the prior's map jobs")
            counts += z["counts"]
            seen_views += z["seen_views"]
            scans += z["scans"].tolist()
            views += z["views"].tolist()
            mesh_hashes += z["mesh_sha256"].tolist()
            fit_hashes += z["fit_sha256"].tolist()
            parser_hashes.add(str(z["parser_sha256"]))
    if len(parser_hashes) > 1:
        raise ValueError(f"prior shards were parsed with different parser weights ({sorted(parser_hashes)}): rerun them")
    # one canonical order, so the file does not depend on the order shards were listed in
    order = np.argsort(scans, kind="stable")
    scans, views = np.array(scans, dtype=str)[order], np.array(views, dtype=np.int64)[order]
    mesh_hashes, fit_hashes = np.array(mesh_hashes, dtype=str)[order], np.array(fit_hashes, dtype=str)[order]
    seen = counts.sum(1) > 0
    votes = pool_sides(counts, data.part_labels) if sides_from_body else counts
    dist = np.zeros((V, NUM_CIHP_CLASSES))
    dist[seen] = votes[seen] / votes[seen].sum(1, keepdims=True)
    dist = fill_unseen(dist, seen, faces)
    if part_cleaning:
        allowed = load_part_rules(rules_file)[np.asarray(data.part_labels)]
        cleaned = dist * allowed
        total = cleaned.sum(1, keepdims=True)
        # a vertex whose every label is implausible keeps its distribution (nothing better is known)
        dist = np.where(total > 0, cleaned / np.maximum(total, 1e-12), dist)
    dist[:, CIHP["Background"]] = 0.0
    dist = dist / dist.sum(1, keepdims=True)
    dist = (1 - background_probability) * dist
    dist[:, CIHP["Background"]] += background_probability
    face_prior = dist[faces].mean(axis=1)
    result = {
        "format_version": np.array(PRIOR_FORMAT),
        "vertex_prior": dist.astype(np.float32),
        "face_prior": face_prior.astype(np.float32),
        "counts": counts,
        "seen_views": seen_views,
        "labels": np.array(CIHP_LABELS, dtype=str),
        "num_scans": np.array(len(scans)),
        "num_views": np.array(int(views.sum())),
        "scans": scans,
        "views": views,
        "mesh_sha256": mesh_hashes,
        "fit_sha256": fit_hashes,
        "parser_sha256": np.array(next(iter(parser_hashes), "")),
        "body_sha256": np.array(file_hash(body_file)),
        "background_probability": np.array(background_probability),
        "part_cleaning": np.array(part_cleaning),
        "sides_from_body": np.array(sides_from_body),
    }
    save_npz(out, result)
    return {"scans": len(scans), "views": int(views.sum()), "seen_vertices": int(seen.sum()), "vertices": V}


# ---------------------------------------------------------------------------------------------------
# Check and figure


def ground_truth_distribution(index_file: str | Path, num_vertices: int) -> tuple[np.ndarray, int]:
    """Summed one-hot ground-truth labels (V, 20) over the scans of the index that carry them."""
    total = np.zeros((num_vertices, NUM_CIHP_CLASSES), np.int64)
    n = 0
    for row in read_scan_index(index_file):
        if row.get("gt_vertex_labels"):
            labels = np.load(row["gt_vertex_labels"])
            total[np.arange(num_vertices), labels.astype(np.int64)] += 1
            n += 1
    return total, n


def check_prior(prior_file: str, index_file: str, out: str, goal_agreement: float = 0.9,
                min_agreement: float | None = None) -> dict:
    """Argmax agreement with the demo scans' ground truth over seen vertices; reported against
    `goal_agreement`, and a failure below `min_agreement` when that is set."""
    with np.load(prior_file, allow_pickle=False) as z:
        prior, seen_views = z["vertex_prior"], z["seen_views"]
    truth, n = ground_truth_distribution(index_file, len(prior))
    if n == 0:
        raise ValueError(f"{index_file}: no scan has ground-truth vertex labels; the check needs the demo world's scans")
    seen = seen_views > 0
    clothing = prior.copy()
    clothing[:, CIHP["Background"]] = -1
    predicted, expected = clothing.argmax(1), truth.argmax(1)
    agree = predicted == expected
    per_label = {}
    for label in np.unique(expected[seen]):
        sel = seen & (expected == label)
        per_label[CIHP_LABELS[label]] = {"vertices": int(sel.sum()), "agreement": float(agree[sel].mean())}
    result = {
        "argmax_agreement": float(agree[seen].mean()),
        "seen_vertices": int(seen.sum()),
        "vertices": int(len(prior)),
        "scans_with_ground_truth": n,
        "per_label": per_label,
        "goal_agreement": goal_agreement,
        "meets_goal": bool(agree[seen].mean() >= goal_agreement),
        "min_agreement": min_agreement,
    }
    with atomic_output(out) as tmp:
        Path(tmp).write_text(json.dumps(result, indent=1))
    if min_agreement is not None and result["argmax_agreement"] < min_agreement:
        raise RuntimeError(f"the clothing prior's argmax agrees with the ground truth on {result['argmax_agreement']:.3f} "
                           f"of seen vertices, below {min_agreement} ({out})")
    return result


def prior_figure(prior_file: str, body_file: str, out: str, size: int = 320) -> None:
    """The body in its rest pose coloured by its most likely clothing label, front and back."""
    data = load_body_model(body_file)
    with np.load(prior_file, allow_pickle=False) as z:
        prior = z["vertex_prior"].copy()
        num_scans, num_views = int(z["num_scans"]), int(z["num_views"])
    prior[:, CIHP["Background"]] = -1
    colours = palette(NUM_CIHP_CLASSES)[prior.argmax(1)].astype(np.float64) / 255.0
    verts = np.asarray(data.v_template, dtype=np.float64)
    faces = np.asarray(data.f, dtype=np.int64)
    lo, hi = verts.min(0), verts.max(0)
    center, extent = 0.5 * (lo + hi), float((hi - lo).max())
    scan = ScanMesh(verts, faces, vertex_normals(verts, faces), colours)
    f = size * 0.85 * 3.0 / extent
    K = intrinsics(f, size)
    tiles = []
    for name, direction in (("front", 1.0), ("back", -1.0)):
        R, t = opencv_look_at(center + np.array([0.0, 0.0, 3.0 * direction]), center)
        tile = render_scan(scan, R, t, K, size, size, RenderSettings(ambient=0.55, background=(1.0, 1.0, 1.0)))
        im = Image.fromarray(tile)
        ImageDraw.Draw(im).text((6, 6), name, fill=(0, 0, 0))
        tiles.append(np.asarray(im))
    present = sorted(set(prior.argmax(1).tolist()))
    legend = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(legend)
    for k, label in enumerate(present):
        draw.rectangle((10, 10 + 18 * k, 24, 24 + 18 * k), fill=tuple(int(c) for c in palette(NUM_CIHP_CLASSES)[label]))
        draw.text((32, 11 + 18 * k), CIHP_LABELS[label], fill=(0, 0, 0))
    tiles.append(np.asarray(legend))
    save_grid(tiles, out, per_row=3, banner=f"clothing prior: most likely label per vertex ({num_scans} scans, {num_views} views)")


# ---------------------------------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> int:
    d = STAGE_DEFAULTS
    parser, sub = cli.stage_parser("python -m pipeline.prior", __doc__)
    p = sub.add_parser("index", help="index an AGORA-style scan folder (meshes/, fits/, cameras/)")
    p.add_argument("root")
    p.add_argument("out")
    p.add_argument("--fit-type", choices=("smpl", "smplx"), default=d["fit_type"])
    p = sub.add_parser("map", help="render, parse and count labels per body vertex for scans START..STOP-1")
    p.add_argument("index")
    p.add_argument("body")
    p.add_argument("weights")
    p.add_argument("out")
    cli.add_indices(p, "scans")
    p.add_argument("--fit-type", choices=("smpl", "smplx"), help="overrides the index's fit type")
    p.add_argument("--deformation-transfer")
    p.add_argument("--smplx-model-dir")
    p.add_argument("--views", type=int, default=d["rig"]["views"])
    p.add_argument("--elevation-deg", type=float, default=d["rig"]["elevation_deg"])
    p.add_argument("--distance", type=float, default=d["rig"]["distance"])
    p.add_argument("--resolution", type=int, default=d["rig"]["resolution"])
    p.add_argument("--ambient", type=float, default=d["ambient"])
    p.add_argument("--prior-resolution", type=int, default=d["resolution"])
    p.add_argument("--seed", type=int, default=0)
    add_inference_arguments(p)
    p = sub.add_parser("reduce", help="sum shard counts into the prior")
    p.add_argument("body")
    p.add_argument("out")
    p.add_argument("shards", nargs="+")
    p.add_argument("--background-probability", type=float, default=d["background_probability"])
    p.add_argument("--no-part-cleaning", dest="part_cleaning", action="store_false")
    p.add_argument("--rules", default=str(PART_RULES_PATH))
    p.add_argument("--sides", choices=("body", "parser"), default="body" if d["sides_from_body"] else "parser",
                   help="left/right label pairs: pooled onto the side of the vertex's own body part or as voted")
    p = sub.add_parser("check", help="argmax agreement with the demo scans' ground truth")
    p.add_argument("prior")
    p.add_argument("index")
    p.add_argument("out")
    p.add_argument("--goal-agreement", type=float, default=d["goal_agreement"])
    p.add_argument("--min-agreement", type=float, help="fail below this agreement (default: report only)")
    p = sub.add_parser("figure", help="the body coloured by its most likely label, front and back")
    p.add_argument("prior")
    p.add_argument("body")
    p.add_argument("out")
    args = parser.parse_args(argv)
    start = cli.start_logging()
    if args.command == "index":
        log.info("%d scans indexed in %s", build_scan_index(args.root, args.out, args.fit_type), args.out)
    elif args.command == "map":
        parse_settings = settings_from_arguments(args)
        rig = RigSettings(views=args.views, elevation_deg=args.elevation_deg, distance=args.distance, resolution=args.resolution)
        settings = MapSettings(label_resolution=args.prior_resolution, seed=args.seed, device=resolve_device(args.device))
        done = write_map_shard(args.index, range(*args.indices), args.body, args.weights, args.variant, parse_settings, rig,
                               RenderSettings(ambient=args.ambient), settings, args.out, args.fit_type,
                               args.deformation_transfer, args.smplx_model_dir)
        seconds = time.perf_counter() - start
        log.info("scans %d-%d: %s on %s, %.2f views/s", args.indices[0], args.indices[1] - 1, done, settings.device,
                 done["views"] / seconds)
    elif args.command == "reduce":
        log.info("%s", reduce_counts(args.shards, args.body, args.out, args.background_probability, args.part_cleaning, args.rules,
                                     args.sides == "body"))
    elif args.command == "check":
        result = check_prior(args.prior, args.index, args.out, args.goal_agreement, args.min_agreement)
        log.info("argmax agreement %.4f over %d seen vertices (goal %.2f: %s)", result["argmax_agreement"],
                 result["seen_vertices"], args.goal_agreement, "met" if result["meets_goal"] else "NOT met")
    elif args.command == "figure":
        prior_figure(args.prior, args.body, args.out)
    cli.log_done(log, start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
