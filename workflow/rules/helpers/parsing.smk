# rules/parsing.smk's config and helpers: the parser (weights, demo training, inference options), shard
# lists, inputs, options, the check's and the figure's arguments and the stage's targets.
# parser_weights() and parser_inference_options() serve the prior and pack too (included after this).
# Apart from the rules because Snakemake's linter flags a file that mixes rules and functions.
import os


PARSING = config["parsing"]
USE_DEMO_PARSER = PARSING["weights"] is None


def parser_weights():
    """The parser's weights: the user's official file, or the demo parser trained on the demo world."""
    if USE_DEMO_PARSER:
        if not WORLD["enabled"] or "train" not in WORLD["splits"]:
            raise ValueError(
                "parsing.weights is null, so the demo parser must be trained on the demo world's train split: "
                "enable world (with a train split) or set parsing.weights to Graphonomy's inference.pth"
            )
        return "results/parsing/weights/demo_parser.pth"
    return PARSING["weights"]


# The demo parser's training is the longest job of the demo DAG on CPU: up to 8 threads, never more
# than this machine has (more OpenMP threads than cores crawl). Local runs scale it down to --cores;
# cluster runs have no total core count to read (workflow.cores raises there).
TRAINER_THREADS = max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def demo_parser_inputs(wildcards):
    return {
        "annotations": f"{WORLD_ROOT}/train.npz",
        "ground_truth": f"{WORLD_ROOT}/train_gt.npz",
    }


def demo_parser_options(wildcards):
    demo = PARSING["demo"]
    return (
        f"--width {demo['width']} --resolution {demo['input_resolution']} --steps {demo['steps']} "
        f"--batch-size {demo['batch_size']} --learning-rate {demo['learning_rate']} "
        f"--class-weight-power {demo['class_weight_power']} --seed {config['seed']} --device {PARSING['device']}"
    )


def parsing_shards(wildcards):
    rows = dataset_spec(wildcards.dataset)["rows"]
    return [f"results/parsing/{wildcards.dataset}/shard-{k:04d}.npz" for k in range(_shard_count(rows, PARSING["shard_size"]))]


def parsing_inputs(wildcards):
    return {"annotations": dataset_spec(wildcards.dataset)["annotations"], "weights": parser_weights()}


def parsing_options(wildcards):
    spec = dataset_spec(wildcards.dataset)
    return (
        f"--dataset {wildcards.dataset} --images {spec['images']} "
        f"{_shard_indices(wildcards.shard, PARSING['shard_size'], spec['rows'])} "
        f"--label-resolution {config['labels']['resolution']} --device {PARSING['device']} {parser_inference_options()} "
        f"--sides {'keypoints' if PARSING['sides_from_keypoints'] else 'parser'}"
    )


def demo_inference_resolution():
    demo = PARSING["demo"]
    return demo["input_resolution"] if demo["inference_resolution"] is None else demo["inference_resolution"]


def parser_inference_options():
    """How the parser runs, for every stage that parses (pseudo-labels, prior): one set of options."""
    options = (
        f"--variant {PARSING['variant'] if not USE_DEMO_PARSER else 'transfer'} --preset {PARSING['preset']} "
        f"--mode {PARSING['mode']} --context {PARSING['context']} --batch-size {PARSING['batch_size']} "
        f"--input-resolution {demo_inference_resolution() if USE_DEMO_PARSER else PARSING['input_resolution']}"
    )
    scales = PARSING["scales"]
    if scales is None and USE_DEMO_PARSER:
        scales = PARSING["demo"]["scales"]  # the demo parser's stand-in for the preset's scales
    if scales is not None:
        options += " --scales " + " ".join(str(s) for s in scales)
    if PARSING["flip"] is not None:
        options += " --flip" if PARSING["flip"] else " --no-flip"
    return options


def _demo_parsing_datasets():
    return {name: spec for name, spec in _demo_partseg().items() if not name.endswith("_train")}


def parsing_check_inputs(wildcards):
    demo = _demo_parsing_datasets()
    return {
        "indexes": [f"results/parsing/{name}/index.json" for name in demo],
        "ground_truth": [spec["ground_truth"] for spec in demo.values()],
    }


def parsing_check_pairs(wildcards, input):
    return " ".join(f"{i}:{g}" for i, g in zip(input.indexes, input.ground_truth))


def parsing_check_thresholds(wildcards):
    options = f"--goal-miou {PARSING['goal_miou']}"
    if PARSING["min_miou"] is not None:
        options += f" --min-miou {PARSING['min_miou']}"
    return options


def parsing_figure_inputs(wildcards):
    shown = _demo_parsing_datasets()
    return {
        "annotations": [DATASETS[n]["annotations"] for n in shown],
        "indexes": [f"results/parsing/{n}/index.json" for n in shown],
        "ground_truth": [spec["ground_truth"] for spec in shown.values()],
        "check": "results/checks/parsing.json",
    }


def parsing_figure_items(wildcards, input):
    roots = [DATASETS[n]["images"] for n in _demo_parsing_datasets()]
    return " ".join(f"{a}:{r}:{i}:{g}" for a, r, i, g in zip(input.annotations, roots, input.indexes, input.ground_truth))


def parsing_targets():
    if not PARSING["enabled"]:
        return []
    parser_weights()  # fails early, with the fix, when there is no parser to run
    targets = [f"results/parsing/{name}/index.json" for name in DATASETS]
    if _demo_parsing_datasets():
        targets += ["results/checks/parsing.json", "results/figures/parsing.png"]
    return targets
