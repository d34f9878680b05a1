"""Command line of the body-model layer.

    python -m pipeline.body convert SRC DST [--h36m-regressor F] [--extra-regressor F] [--part-segmentation F]
    python -m pipeline.body demo DST [--seed N] [--grid-spacing METRES]
    python -m pipeline.body figure MODEL PNG
"""

from __future__ import annotations

import logging
import pickle
import sys

from pipeline import cli
from pipeline.config import schema_defaults

log = logging.getLogger("pipeline.body")


def main(argv: list[str] | None = None) -> int:
    parser, sub = cli.stage_parser("python -m pipeline.body", __doc__)

    p = sub.add_parser("convert", help="write an SMPL .pkl (chumpy inside, no chumpy needed) as a clean .npz")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--h36m-regressor", help="J_regressor_h36m.npy (17 x V) to store with the model")
    p.add_argument("--part-segmentation", help="official smpl_vert_segmentation.json (part -> vertex ids)")
    p.add_argument("--extra-regressor", help="SPIN's J_regressor_extra.npy (9 x V) to store with the model")

    p = sub.add_parser("demo", help="build the procedural demo body")
    p.add_argument("dst")
    demo = schema_defaults("body", "demo")
    p.add_argument("--seed", type=int, default=demo["seed"])
    p.add_argument("--grid-spacing", type=float, default=demo["grid_spacing"], help="metres between implicit-surface samples")

    p = sub.add_parser("figure", help="render the part-label figure of a model file")
    p.add_argument("model")
    p.add_argument("png")

    args = parser.parse_args(argv)
    start = cli.start_logging()

    from pipeline.body.model import BodyModel, BodyModelError, convert_model_file

    try:
        if args.command == "convert":
            data = convert_model_file(args.src, args.dst, args.h36m_regressor, args.part_segmentation,
                                      args.extra_regressor)
            log.info("converted %s -> %s (%d vertices, %d faces)", args.src, args.dst, data.num_vertices, len(data.f))
        elif args.command == "demo":
            from pipeline.body.demo import build_demo_body

            data = build_demo_body(seed=args.seed, grid_spacing=args.grid_spacing)
            data.save(args.dst)
            log.info("demo body (seed %d) -> %s: %d vertices, %d faces", args.seed, args.dst, data.num_vertices, len(data.f))
        elif args.command == "figure":
            from pipeline.body.figures import body_figure

            body_figure(BodyModel.from_file(args.model), args.png)
            log.info("figure -> %s", args.png)
    except (BodyModelError, pickle.UnpicklingError, OSError) as e:
        log.error("%s", e)
        return 1
    cli.log_done(log, start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
