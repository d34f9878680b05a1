"""Command line of the demo world.

    python -m pipeline.world images BODY OUT_DIR --split S --indices START STOP --seed SEED [split settings]
    python -m pipeline.world merge OUT_NPZ OUT_GT SHARD_DIR...        (image names relative to OUT_NPZ's folder)
    python -m pipeline.world scans BODY OUT_DIR --indices START STOP --seed SEED [rig settings]
    python -m pipeline.world scan-index OUT_JSON SHARD_DIR...         (paths relative to OUT_JSON's folder)
    python -m pipeline.world figure OUT_PNG SPLIT_NPZ:GT_NPZ...
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from pipeline import cli
from pipeline.config import schema_defaults

log = logging.getLogger("pipeline.world")


def main(argv: list[str] | None = None) -> int:
    parser, sub = cli.stage_parser("python -m pipeline.world", __doc__)

    def shard_args(p):
        p.add_argument("body")
        p.add_argument("out_dir")
        cli.add_indices(p, "samples (a sample's content depends on seed and index only)")
        p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("images", help="generate one shard of an image split")
    shard_args(p)
    p.add_argument("--split", required=True)
    p.add_argument("--second-person-prob", type=float, default=0.3)
    p.add_argument("--occluders", type=int, nargs=2, default=(0, 0), metavar=("MIN", "MAX"))
    p.add_argument("--no-smpl-fraction", type=float, default=0.0)
    p.add_argument("--crop-res", type=int, default=schema_defaults("labels")["resolution"])

    p = sub.add_parser("merge", help="merge the shards of a split")
    p.add_argument("out_npz")
    p.add_argument("out_gt")
    p.add_argument("shards", nargs="+")

    p = sub.add_parser("scans", help="generate one shard of clothed scans")
    shard_args(p)
    rig = schema_defaults("world", "scans")
    p.add_argument("--views", type=int, default=rig["views"])
    p.add_argument("--elevation-deg", type=float, default=rig["elevation_deg"])
    p.add_argument("--distance", type=float, default=rig["distance"])
    p.add_argument("--resolution", type=int, default=rig["resolution"])

    p = sub.add_parser("scan-index", help="index every scan shard")
    p.add_argument("out_json")
    p.add_argument("shards", nargs="+")

    p = sub.add_parser("figure", help="sample images with ground-truth overlays")
    p.add_argument("out_png")
    p.add_argument("splits", nargs="+", help="ANNOTATIONS_NPZ:GT_NPZ pairs")

    args = parser.parse_args(argv)
    start = cli.start_logging()
    if args.command == "images":
        from pipeline.world.images import write_image_shard
        from pipeline.world.scene import WorldSettings

        settings = WorldSettings(second_person_prob=args.second_person_prob, occluders=tuple(args.occluders),
                                 no_smpl_fraction=args.no_smpl_fraction, crop_res=args.crop_res)
        write_image_shard(args.body, args.out_dir, args.split, range(*args.indices), args.seed, settings)
        log.info("%s samples %d-%d -> %s", args.split, args.indices[0], args.indices[1] - 1, args.out_dir)
    elif args.command == "merge":
        from pipeline.world.images import merge_split

        n = merge_split(args.shards, Path(args.out_npz).parent, args.out_npz, args.out_gt)
        log.info("merged %d shards, %d samples -> %s", len(args.shards), n, args.out_npz)
    elif args.command == "scans":
        from pipeline.camera import RigSettings
        from pipeline.world.scans import write_scan_shard

        rig = RigSettings(views=args.views, elevation_deg=args.elevation_deg, distance=args.distance, resolution=args.resolution)
        write_scan_shard(args.body, args.out_dir, range(*args.indices), args.seed, rig)
        log.info("scans %d-%d -> %s", args.indices[0], args.indices[1] - 1, args.out_dir)
    elif args.command == "scan-index":
        from pipeline.world.scans import write_scan_index

        n = write_scan_index(args.shards, Path(args.out_json).parent, args.out_json)
        log.info("indexed %d scans -> %s", n, args.out_json)
    elif args.command == "figure":
        from pipeline.world.figures import world_figure

        world_figure([tuple(s.split(":", 1)) for s in args.splits], args.out_png)
        log.info("figure -> %s", args.out_png)
    cli.log_done(log, start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
