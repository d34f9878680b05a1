"""DSR's clothing pseudo-labels, the stage: parse every row of a dataset (in shards) with the human
parser of `pipeline.human_parser` and store raw labels, keypoint boxes and flags in the crop frame;
index the shards with a manifest of skipped images; check the demo world's labels against its
ground truth; draw the figure.

Cleaning (DSR): the box around the OpenPose keypoints with confidence > 0.3, grown by 30 pixels at a
224 crop (scaled with the resolution); pixels outside it become 255 (ignored). A minimal-clothing
label (left/right arm, left/right shoe, face) with at most 60 pixels (at 224) is invalid for the
sample. Raw labels, the box and the flags are stored, so the cleaned map and DSR's clothing /
minimal-clothing maps are derived when the data is loaded (`pipeline.labelsets.cleaned_from_shard`).

    python -m pipeline.parsing shard WEIGHTS ANNOTATIONS OUT --dataset D --images ROOT --indices START STOP [inference options]
    python -m pipeline.parsing index OUT_JSON SHARD...
    python -m pipeline.parsing check OUT_JSON INDEX_JSON:GT_NPZ... [--goal-miou G] [--min-miou M]
    python -m pipeline.parsing figure OUT_PNG ANNOTATIONS:IMAGES_ROOT:INDEX_JSON[:GT_NPZ]... [--check CHECK_JSON]
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from models.graphonomy import from_pretrained
from pipeline import cli
from pipeline.datasets import load_annotations
from pipeline.figures import save_grid
from pipeline.human_parser import STAGE_DEFAULTS, ParserRunner, ParsingSettings, add_inference_arguments, settings_from_arguments
from pipeline.io import atomic_output, save_npz
from pipeline.labelsets import CIHP_IGNORE, CIHP_LABELS, NUM_CIHP_CLASSES, clean_labels, cleaned_from_shard, palette
from pipeline.metrics import segmentation_scores
from pipeline.shards import load_shards
from pipeline.shards import write_index as write_shard_index

log = logging.getLogger("pipeline.parsing")
PARSING_FLAGS = ("skipped", "no_keypoints")


def write_shard(weights: str, variant: str, annotations_file: str, images_root: str, dataset: str, indices: range,
                out: str, settings: ParsingSettings) -> dict:
    ann = load_annotations(annotations_file, image_root=images_root, name=dataset)
    ann.require_rows(indices)
    ann.require_some_image(indices)
    net = from_pretrained(weights, variant=variant)
    result = ParserRunner(net, settings).run(ann, indices)
    result["imgname"] = ann["imgname"][indices.start:indices.stop]
    result["resolution"] = np.array(settings.label_resolution)
    save_npz(out, result)
    return {"rows": len(indices), **{f: int(result[f].sum()) for f in PARSING_FLAGS},
            "sides_changed_pixels": int(result["sides_changed"].sum())}


def write_index(shard_files: list[str], out: str) -> dict:
    return write_shard_index(shard_files, out, PARSING_FLAGS)


def check_against_ground_truth(pairs: list[tuple[str, str]], out: str, goal_miou: float, min_miou: float | None = None) -> dict:
    """mIoU of the cleaned pseudo-labels against the demo world's CIHP ground truth, over the labels
    present in the ground truth (pixels outside the keypoint box are left out)."""
    predicted, truth, per_dataset = [], [], {}
    for index_file, gt_file in pairs:
        shards = load_shards(index_file, ("index", "labels", "box", "skipped"))
        use = ~shards["skipped"]
        cleaned = cleaned_from_shard(shards["labels"][use], shards["box"][use])
        with np.load(gt_file, allow_pickle=False) as z:
            gt = z["crop_cihp"][shards["index"][use]]
        predicted.append(cleaned)
        truth.append(gt)
        present = sorted(int(v) for v in np.unique(gt))
        per_dataset[Path(index_file).parent.name] = {"samples": int(use.sum()), **{k: v for k, v in segmentation_scores(cleaned, gt, present, ignore=CIHP_IGNORE).items() if k != "per_label_iou"}}
    predicted, truth = np.concatenate(predicted), np.concatenate(truth)
    present = sorted(int(v) for v in np.unique(truth))
    metrics = segmentation_scores(predicted, truth, present, ignore=CIHP_IGNORE)
    result = {
        "miou": metrics["miou"],
        "pixel_accuracy": metrics["pixel_accuracy"],
        "per_label_iou": {CIHP_LABELS[k]: v for k, v in metrics["per_label_iou"].items()},
        "labels": [CIHP_LABELS[k] for k in present],
        "samples": int(len(predicted)),
        "goal_miou": goal_miou,
        "meets_goal": bool(metrics["miou"] >= goal_miou),
        "min_miou": min_miou,
        "per_dataset": per_dataset,
    }
    with atomic_output(out) as tmp:
        Path(tmp).write_text(json.dumps(result, indent=1))
    if min_miou is not None and result["miou"] < min_miou:
        raise RuntimeError(f"clothing pseudo-labels reach mIoU {result['miou']:.3f} against the ground truth, below {min_miou} ({out})")
    return result


def parsing_figure(items: list[tuple[str, ...]], out: str, per_dataset: int = 4, check_file: str | None = None) -> None:
    """Rows of: the crop, raw labels, cleaned labels and, where an item names a ground-truth file
    (ANNOTATIONS, IMAGES_ROOT, INDEX_JSON[, GT_NPZ with `crop_cihp`]), the true clothing map."""
    colours = np.concatenate([palette(NUM_CIHP_CLASSES), np.zeros((256 - NUM_CIHP_CLASSES, 3), np.uint8)])
    colours[CIHP_IGNORE] = (128, 128, 128)
    rows = []
    for annotations_file, images_root, index_file, *gt_file in items:
        ann = load_annotations(annotations_file, image_root=images_root)
        shards = load_shards(index_file, ("index", "labels", "box", "skipped"))
        truth = None
        if gt_file:
            with np.load(gt_file[0], allow_pickle=False) as z:
                truth = z["crop_cihp"]
        for k in np.flatnonzero(~shards["skipped"])[:per_dataset]:
            i = int(shards["index"][k])
            res = shards["labels"].shape[-1]
            crop = ann.crop(i, res)
            raw = shards["labels"][k]
            cleaned = clean_labels(raw, None if np.isnan(shards["box"][k]).any() else shards["box"][k])
            panels = [crop, colours[raw], colours[cleaned]]
            if truth is not None:
                if truth.shape[-1] != res:
                    raise ValueError(f"{gt_file[0]}: ground truth at {truth.shape[-1]} px, labels of {index_file} at {res} px")
                panels.append(colours[truth[i]])
            rows.append(np.concatenate(panels, axis=1))
    banner = None
    if check_file:
        check = json.loads(Path(check_file).read_text())
        banner = (f"crop | raw | cleaned pseudo-labels | ground truth: mIoU {check['miou']:.3f} (goal {check['goal_miou']}), pixel "
                  f"accuracy {100 * check['pixel_accuracy']:.1f}% over {check['samples']} samples")
    save_grid(rows, out, banner=banner)


def main(argv: list[str] | None = None) -> int:
    parser, sub = cli.stage_parser("python -m pipeline.parsing", __doc__)
    p = sub.add_parser("shard", help="parse rows START..STOP-1 of a dataset")
    p.add_argument("weights")
    p.add_argument("annotations")
    p.add_argument("out")
    p.add_argument("--dataset", required=True)
    p.add_argument("--images", required=True)
    cli.add_indices(p)
    add_inference_arguments(p)
    p.add_argument("--sides", choices=("keypoints", "parser"), default="keypoints" if STAGE_DEFAULTS["sides_from_keypoints"] else "parser",
                   help="left/right of arm, leg and shoe pixels: from the nearer keypoint limb or as parsed")
    cli.add_index_command(sub, "index a dataset's shards, with the manifest of skipped images")
    p = cli.add_check_command(sub, "compare demo pseudo-labels with the world's ground truth")
    p.add_argument("--goal-miou", type=float, default=STAGE_DEFAULTS["goal_miou"])
    p.add_argument("--min-miou", type=float, help="fail below this mIoU (default: report only)")
    p = sub.add_parser("figure", help="crops with raw and cleaned labels (and the ground truth when given)")
    p.add_argument("out")
    p.add_argument("items", nargs="+", help="ANNOTATIONS:IMAGES_ROOT:INDEX_JSON[:GT_NPZ]")
    p.add_argument("--check")
    args = parser.parse_args(argv)
    start = cli.start_logging()
    if args.command == "shard":
        settings = settings_from_arguments(args)
        device = settings.device
        settings = replace(settings, sides_from_keypoints=args.sides == "keypoints")
        counts = write_shard(args.weights, args.variant, args.annotations, args.images, args.dataset,
                             range(*args.indices), args.out, settings)
        log.info("%s rows %d-%d on %s, scales %s flip %s: %s, %.2f images/s", args.dataset, args.indices[0], args.indices[1] - 1,
                 device, settings.scales, settings.flip, counts, counts["rows"] / (time.perf_counter() - start))
    elif args.command == "index":
        log.info("%s", write_index(args.shards, args.out))
    elif args.command == "check":
        result = check_against_ground_truth([tuple(p.split(":", 1)) for p in args.pairs], args.out, args.goal_miou, args.min_miou)
        log.info("mIoU %.4f (goal %.2f: %s), pixel accuracy %.4f over %d samples", result["miou"], args.goal_miou,
                 "met" if result["meets_goal"] else "NOT met", result["pixel_accuracy"], result["samples"])
    elif args.command == "figure":
        parsing_figure([tuple(i.split(":", 3)) for i in args.items], args.out, check_file=args.check)
    cli.log_done(log, start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
