"""Training throughput of the three regressors (trainers.train's step: loader, model, SMPL head, losses,
backward, Adam) at batch 32, 224 px, full-size models unless --width-mult: steps/s per model, the DSR
step against the HMR step, and the share of each step spent waiting for the data loader (is the
device starved?), with the loader's workers as in training.

    python bench/train.py [--packed results/packed/demo_train.h5] [--batch 32] [--steps 3] [--workers 2]
                          [--width-mult 1.0] [--device cpu|cuda] [--compile] [--preset demo]

--preset demo times the demo preset's runs instead (their backbones, widths, crop size and batch:
resources/train_presets.yaml; PARE as its stage 1, with the part loss).

Without --packed a 48-image demo split is generated, labelled and packed first (about a minute). The
clothing prior is random (speed does not depend on it). Last line: one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainers.augment import AugmentSettings  # noqa: E402
from trainers.dsr_losses import DSRLossSettings  # noqa: E402
from trainers.packed import mixed_loader  # noqa: E402
from trainers.train import TrainSettings, build_model, mean_params_from_packed, step_loss, to_device  # noqa: E402


def make_packed(root: Path, n: int = 48) -> tuple[Path, Path]:
    """A demo split of n images with part labels, parser labels (a random tiny parser) and a pack."""
    from models.graphonomy import build
    from pipeline import pack, parsing, partseg
    from pipeline.body.demo import build_demo_body
    from pipeline.datasets import load_annotations
    from pipeline.human_parser import ParsingSettings
    from pipeline.world.images import merge_split, write_image_shard
    from pipeline.world.scene import WorldSettings

    body_file = root / "demo_body.npz"
    build_demo_body().save(body_file)
    world = root / "world"
    write_image_shard(body_file, world / "shards" / "bench-0000", "bench", range(n), seed=0, settings=WorldSettings(),
                      progress=False)
    merge_split([world / "shards" / "bench-0000"], world, world / "bench.npz", world / "bench_gt.npz")
    ann = load_annotations(world / "bench.npz", name="demo_bench")
    torch.manual_seed(0)
    weights = root / "parser.pth"
    torch.save(build("transfer", width=0.0625).state_dict(), weights)
    parts, parsed = str(root / "parts-0.npz"), str(root / "parse-0.npz")
    partseg.write_shard(str(body_file), str(ann.path), str(ann.image_root), "demo_bench", range(n), parts,
                        partseg.PartsegSettings())
    parsing.write_shard(str(weights), "transfer", str(ann.path), str(ann.image_root), "demo_bench", range(n), parsed,
                        ParsingSettings.preset("dsr", scales=(1.0,), input_resolution=64))
    partseg.write_index([parts], str(root / "parts.json"))
    parsing.write_index([parsed], str(root / "parsing.json"))
    out = root / "bench.h5"
    pack.pack_split("demo_bench", str(ann.path), str(ann.image_root), str(out), pack.PackSettings(),
                    str(root / "parts.json"), str(root / "parsing.json"), str(body_file), str(weights), None,
                    {"labels": {"resolution": 224}}, progress=False)
    return out, body_file


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(model_name: str, packed: Path, body_file: Path, prior: torch.Tensor, args, device) -> dict:
    from models.smpl_head import SMPLHead
    from pipeline.body.model import BodyModel, load_body_model

    preset = {}
    if args.preset:
        from trainers.runs import load_presets

        run = load_presets()[args.preset]["pare_stage1" if model_name == "pare" else model_name]
        preset = {k: run[k] for k in ("backbone", "width_mult", "batch_size") if k in run}
        preset["augment"] = AugmentSettings(**{**run.get("augment", {}), "occlusion_prob": 0.5})
    s = TrainSettings(**{**dict(model=model_name, train_files=[str(packed)], body=str(body_file),
                                prior="unused" if model_name == "dsr" else None, width_mult=args.width_mult,
                                batch_size=args.batch, steps=args.steps + 1, num_workers=args.workers,
                                dsr=DSRLossSettings(compile=args.compile), augment=AugmentSettings(occlusion_prob=0.5)),
                         **preset})
    torch.manual_seed(0)
    body = BodyModel(load_body_model(body_file)).to(device)
    head = SMPLHead(body, resolution=s.augment.output_resolution)
    faces = torch.as_tensor(body.faces, device=device)
    model = build_model(s, mean_params_from_packed([str(packed)])).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=s.lr)
    loader = mixed_loader(s.train_files, None, s.batch_size, 0, s.augment, s.num_workers, steps=s.steps,
                          generator=torch.Generator().manual_seed(0))
    waits, computes = [], []
    it = iter(loader)
    for step in range(s.steps):
        t0 = time.perf_counter()
        batch = to_device(next(it), device)
        sync(device)
        t1 = time.perf_counter()
        total, _ = step_loss(model, head, batch, s, step + 1, faces, prior)  # the loop's own step
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        sync(device)
        t2 = time.perf_counter()
        if step:  # the first step warms up (and compiles, with --compile)
            waits.append(t1 - t0)
            computes.append(t2 - t1)
    step_s = float(np.mean(np.add(waits, computes)))
    return {"steps_per_s": round(1.0 / step_s, 4), "seconds_per_step": round(step_s, 3),
            "loader_wait_share": round(float(np.sum(waits) / np.sum(np.add(waits, computes))), 4),
            "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2), "backbone": model_backbone(s),
            "width_mult": s.width_mult, "batch": s.batch_size, "resolution": s.augment.output_resolution}


def model_backbone(s: TrainSettings) -> str:
    return s.backbone or ("hrnet_w32-conv" if s.model == "pare" else "resnet50")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packed", help="a packed demo file (results/packed/demo_train.h5); default: make one")
    parser.add_argument("--body", help="its body model file (with --packed)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per model, after one warm-up step")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--width-mult", type=float, default=1.0)
    parser.add_argument("--compile", action="store_true", help="torch.compile the soft rasteriser's kernels (DSR)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", choices=["demo", "paper"], help="time a preset's runs (backbone, width, crop, batch)")
    args = parser.parse_args()
    if args.packed and not args.body:
        parser.error("--packed needs --body, the body model the file was packed with (results/body/demo_body.npz)")
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        if args.packed:
            packed, body_file = Path(args.packed), Path(args.body)
        else:
            packed, body_file = make_packed(Path(tmp))
        from pipeline.body.model import load_body_model

        faces = len(load_body_model(body_file).f)
        prior = torch.as_tensor(np.random.default_rng(0).dirichlet(np.full(20, 0.3), size=faces).astype(np.float32),
                                device=device)
        figures = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
                   "batch": args.batch, "width_mult": args.width_mult, "workers": args.workers, "compile": args.compile,
                   "preset": args.preset,
                   "models": {}}
        for name in ("hmr", "dsr", "pare"):
            row = measure(name, packed, body_file, prior, args, device)
            figures["models"][name] = row
            print(f"{name} ({row['backbone']}, width {row['width_mult']}, batch {row['batch']}, {row['resolution']} px): {row['seconds_per_step']} s/step ({row['steps_per_s']} steps/s), loader wait "
                  f"{100 * row['loader_wait_share']:.1f}% of the step, {row['params_m']} M parameters", flush=True)
        figures["dsr_over_hmr"] = round(figures["models"]["dsr"]["seconds_per_step"] /
                                        figures["models"]["hmr"]["seconds_per_step"], 3)
        print(f"DSR step / HMR step: {figures['dsr_over_hmr']}x")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
