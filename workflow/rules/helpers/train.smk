# rules/train.smk's config and helpers: the runs to train (train.models: pare = its two stages), each
# run's inputs and command (trainers.runs), the check's and the figure's inputs and the stage's targets.
# Apart from the rules because Snakemake's linter flags a file that mixes rules and functions.
import json

from trainers.runs import PARSER, backbone_source, init_source, launch_command, run_settings, run_spec, runs_of

TRAIN = config["train"]
TRAIN_ENABLED = TRAIN["enabled"] and PACK["enabled"]
TRAIN_RUNS = runs_of(TRAIN["models"]) if TRAIN_ENABLED else []


def _train_split_dataset(key, split):
    """train.<key>, or the demo world's split `split` when it is null."""
    name = TRAIN[key]
    if name is None:
        if not (WORLD["enabled"] and split in WORLD["splits"]):
            raise ValueError(f"train.{key} is null and the demo world has no {split} split: set train.{key} "
                             f"to a configured dataset")
        name = f"{WORLD['dataset']}_{split}"
    dataset_spec(name)  # a clear error for an unknown name
    return name


def train_val_dataset():
    return _train_split_dataset("val_dataset", "val")


def train_test_dataset():
    return _train_split_dataset("test_dataset", "test")


def _train_run(wildcards):
    if wildcards.run not in TRAIN_RUNS:
        raise ValueError(f"train run {wildcards.run} is not trained with train.models {TRAIN['models']}")
    spec = run_spec(TRAIN, wildcards.run)
    for name in spec["datasets"]:
        dataset_spec(name)  # an unknown training dataset is named with the configured ones
    if spec.get("model") == "dsr" and not (PARSING["enabled"] and PRIOR["enabled"]):
        raise ValueError("training DSR needs the clothing pseudo-labels and the prior: enable parsing and prior, "
                         "or remove dsr from train.models")
    return spec


def train_inputs(wildcards):
    spec = _train_run(wildcards)
    inputs = {"packed": [f"results/packed/{name}.h5" for name in spec["datasets"]],
              "val": f"results/packed/{train_val_dataset()}.h5", "body": body_model_file()}
    if spec.get("model") == "dsr":
        inputs["prior"] = "results/prior/clothing_prior.npz"
    _, init = init_source(spec, wildcards.run, TRAIN_RUNS)
    backbone = backbone_source(spec, wildcards.run)
    if init is not None:
        inputs["init"] = init
    elif backbone == PARSER:
        if not PARSING["enabled"]:
            raise ValueError(f"train run {wildcards.run} starts its backbone from the parser (backbone_init: parser): "
                             f"enable parsing, or set train.runs.{wildcards.run}.backbone_init")
        inputs["backbone_init"] = parser_weights()
    elif backbone is not None:
        inputs["backbone_init"] = backbone  # ImageNet / HRNet pose weights
    return inputs


def _parser_width():
    """The width of the parser's network: the demo parser's, or 1 for Graphonomy's official weights."""
    return PARSING["demo"]["width"] if USE_DEMO_PARSER else 1.0


def train_command(wildcards):
    """The run's settings (the rerun trigger: a param) inside its launch command (trainers.runs). It takes
    the wildcards alone: Snakemake does not compare params that are functions of `input` for reruns."""
    inputs = train_inputs(wildcards)
    settings = run_settings(config, wildcards.run, packed=lambda name: f"results/packed/{name}.h5",
                            train_files=list(inputs["packed"]), val_file=inputs["val"], body=inputs["body"],
                            prior=inputs.get("prior"), init=inputs.get("init"), out_dir=f"results/train/{wildcards.run}",
                            parser_weights=inputs.get("backbone_init"), parser_width=_parser_width())
    return launch_command(TRAIN["gpus"], TRAIN["nodes"], json.dumps(settings, sort_keys=True))


def train_gpus():
    return gpus(TRAIN["device"]) * TRAIN["gpus"]


def train_check_inputs(wildcards):
    models = TRAIN["models"]
    return {"models": [f"results/train/{m}/best.pt" for m in models], "test": f"results/packed/{train_test_dataset()}.h5",
            "train": sorted({f"results/packed/{n}.h5" for m in models for n in run_spec(TRAIN, m)["datasets"]}),
            "body": body_model_file()}


def train_check_options(wildcards):
    check = TRAIN["check"]
    options = f"--min-gain {check['min_gain']} --device {TRAIN['device']}"
    if TRAIN["mean_params"]:
        options += f" --mean-params {TRAIN['mean_params']}"
    return options + ("" if check["fail"] else " --no-fail")


def train_targets():
    if not TRAIN_RUNS:
        return []
    return [*(f"results/train/{run}/best.pt" for run in TRAIN_RUNS), "results/checks/train.json",
            "results/figures/train_curves.png"]
