"""One training loop for the three regressors: PARE (with or without its part loss: the paper's two
stages), HMR (SPIN's regressor, the baseline) and DSR (HMR with the semantic-rendering losses).

    python -m trainers.train --settings-json '{"model": "dsr", "train_files": [...], ...}'

Each step: a mixed batch from the packed files (trainers.packed), the model's prediction, the SMPL
output layer, the losses (trainers.losses, and trainers.dsr_losses for DSR once `start_dsr` steps are
done), Adam (AMP on CUDA, optional gradient clipping). Every `log_every` steps a line of the loss terms
goes to the log, to metrics.csv (and to TensorBoard event files when tensorboard is installed); every
`val_every` steps the model is evaluated on `val_file` (MPJPE and PA-MPJPE on the LSP-14 protocol,
trainers.pose_metrics) and the best checkpoint kept by the model's criterion (PARE and HMR: PA-MPJPE;
DSR: 1.5 PA-MPJPE + MPJPE, as its code).

The run's working state lives in `out_dir/state/`: every `checkpoint_every` steps `last.pt` is written
there atomically with everything needed to resume exactly (the model, the optimiser, the AMP scaler,
the step, the RNG states, the best score, the settings and a fingerprint of the input files). A job
killed at any point and started again with the same settings and inputs resumes from it and produces
the same weights as an uninterrupted run (the sampler replays the same batches from the step it resumes
at); a state from other settings or inputs, or from a run that had finished, is discarded and the run
starts over (a Snakemake rerun means something changed). At the end the results are published in
`out_dir`: `last.pt`, `best.pt` (the last one when there is no validation), `metrics.csv` and
`summary.json` (Snakemake deletes declared outputs before a job, never the state).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

from models import checkpoint
from models import hmr as hmr_module
from models import pare as pare_module
from models.backbones import load_pretrained_backbone
from models.smpl_head import MeanParams, SMPLHead, smpl_rows_with_cameras
from pipeline.body.model import BodyModel, load_body_model
from pipeline.config import resolve_device
from pipeline.io import atomic_output
from trainers.augment import AugmentSettings
from trainers.dsr_losses import DSRLossSettings, dsr_losses, load_face_prior
from trainers.losses import LossWeights, regressor_losses
from trainers.packed import PackedDataset, mixed_loader, normalize_images
from trainers.pose_metrics import joint_errors

log = logging.getLogger(__name__)

MODELS = ("pare", "hmr", "dsr")
CHECKPOINT_FORMAT = "bodylabels-train-1"


@dataclass
class TrainSettings:
    model: str = "hmr"
    out_dir: str = "results/train/hmr"
    train_files: list[str] = field(default_factory=list)
    ratios: list[float] | None = None  # per-batch mixing of train_files (None: by size)
    val_file: str | None = None
    body: str = ""  # body model file (SMPL or the demo body, with SPIN's extra joint regressor)
    prior: str | None = None  # DSR: clothing prior (our prior.npz or DSR's semantic_prior.npy)
    mean_params: str | None = None  # SPIN's smpl_mean_params.npz; None: computed from the training files
    init: str | None = None  # a published or own checkpoint of the same model to start from
    backbone_init: str | None = None  # ImageNet ResNet-50 / HRNet pose weights for a fresh model
    backbone: str | None = None  # default: hrnet_w32-conv for PARE, resnet50 for HMR and DSR
    width_mult: float = 1.0
    gt_attention: bool = False  # PARE: ground-truth part labels as attention (stage 1 option)
    batch_size: int = 64
    steps: int = 1000
    lr: float = 5e-5
    warmup_steps: int = 0  # linear learning-rate warm-up from lr / warmup_steps (the papers: none)
    grad_clip: float = 0.0  # max gradient norm; 0: no clipping
    amp: bool = True  # mixed precision on CUDA (never on CPU)
    start_dsr: int = 0  # DSR: steps before its losses switch on
    start_dsr_epochs: float | None = None  # DSR: the same in epochs of the training files (released: 2); overrides start_dsr
    loss: LossWeights = field(default_factory=LossWeights)
    dsr: DSRLossSettings = field(default_factory=DSRLossSettings)
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    log_every: int = 50
    val_every: int = 500
    checkpoint_every: int = 500
    val_batch_size: int = 32
    seed: int = 0
    num_workers: int = 2
    device: str = "auto"

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"train.model must be one of {MODELS}, got {self.model!r}")
        if self.model == "dsr" and not self.prior:
            raise ValueError("training DSR needs the clothing prior (train.prior)")
        if not self.train_files:
            raise ValueError("no training files (packed .h5 files of the training datasets)")
        for name, kind in (("loss", LossWeights), ("dsr", DSRLossSettings), ("augment", AugmentSettings)):
            value = getattr(self, name)
            if isinstance(value, dict):
                if name == "augment" and "occluder_size" in value:
                    value = {**value, "occluder_size": tuple(value["occluder_size"])}
                if name == "augment" and "random_crop_cut" in value:
                    value = {**value, "random_crop_cut": tuple(value["random_crop_cut"])}
                setattr(self, name, kind(**value))

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


# ---------------------------------------------------------------------------------------------------
# Building blocks


def mean_params_from_packed(files: list[str]) -> MeanParams:
    """The regressors' mean parameters from the training files' annotations (rows with SMPL and a
    camera: the demo world's); real datasets need SPIN's smpl_mean_params.npz (train.mean_params)."""
    import h5py

    pose, shape, cam = [], [], []
    for path in files:
        with h5py.File(path, "r") as f:
            a = f["annotations"]
            if any(k not in a for k in ("pose", "shape", "has_smpl", "cam_intrinsics", "transl")):
                continue
            for kept, values in zip((pose, shape, cam), smpl_rows_with_cameras(a, a["has_smpl"][()])):
                kept.append(values)
    if not sum(len(c) for c in cam):
        raise ValueError(f"none of {files} carries SMPL parameters with cameras to compute mean parameters from; "
                         "set train.mean_params to SPIN's data/smpl_mean_params.npz")
    return MeanParams.from_annotations(np.concatenate(pose), np.concatenate(shape), np.concatenate(cam))


def build_model(s: TrainSettings, mean: MeanParams) -> torch.nn.Module:
    if s.model == "pare":
        return pare_module.PARE(mean, backbone=s.backbone or "hrnet_w32-conv", width_mult=s.width_mult)
    return hmr_module.HMR(mean, backbone=s.backbone or "resnet50", width_mult=s.width_mult)


def initial_weights(s: TrainSettings, model: torch.nn.Module) -> None:
    if s.init:
        read = pare_module.read_pare_state if s.model == "pare" else hmr_module.read_hmr_state
        state, _ = read(s.init)
        checkpoint.load_strict(model, checkpoint.add_missing_bn_counters(model, state), source=s.init)
        log.info("initialised from %s", s.init)
    elif s.backbone_init:
        report = load_pretrained_backbone(model.backbone, s.backbone_init)
        log.info("backbone from %s: %d tensors loaded, %d skipped, %d initialised", s.backbone_init,
                 len(report["loaded"]), len(report["skipped"]), len(report["initialised"]))


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def best_score(model: str, errors: dict) -> float:
    """The validation criterion (lower is better): DSR's 1.5 PA-MPJPE + MPJPE, else PA-MPJPE."""
    if model == "dsr":
        return 1.5 * errors["pa_mpjpe"] + errors["mpjpe"]
    return errors["pa_mpjpe"]


@torch.no_grad()
def evaluate(model, head: SMPLHead, path: str, device: torch.device, batch_size: int = 32,
             predict=None) -> dict:
    """Mean MPJPE and PA-MPJPE (mm, LSP-14 of H36M-17) over the rows of a packed file that have SMPL
    parameters, without augmentation; the ground truth is the body model on those parameters. Also how
    much the answers vary between images against the truth (`prediction_spread`): a regressor that
    ignores its input answers every image alike."""
    from models.rotations import axis_angle_to_rotmat

    data = PackedDataset([path])
    rows = [r for r in data.files[0].usable if data.files[0].arrays["has_smpl"][r] > 0.5]
    if not rows:
        raise ValueError(f"{path}: no row with SMPL parameters to validate on")
    was_training = model.training
    model.eval()
    errors = {"mpjpe": [], "pa_mpjpe": []}
    predicted, true = [], []
    for lo in range(0, len(rows), batch_size):
        batch = to_device(data.batch([(0, int(r), 0, 0) for r in rows[lo:lo + batch_size]]), device)
        images = normalize_images(batch["image"])
        pred = model(images) if predict is None else predict(images)
        out = head.predict(pred)
        gt_rotmat = axis_angle_to_rotmat(batch["pose"].float().reshape(-1, 24, 3))
        gt = head.body(betas=batch["betas"].float(), rotmat=gt_rotmat)
        e = joint_errors(out.h36m_joints.float(), gt.h36m_joints.float())
        for k in errors:
            errors[k].append(e[k].cpu())
        predicted.append(pred.rotmat.float().cpu())
        true.append(gt_rotmat.cpu())
    model.train(was_training)
    return {k: float(torch.cat(v).mean()) for k, v in errors.items()} | {"rows": len(rows)} | \
        prediction_spread(torch.cat(predicted), torch.cat(true))


def prediction_spread(predicted: torch.Tensor, true: torch.Tensor) -> dict:
    """The standard deviation over images of the rotation-matrix entries (N, 24, 3, 3), averaged over the
    entries, for the root and for the other joints, predicted and true."""
    def spread(r: torch.Tensor) -> float:
        return float(r.std(0).mean()) if len(r) > 1 else 0.0

    return {"spread_root": spread(predicted[:, 0]), "spread_body": spread(predicted[:, 1:]),
            "true_spread_root": spread(true[:, 0]), "true_spread_body": spread(true[:, 1:])}


def step_loss(model, head: SMPLHead, batch: dict, s: TrainSettings, step: int, faces=None, prior=None,
              use_amp: bool = False) -> tuple[torch.Tensor, dict]:
    """The loss of one (share of a) batch at training step `step` (1-based), as the loop computes it."""
    images = normalize_images(batch["image"])
    with torch.autocast(images.device.type, enabled=use_amp):
        if s.model == "pare":
            pred = model(images, batch["part_labels"] if s.gt_attention else None)
        else:
            pred = model(images)
    out_body = head.predict(pred)
    dsr_terms = None
    if s.model == "dsr" and step > s.start_dsr:
        d = dsr_losses(out_body.vertices.float(), out_body.cam_t.float(), faces, prior, batch["parser_labels"],
                       batch["has_parser"], s.dsr, flipped=batch["flip"])
        dsr_terms = (d.mc, d.c)
    try:
        return regressor_losses(pred, out_body, batch, s.loss, dsr_terms)
    except FloatingPointError as e:
        raise FloatingPointError(f"step {step}: {e}") from None


def distributed_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    import os

    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


# ---------------------------------------------------------------------------------------------------
# Checkpoints


def save_training_state(path: Path, model, optimizer, scaler, step: int, best: float, settings: TrainSettings) -> None:
    state = {
        "format": CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "step": step,
        "best": best,
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "settings": settings.to_dict(),
        "inputs": input_fingerprint(settings),
    }
    with atomic_output(path) as tmp:
        torch.save(state, tmp)


# settings that change how a run is carried out, not the weights it computes: a resumed run may differ in
# them. `steps` too: a run resumed with more steps continues exactly where an uninterrupted one would be.
RUNTIME_SETTINGS = ("out_dir", "num_workers", "device", "log_every", "val_batch_size", "checkpoint_every", "steps")


def input_fingerprint(s: TrainSettings) -> dict:
    """Size and modification time of every file the run reads: a changed input discards a saved state."""
    paths = [*s.train_files, s.val_file, s.body, s.prior, s.mean_params, s.init, s.backbone_init]
    return {p: [Path(p).stat().st_size, Path(p).stat().st_mtime_ns] for p in paths if p and Path(p).is_file()}


def resumable(state: dict, s: TrainSettings) -> str | None:
    """Why a saved state cannot be resumed by a run of settings `s` (None when it can)."""
    saved = {k: v for k, v in state.get("settings", {}).items() if k not in RUNTIME_SETTINGS}
    wanted = {k: v for k, v in s.to_dict().items() if k not in RUNTIME_SETTINGS}
    if saved != wanted:
        changed = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
        return f"the settings changed ({', '.join(changed)})"
    if state.get("inputs") != input_fingerprint(s):
        return "an input file changed"
    if int(state["step"]) >= s.steps:
        return "that run had finished (a new run was asked for)"
    return None


def publish(state_dir: Path, out: Path, summary: dict) -> None:
    """The finished run's files into `out`, each replaced atomically (hard links where possible)."""
    import os
    import shutil

    for name in ("last.pt", "best.pt", "metrics.csv"):
        source = state_dir / name
        if name == "best.pt" and not source.is_file():  # no validation: the last weights are the best known
            source = state_dir / "last.pt"
        with atomic_output(out / name) as tmp:
            tmp.unlink()
            try:
                os.link(source, tmp)
            except OSError:
                shutil.copyfile(source, tmp)
    with atomic_output(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1) + "\n")


