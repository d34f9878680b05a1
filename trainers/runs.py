"""The training runs of the workflow, from the config's `train` section and the presets
(resources/train_presets.yaml): which runs a model needs, each run's settings (trainers.train.TrainSettings
as JSON) and the files it reads. The workflow's train rules call these; so can a user's own script.

    spec = run_spec(config["train"], "dsr")          # the preset's run with train.runs.dsr on top
    settings = run_settings(config, "dsr", packed=lambda name: f"results/packed/{name}.h5", ...)
"""

from __future__ import annotations

import copy
import shlex
from pathlib import Path

import yaml

PRESETS_FILE = Path(__file__).resolve().parents[1] / "resources" / "train_presets.yaml"

# a model's runs, in training order; the last one is the model
MODEL_RUNS = {"pare": ("pare_stage1", "pare"), "hmr": ("hmr",), "dsr": ("dsr",)}
RUN_KEYS = ("datasets", "init")  # the keys of a run that are not TrainSettings fields
PARSER = "parser"  # backbone_init: the workflow's parser weights (the demo parser, or Graphonomy's inference.pth)


def load_presets(path: str | Path = PRESETS_FILE) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def _merge(base: dict, top: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "datasets":
            out[key] = _merge(out[key], value)
        else:  # a run's datasets are replaced whole: a mix is one decision
            out[key] = copy.deepcopy(value)
    return out


def runs_of(models: list[str]) -> list[str]:
    return [run for model in models for run in MODEL_RUNS[model]]


def run_spec(train: dict, run: str, presets: dict | None = None) -> dict:
    """The preset's `run` with the config's train.runs.<run> on top (dictionaries merged key by key,
    `datasets` replaced whole)."""
    presets = load_presets() if presets is None else presets
    preset = presets.get(train["preset"])
    if preset is None or run not in preset:
        raise ValueError(f"train.preset {train['preset']!r} has no run {run!r} in {PRESETS_FILE}")
    spec = _merge(preset[run], train.get("runs", {}).get(run, {}))
    if not spec.get("datasets"):
        raise ValueError(f"train run {run}: no training datasets (set train.runs.{run}.datasets: {{name: ratio}})")
    return spec


def init_source(spec: dict, run: str, runs: list[str]) -> tuple[str | None, str | None]:
    """(run name, file) the run starts from: another run of this workflow (its best checkpoint), a
    checkpoint file, or neither."""
    init = spec.get("init")
    if init is None:
        return None, None
    if init in MODEL_RUNS["pare"] + MODEL_RUNS["hmr"] + MODEL_RUNS["dsr"]:
        if init == run:
            raise ValueError(f"train run {run} cannot start from itself (train.runs.{run}.init)")
        if init not in runs:
            raise ValueError(f"train run {run} starts from run {init}, which train.models does not train: "
                             f"add its model to train.models or set train.runs.{run}.init to a checkpoint file")
        return init, f"results/train/{init}/best.pt"
    if not Path(init).is_file():
        raise ValueError(f"train.runs.{run}.init: {init} is not a file (a published or own checkpoint, or a run name "
                         f"among {sorted(r for rs in MODEL_RUNS.values() for r in rs)})")
    return None, init


def backbone_source(spec: dict, run: str) -> str | None:
    """The file a fresh run's backbone starts from: None, the workflow's parser weights (`parser`,
    for the deeplab_xception backbones) or a file (ImageNet ResNet-50, HRNet pose weights)."""
    source = spec.get("backbone_init")
    if source is None or source == PARSER:
        if source == PARSER and not str(spec.get("backbone", "")).startswith("deeplab_xception"):
            raise ValueError(f"train.runs.{run}.backbone_init is 'parser', which needs a deeplab_xception backbone "
                             f"(got {spec.get('backbone')!r})")
        return source
    if not Path(source).is_file():
        raise ValueError(f"train.runs.{run}.backbone_init: {source} is not a file (ImageNet ResNet-50 or HRNet pose "
                         f"weights, or 'parser')")
    return source


def run_settings(config: dict, run: str, *, packed, train_files: list[str], val_file: str | None, body: str,
                 prior: str | None, init: str | None, out_dir: str, presets: dict | None = None,
                 parser_weights: str | None = None, parser_width: float | None = None) -> dict:
    """TrainSettings of `run` as a plain dict: the run's spec, the config's loss weights (with the run's
    own switches on top), DSR's loss settings and the files the workflow resolved. A backbone that
    starts from the parser (`backbone_init: parser`) takes `parser_weights` and the parser's width."""
    from trainers.train import TrainSettings

    train = config["train"]
    spec = run_spec(train, run, presets)
    datasets = spec["datasets"]
    settings = {k: v for k, v in spec.items() if k not in RUN_KEYS}
    from dataclasses import fields

    unknown = sorted(set(settings) - {f.name for f in fields(TrainSettings)})
    if unknown:
        raise ValueError(f"train run {run}: unknown training settings {unknown} (train.runs.{run} or the "
                         f"{train['preset']} preset); known: {sorted(f.name for f in fields(TrainSettings))} and {list(RUN_KEYS)}")
    model = settings.get("model", "hmr")
    # only what the model reads, so that a change to another model's settings retrains nothing here
    unused = {"pare": ("dsr_mc", "dsr_c"), "hmr": ("part", "dsr_mc", "dsr_c"), "dsr": ("part",)}[model]
    settings["loss"] = {k: v for k, v in {**train["loss"], **spec.get("loss", {})}.items() if k not in unused}
    settings.update(
        out_dir=out_dir, train_files=train_files, ratios=[float(datasets[name]) for name in datasets],
        val_file=val_file, body=body, prior=prior if model == "dsr" else None, init=init,
        mean_params=train.get("mean_params"), dsr=dict(config.get("dsr_losses", {})) if model == "dsr" else {},
        seed=config.get("seed", 0),
    )
    if backbone_source(spec, run) == PARSER:
        if parser_weights is None:
            raise ValueError(f"train run {run} starts its backbone from the parser, and there are no parser weights "
                             f"(enable parsing)")
        settings.update(backbone_init=parser_weights, width_mult=parser_width)
    if init is not None:  # a whole network to start from: its own backbone weights win
        settings["backbone_init"] = None
    assert [packed(name) for name in datasets] == train_files, "train_files must follow the run's datasets"
    return TrainSettings(**settings).to_dict()  # checked here: an unknown key fails while the DAG is built


def launch_command(gpus: int, nodes: int, settings_json: str, port: int = 29500) -> str:
    """The shell command that trains one run: in-process for one GPU (or the CPU), torchrun for several
    GPUs of one node, srun + torchrun (one per node, rendezvous on the job's first node) for several
    nodes of a SLURM job."""
    module = f"-m trainers.train --settings-json {shlex.quote(settings_json)}"
    if gpus * nodes == 1:
        return f"python {module}"
    if nodes == 1:
        return f"torchrun --standalone --nnodes 1 --nproc-per-node {gpus} {module}"
    head = "$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)"
    return (f"test -n \"$SLURM_JOB_ID\" || {{ echo 'train.nodes > 1 needs a SLURM job (the slurm profile)' >&2; exit 2; }}; "
            f"srun --nodes {nodes} --ntasks-per-node 1 torchrun --nnodes {nodes} --nproc-per-node {gpus} "
            f"--rdzv-id \"$SLURM_JOB_ID\" --rdzv-backend c10d --rdzv-endpoint {head}:{port} {module}")
