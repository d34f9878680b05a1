"""The evaluation table: every (model, benchmark) result beside the papers' published numbers.

    python -m trainers.eval_table OUT.csv OUT.md FIGURE.png results/eval/pare/demo_test.json ... \
        [--paper pare=pare --paper pare_release=pare_3dpw] [--no-paper BENCHMARK ...]

Columns: model, benchmark, kind, rows scored / skipped / outside the subset, MPJPE, PA-MPJPE, PVE (mm),
PCK, AUC (%), and the paper's MPJPE, PA-MPJPE and PVE where the model's paper reports that kind of benchmark.
The figure: MPJPE and PA-MPJPE of every model per benchmark, the papers' numbers as black ticks.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
from pathlib import Path

from pipeline.io import atomic_output

log = logging.getLogger(__name__)

# Published numbers (mm) by paper and benchmark kind: PARE (ICCV 2021, Table 2: HRNet-W32, trained without
# and with 3DPW's training split) on 3DPW test; DSR (ICCV 2021, Tables 1-2) on 3DPW test and Human3.6M
# protocol 2.
PAPERS = {
    "pare": {"3dpw": {"mpjpe": 82.0, "pa_mpjpe": 50.9, "pve": 97.9}},
    "pare_3dpw": {"3dpw": {"mpjpe": 74.5, "pa_mpjpe": 46.5, "pve": 88.6}},
    "dsr": {"3dpw": {"pa_mpjpe": 51.7}, "h36m_p2": {"pa_mpjpe": 40.3}},
}
TRAINED_PAPERS = {"pare": "pare", "dsr": "dsr"}  # our trained runs and the paper each reproduces (HMR: none)
COLUMNS = ("model", "benchmark", "kind", "scored", "skipped", "outside_subset", "mpjpe", "pa_mpjpe", "pve", "pck", "auc",
           "paper", "paper_mpjpe", "paper_pa_mpjpe", "paper_pve")


def rows_of(results: list[dict], papers: dict[str, str | None], no_paper: set[str]) -> list[dict]:
    out = []
    for r in results:
        model = r["model_name"]
        paper = papers.get(model, TRAINED_PAPERS.get(model))
        published = PAPERS.get(paper, {}).get(r["kind"], {}) if paper and r["benchmark"] not in no_paper else {}
        row = {k: r.get(k) for k in COLUMNS}
        row |= {"model": model, "paper": paper if published else None}
        for k in ("mpjpe", "pa_mpjpe", "pve"):
            row[f"paper_{k}"] = published.get(k)
        out.append(row)
    return sorted(out, key=lambda x: (x["benchmark"], x["model"]))


def _fmt(value, key: str) -> str:
    if value is None:
        return ""
    if key in ("pck", "auc"):
        return f"{100 * value:.1f}"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def markdown(rows: list[dict]) -> str:
    head = ["model", "benchmark", "scored", "skipped", "MPJPE", "PA-MPJPE", "PVE", "PCK", "AUC",
            "paper", "paper MPJPE", "paper PA-MPJPE", "paper PVE"]
    keys = ["model", "benchmark", "scored", "skipped", "mpjpe", "pa_mpjpe", "pve", "pck", "auc",
            "paper", "paper_mpjpe", "paper_pa_mpjpe", "paper_pve"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_fmt(r[k], k) for k in keys) + " |" for r in rows]
    notes = ("Errors in mm (LSP-14 joints of the H36M regressor, pelvis-centred; MPI-INF-3DHP: 17 joints), PCK@150 mm "
             "and AUC (0-150 mm) in %. Papers: PARE (Kocabas et al., ICCV 2021, HRNet-W32; pare_3dpw: trained with "
             "3DPW), DSR (Dwivedi et al., ICCV 2021), on 3DPW test and Human3.6M protocol 2.")
    return "\n".join(lines) + "\n\n" + notes + "\n"


def figure(rows: list[dict], path: str) -> None:
    from pipeline.figures import bar_chart, save_grid

    tiles = []
    for key, label in (("mpjpe", "MPJPE"), ("pa_mpjpe", "PA-MPJPE")):
        groups: dict[str, dict[str, float]] = {}
        refs: dict[str, dict[str, float]] = {}
        for r in rows:
            if r[key] is not None:
                groups.setdefault(r["benchmark"], {})[r["model"]] = float(r[key])
            if r[f"paper_{key}"] is not None:
                refs.setdefault(r["benchmark"], {})[r["model"]] = float(r[f"paper_{key}"])
        tiles.append(bar_chart(groups, f"{label} (mm) per benchmark; black ticks: the papers'", "mm", references=refs))
    save_grid(tiles, path, per_row=1, banner="Evaluation: every model on every benchmark (lower is better)")


def main(argv: list[str] | None = None) -> int:
    from pipeline.cli import start_logging

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("csv")
    p.add_argument("md")
    p.add_argument("figure")
    p.add_argument("results", nargs="+", help="results/eval/<model>/<benchmark>.json")
    p.add_argument("--paper", action="append", default=[], metavar="MODEL=PAPER",
                   help=f"whose numbers go beside MODEL's ({', '.join(PAPERS)}, or none)")
    p.add_argument("--no-paper", nargs="*", default=[], help="benchmarks the papers' numbers do not apply to")
    args = p.parse_args(argv)
    start_logging()
    papers = {}
    for item in args.paper:
        model, _, paper = item.partition("=")
        if paper not in PAPERS and paper != "none":
            raise SystemExit(f"--paper {item}: unknown paper {paper!r}; known: {', '.join(PAPERS)} or none")
        papers[model] = None if paper == "none" else paper
    results = []
    for path in args.results:
        r = json.loads(Path(path).read_text())
        r["model_name"] = Path(path).parent.name  # results/eval/<model>/<benchmark>.json
        results.append(r)
    rows = rows_of(results, papers, set(args.no_paper))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows([{k: ("" if v is None else v) for k, v in r.items()} for r in rows])
    with atomic_output(args.csv) as tmp:
        tmp.write_text(buf.getvalue())
    md = markdown(rows)
    with atomic_output(args.md) as tmp:
        tmp.write_text(md)
    figure(rows, args.figure)
    log.info("evaluation table (%d rows):\n%s", len(rows), md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