def load_training_state(path: Path) -> dict:
    """Our own checkpoint, read weights-only (it holds tensors and plain values only)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a training checkpoint of this project (format {state.get('format')!r}); "
                         f"delete it to train from the start")
    return state


# ---------------------------------------------------------------------------------------------------
# The loop


def train(s: TrainSettings) -> dict:
    out = Path(s.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rank, world, local_rank = distributed_env()
    device = torch.device(resolve_device(s.device))
    if world > 1:  # started by torchrun: one process per GPU (or per CPU share with gloo)
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
    try:
        return _train(s, out, device, rank, world)
    finally:
        if world > 1:
            torch.distributed.destroy_process_group()


def _train(s: TrainSettings, out: Path, device: torch.device, rank: int, world: int) -> dict:
    main_process = rank == 0
    if world > 1:
        log.info("process %d of %d on %s: %d of every %d samples", rank, world, device, s.batch_size // world, s.batch_size)
    torch.manual_seed(s.seed)
    body = BodyModel(load_body_model(s.body)).to(device)
    head = SMPLHead(body, resolution=s.augment.output_resolution)
    faces = torch.as_tensor(body.faces, device=device)
    prior = torch.as_tensor(load_face_prior(s.prior, num_faces=len(faces)), device=device) if s.model == "dsr" else None
    mean = MeanParams.from_npz(s.mean_params) if s.mean_params else mean_params_from_packed(s.train_files)
    model = build_model(s, mean)
    initial_weights(s, model)
    model.to(device).train()
    # DDP averages the gradients of the processes' shares; every process keeps the same weights
    net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if world > 1 else model
    optimizer = torch.optim.Adam(model.parameters(), lr=s.lr)
    use_amp = s.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    step, best = 0, math.inf
    state_dir = out / "state"
    last, best_path, metrics_path = state_dir / "last.pt", state_dir / "best.pt", state_dir / "metrics.csv"
    if last.is_file():
        state = load_training_state(last)
        why = resumable(state, s)
        if why is None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state["scaler"])
            step, best = int(state["step"]), float(state["best"])
            torch.set_rng_state(state["rng_cpu"])
            if device.type == "cuda" and state["rng_cuda"]:
                torch.cuda.set_rng_state_all(state["rng_cuda"])
            log.info("resumed from %s at step %d", last, step)
        else:
            log.info("not resuming from %s: %s; training from the start", last, why)
            if world > 1:
                torch.distributed.barrier()  # every process has read it before the main one removes it
            if main_process:
                for stale in (last, best_path, metrics_path):
                    stale.unlink(missing_ok=True)

    # its own generator: a DataLoader draws its workers' base seed from the global RNG otherwise, which
    # would shift the dropout stream of a resumed run (the batches themselves come from the sampler)
    loader = mixed_loader(s.train_files, s.ratios, s.batch_size, s.seed, s.augment, s.num_workers,
                          steps=s.steps - step, start_step=step, rank=rank, world=world,
                          pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(s.seed))
    run = s
    if s.start_dsr_epochs is not None:  # an epoch: every usable training row once (SPIN's mixed dataset length)
        epoch = sum(len(f.usable) for f in loader.dataset.files) / s.batch_size
        run = replace(s, start_dsr=int(round(s.start_dsr_epochs * epoch)))
        if s.model == "dsr":
            log.info("DSR losses from step %d (%.3g epochs of %.1f steps)", run.start_dsr + 1, s.start_dsr_epochs, epoch)
    columns = ["step", "total", "keypoints", "keypoints_3d", "pose", "betas", "camera", "part", "dsr_mc", "dsr_c",
               "val_mpjpe", "val_pa_mpjpe", "seconds"]
    metrics = writer = board = None
    if main_process:
        state_dir.mkdir(parents=True, exist_ok=True)
        board = tensorboard_writer(out / "tensorboard")
        # a resumed run keeps the rows up to its checkpoint; rows a killed job logged after it are redone
        kept = []
        if step and metrics_path.is_file():
            with open(metrics_path, newline="") as f:
                kept = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) <= step]
        metrics = open(metrics_path, "w", newline="")
        writer = csv.DictWriter(metrics, fieldnames=columns, restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(kept)
    start_time = time.perf_counter()
    try:
        from tqdm import tqdm
    except ImportError:  # progress bar optional
        def tqdm(x, **kw):
            return x
    try:
        batches = tqdm(loader, initial=step, total=s.steps, desc=f"train {s.model}", mininterval=10) \
            if main_process else loader
        for batch in batches:
            step += 1
            batch = to_device(batch, device)
            if s.warmup_steps:  # from the step alone: nothing to save for a resume
                for group in optimizer.param_groups:
                    group["lr"] = s.lr * min(1.0, step / s.warmup_steps)
            total, terms = step_loss(net, head, batch, run, step, faces, prior, use_amp)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            if s.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if not main_process:
                continue
            row = None
            if step % s.log_every == 0 or step == s.steps:
                row = {"step": step, "total": total.item(), **{k: v.item() for k, v in terms.items()},
                       "seconds": round(time.perf_counter() - start_time, 2)}
                log.info("step %d: loss %.4f (%s)", step, row["total"],
                         ", ".join(f"{k} {row[k]:.4f}" for k in terms))
            if s.val_file and (step % s.val_every == 0 or step == s.steps):
                errors = evaluate(model, head, s.val_file, device, s.val_batch_size)
                row = (row or {"step": step}) | {"val_mpjpe": errors["mpjpe"], "val_pa_mpjpe": errors["pa_mpjpe"]}
                score = best_score(s.model, errors)
                log.info("step %d: validation MPJPE %.1f mm, PA-MPJPE %.1f mm", step, errors["mpjpe"], errors["pa_mpjpe"])
                if score < best:
                    best = score
                    save_training_state(best_path, model, optimizer, scaler, step, best, s)
            if row is not None:
                writer.writerow(row)
                metrics.flush()
                if board is not None:
                    for key, value in row.items():
                        if key not in ("step", "seconds"):
                            board.add_scalar(f"val/{key[4:]}" if key.startswith("val_") else f"loss/{key}", value, step)
            if step % s.checkpoint_every == 0 or step == s.steps:
                save_training_state(last, model, optimizer, scaler, step, best, s)
    finally:
        if metrics is not None:
            metrics.close()
        if board is not None:
            board.close()
    summary = {"model": s.model, "step": step, "best": best if math.isfinite(best) else None,
               "seconds": round(time.perf_counter() - start_time, 1), "world_size": world}
    if main_process:
        publish(state_dir, out, summary)
    if world > 1:
        torch.distributed.barrier()  # the other processes wait for the published files
    return summary


def tensorboard_writer(folder: Path):
    """TensorBoard event files when tensorboard is installed; None otherwise (metrics.csv has it all)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(folder))


def main(argv: list[str] | None = None) -> int:
    from pipeline.cli import start_logging

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings-json", required=True, help="TrainSettings as JSON")
    # how the run is carried out, not what it computes: apart from the settings, so that the workflow can
    # change them without a rerun
    parser.add_argument("--num-workers", type=int, help="data-loading processes (overrides the settings)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="overrides the settings")
    args = parser.parse_args(argv)
    start_logging()
    raw = json.loads(args.settings_json)
    known = {f.name for f in fields(TrainSettings)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SystemExit(f"unknown training settings {unknown}; known: {sorted(known)}")
    for key in ("num_workers", "device"):
        if getattr(args, key) is not None:
            raw[key] = getattr(args, key)
    summary = train(TrainSettings(**raw))
    log.info("done: %s", summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
