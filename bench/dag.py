"""DAG size and build time for a configuration the size of the papers' training data (a dry run).

Datasets as SPIN/PARE/DSR train on (rows as in their released annotation files, rounded): H36M 312K,
MPI-INF-3DHP 96K, COCO-EFT 75K, MPII-EFT 14K, LSPET-EFT 3K, 3DPW train 22K, about 520K rows, plus the
demo world. Annotation files with those row counts are written to a temporary folder (only `imgname`,
`center`, `scale`: the DAG reads row counts), parser weights are a placeholder file (a dry run never
opens it). Baseline in the same run: the default demo configuration alone.

    python bench/dag.py [--scale 1.0]

Last line: one JSON object (jobs and seconds of each dry run).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAPERS = {"h36m": 312_188, "mpi_inf_3dhp": 96_507, "coco_eft": 74_834, "mpii_eft": 14_667, "lspet_eft": 2_946,
          "3dpw_train": 22_735}


def dry_run(workdir: Path) -> tuple[int, float, str]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "workflow" / "Snakefile"),
                           "--directory", str(workdir), "-n", "--cores", "8", "--quiet", "rules", "all"],
                          capture_output=True, text=True, cwd=workdir)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(proc.stdout[-3000:] + proc.stderr[-3000:])
    total = re.search(r"^total\s+(\d+)$", proc.stdout, re.M)
    return int(total.group(1)), seconds, proc.stdout


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every dataset's rows")
    args = ap.parse_args(argv)
    base = yaml.safe_load((ROOT / "config.yaml").read_text())
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        demo = tmp / "demo"
        demo.mkdir()
        (demo / "config.yaml").write_text(yaml.safe_dump(base))
        figures["demo_jobs"], figures["demo_seconds"], _ = dry_run(demo)
        papers = tmp / "papers"
        (papers / "annotations").mkdir(parents=True)
        config = dict(base)
        config["datasets"] = {}
        rows_total = 0
        for name, rows in PAPERS.items():
            rows = int(rows * args.scale)
            rows_total += rows
            path = papers / "annotations" / f"{name}.npz"
            np.savez(path, imgname=np.array([f"images/{i:07d}.jpg" for i in range(rows)]),
                     center=np.zeros((rows, 2)), scale=np.ones(rows))
            config["datasets"][name] = {"annotations": str(path), "images": str(papers / name)}
        (papers / "parser.pth").write_bytes(b"placeholder: a dry run never opens the weights")
        config["parsing"] = {**config["parsing"], "weights": str(papers / "parser.pth")}
        (papers / "config.yaml").write_text(yaml.safe_dump(config))
        figures["papers_jobs"], figures["papers_seconds"], plan = dry_run(papers)
        counts = dict(re.findall(r"^(\w+)\s+(\d+)$", plan.split("total")[0], re.M))
        figures["papers_rows"] = rows_total
        figures["papers_jobs_by_rule"] = {k: int(v) for k, v in counts.items() if k != "count"}
    figures["goal_seconds"] = 60.0
    figures["meets_goal"] = figures["papers_seconds"] < 60.0
    print(f"demo: {figures['demo_jobs']} jobs in {figures['demo_seconds']:.1f} s; papers' size "
          f"({figures['papers_rows']} rows): {figures['papers_jobs']} jobs in {figures['papers_seconds']:.1f} s")
    figures = {k: round(v, 2) if isinstance(v, float) else v for k, v in figures.items()}
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
