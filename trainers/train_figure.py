"""The training curves of the workflow's runs (results/figures/train_curves.png): the training loss of
each run (log scale) and its validation MPJPE and PA-MPJPE, from the runs' metrics.csv.

    python -m trainers.train_figure OUT.png results/train/pare_stage1/metrics.csv results/train/hmr/metrics.csv ...
"""

from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path

import numpy as np

from pipeline.figures import line_chart, save_grid

log = logging.getLogger(__name__)


def read_metrics(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{column: (steps, values)} of the rows where the column has a value."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = {}
    for name in (rows[0].keys() if rows else []):
        if name == "step":
            continue
        kept = [(int(r["step"]), float(r[name])) for r in rows if r.get(name) not in (None, "")]
        if kept:
            columns[name] = tuple(np.asarray(v) for v in zip(*kept))
    return columns


def draw(out: str | Path, metrics: list[str | Path]) -> None:
    runs = {Path(p).parent.name: read_metrics(p) for p in metrics}
    panels = [
        line_chart({run: c["total"] for run, c in runs.items() if "total" in c}, "training loss (logged steps)",
                   "step", "loss", log_y=True),
        line_chart({run: c["val_mpjpe"] for run, c in runs.items() if "val_mpjpe" in c}, "validation MPJPE (mm)",
                   "step", "mm"),
        line_chart({run: c["val_pa_mpjpe"] for run, c in runs.items() if "val_pa_mpjpe" in c},
                   "validation PA-MPJPE (mm)", "step", "mm"),
    ]
    extra = {f"{run} {term}": c[term] for run, c in runs.items() for term in ("part", "dsr_mc", "dsr_c") if term in c}
    panels.append(line_chart(extra, "PARE part and DSR loss terms (weighted)", "step", "loss", log_y=True))
    save_grid(panels, out, per_row=2, banner=f"training curves: {', '.join(runs)}")


def main(argv: list[str] | None = None) -> int:
    from pipeline.cli import start_logging

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("metrics", nargs="+", help="the runs' metrics.csv (a run is named by its folder)")
    args = parser.parse_args(argv)
    start_logging()
    draw(args.out, args.metrics)
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
