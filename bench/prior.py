"""Clothing-prior map throughput on this machine: views per second through render, parse and vote.

Same scans, same views, same run:
- production: `map_scans` with the parser traced and optimised once per input shape (the stage's path);
- baseline: the same map with the eager parser network (no TorchScript freezing/fusion).
Both must give identical counts. Scans: a freshly generated demo-world scan shard (10 views each);
parser: the trained demo parser when `--weights` exists (default: the workflow's), else the same
architecture freshly initialised (it may label everything background: then no votes are counted, but
the timing holds); DSR's scales + flip. The optimised parser's compile time is included.
Also printed: seconds per view in rendering, parsing and voting, and the resident memory during one
run of 2N scans after 1, N and 2N - 1 scans (flat: the map holds one scan at a time).

    python bench/prior.py [--scans 3] [--threads 2]

Last line: one JSON object.
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

from models.graphonomy import build  # noqa: E402
from pipeline import prior, scans  # noqa: E402
from pipeline.body.demo import load_or_build  # noqa: E402
from pipeline.body.model import BodyModel  # noqa: E402
from pipeline.camera import RigSettings  # noqa: E402
from pipeline.config import schema_defaults  # noqa: E402
from pipeline.human_parser import ParserRunner, ParsingSettings  # noqa: E402
from pipeline.world.scans import write_scan_index, write_scan_shard  # noqa: E402


class Timed:
    """Wraps the stage functions to attribute time to rendering and voting (parsing is the rest)."""

    def __init__(self):
        self.seconds = {"render": 0.0, "vote": 0.0}
        self.rss_mb = []  # resident memory as each scan starts
        self._render, self._vote, self._load = prior.render_scan, prior.vote, prior.load_scan_mesh

        def load(*a, **k):
            self.rss_mb.append(psutil.Process().memory_info().rss / 2**20)
            return self._load(*a, **k)

        def render(*a, **k):
            t = time.perf_counter()
            out = self._render(*a, **k)
            self.seconds["render"] += time.perf_counter() - t
            return out

        def vote(*a, **k):
            t = time.perf_counter()
            out = self._vote(*a, **k)
            self.seconds["vote"] += time.perf_counter() - t
            return out

        prior.render_scan, prior.vote, prior.load_scan_mesh = render, vote, load

    def restore(self):
        prior.render_scan, prior.vote, prior.load_scan_mesh = self._render, self._vote, self._load


def run(rows, fits, net, optimize: bool, views: int):
    settings = ParsingSettings.preset("dsr", input_resolution=192, label_resolution=256, optimize=optimize)
    runner = ParserRunner(net, settings)
    timed = Timed()
    start = time.perf_counter()
    try:
        out = prior.map_scans(rows, fits, runner, RigSettings(), scans.RenderSettings(), prior.MapSettings(), progress=False)
    finally:
        timed.restore()
    seconds = time.perf_counter() - start
    compile_s = getattr(runner.net, "compile_seconds", 0.0)
    timed.seconds["rss_mb"] = timed.rss_mb
    return out, seconds, timed.seconds, compile_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scans", type=int, default=5)
    parser.add_argument("--weights", default="results/parsing/weights/demo_parser.pth")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        body_file = tmp / "demo_body.npz"
        load_or_build(None).save(body_file)
        shard = tmp / "scans" / "shard-0000"
        write_scan_shard(body_file, shard, range(2 * args.scans), seed=0, rig=RigSettings(), progress=False)
        write_scan_index([shard], tmp / "scans", tmp / "scans" / "index.json")
        rows = scans.read_scan_index(tmp / "scans" / "index.json")
        fits = scans.FitReader(BodyModel.from_file(body_file))
        torch.manual_seed(0)
        if Path(args.weights).is_file():
            from models.graphonomy import from_pretrained

            net, weights = from_pretrained(args.weights), args.weights
        else:
            net, weights = build("transfer", width=schema_defaults("parsing", "demo")["width"]).eval(), "untrained"
        views = 10 * args.scans
        base, base_s, _, _ = run(rows[:args.scans], fits, net, optimize=False, views=views)
        prod, prod_s, stages, compile_s = run(rows[:args.scans], fits, net, optimize=True, views=views)
        prod2, prod2_s, stages2, _ = run(rows, fits, net, optimize=True, views=2 * views)
        # in one run of 2N scans: memory as scan 2 starts (after one scan's buffers exist), as scan N + 1
        # starts and as the last starts
        rss_1, rss_n, rss_2n = stages2["rss_mb"][1], stages2["rss_mb"][args.scans], stages2["rss_mb"][-1]
    equal = bool(np.array_equal(base["counts"], prod["counts"]))
    voted = base["counts"].sum(1) > 0
    agree = float((base["counts"].argmax(1) == prod["counts"].argmax(1))[voted].mean()) if voted.any() else None
    parse_s = prod_s - stages["render"] - stages["vote"]
    print(f"{args.scans} scans x 10 views, {args.threads} threads, parser weights: {weights}")
    print(f"  production (optimised parser): {prod_s:.1f} s = {views / prod_s:.2f} views/s "
          f"(render {stages['render'] / views:.3f} s/view, parse {parse_s / views:.3f}, vote {stages['vote'] / views:.4f}; "
          f"compile {compile_s:.1f} s included)")
    print(f"  baseline (eager parser):       {base_s:.1f} s = {views / base_s:.2f} views/s")
    print(f"  counts identical: {equal}; argmax agreement {agree}; {int(prod['counts'].sum())} votes")
    print(f"  one run of {2 * args.scans} scans ({2 * views / prod2_s:.2f} views/s): RSS after 1 scan {rss_1:.1f} MB, "
          f"after {args.scans} {rss_n:.1f} MB, after {2 * args.scans - 1} {rss_2n:.1f} MB")
    print(json.dumps({
        "views_per_s": round(views / prod_s, 3), "baseline_views_per_s": round(views / base_s, 3),
        "speedup": round(base_s / prod_s, 3), "counts_identical": equal, "argmax_agreement": agree, "votes": int(prod["counts"].sum()),
        "render_s_per_view": round(stages["render"] / views, 4), "parse_s_per_view": round(parse_s / views, 4),
        "vote_s_per_view": round(stages["vote"] / views, 5), "rss_mb_1_scan": round(rss_1, 1), "rss_mb_n_scans": round(rss_n, 1), "rss_mb_2n_scans": round(rss_2n, 1),
        "threads": args.threads, "device": "cpu",
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
