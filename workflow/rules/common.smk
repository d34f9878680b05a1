# Config validation, global wildcard constraints and the helpers rules use (rules hold no logic).
#
# Torch-heavy rules run with OMP_NUM_THREADS={threads} and GOMP_SPINCOUNT=20000: OpenMP threads spin
# briefly, then sleep. With more job threads than cores (e.g. --cores 8 on a 2-core machine) the
# default spinning made 4 concurrent parsing jobs 2x slower than this; a job alone is as fast as before
# (measured: 85 s vs 40 s for 4 x 20 images; 11.3 s vs 11.6 s for 60 images alone).
import os
from pathlib import Path

from pipeline.config import validate_config

validate_config(config, Path(workflow.basedir) / "schemas" / "config.schema.yaml")


wildcard_constraints:
    dataset=r"[A-Za-z0-9_]+",
    split=r"[A-Za-z0-9]+",
    shard=r"\d+",


BODY = config["body"]
USE_DEMO_BODY = BODY["model_dir"] is None


def body_model_file():
    """The body model every stage reads: the demo body, or the user's SMPL file converted to .npz."""
    if USE_DEMO_BODY:
        return "results/body/demo_body.npz"
    return f"results/body/smpl_{BODY['gender']}.npz"


def smpl_conversion_inputs(wildcards):
    """The user's licensed files; a missing one stops the DAG with the paths tried and where to get SMPL."""
    from pipeline.body.model import find_smpl_file

    inputs = {"smpl": str(find_smpl_file(BODY["model_dir"], wildcards.gender))}
    for key, name, shape in (("h36m_regressor", "J_regressor_h36m.npy", "17 x 6890"),
                             ("extra_regressor", "J_regressor_extra.npy", "9 x 6890")):
        if BODY[key] is None:
            raise ValueError(
                f"body.{key} is required with real SMPL files: point it at {name} ({shape}, from the SPIN "
                "data release, http://visiondata.cis.upenn.edu/spin/data.tar.gz)"
            )
        inputs[key] = BODY[key]
    if BODY["part_segmentation"] is not None:
        inputs["part_segmentation"] = BODY["part_segmentation"]
    return inputs


def smpl_conversion_options(wildcards, input):
    options = f"--h36m-regressor {input.h36m_regressor} --extra-regressor {input.extra_regressor}"
    if "part_segmentation" in input.keys():
        options += f" --part-segmentation {input.part_segmentation}"
    return options


WORLD = config["world"]
WORLD_ROOT = f"results/world/{WORLD['dataset']}"
SCANS_ROOT = "results/world/scans"


def _shard_count(count, shard_size):
    return -(-count // shard_size)


def world_split_shards(wildcards):
    split = WORLD["splits"][wildcards.split]
    n = _shard_count(split["count"], WORLD["shard_size"])
    return [f"{WORLD_ROOT}/shards/{wildcards.split}-{k:04d}" for k in range(n)]


def _shard_indices(shard, shard_size, count):
    """A shard's own sample range: growing a split leaves its earlier shards' parameters unchanged."""
    start = int(shard) * shard_size
    return f"--indices {start} {min(start + shard_size, count)}"


def world_image_options(wildcards):
    split = WORLD["splits"][wildcards.split]
    low, high = split["occluders"]
    return (
        f"{_shard_indices(wildcards.shard, WORLD['shard_size'], split['count'])} --seed {config['seed']} "
        f"--second-person-prob {split['second_person_prob']} --occluders {low} {high} "
        f"--no-smpl-fraction {split['no_smpl_fraction']} --crop-res {config['labels']['resolution']}"
    )


def world_split_files():
    return {
        split: (f"{WORLD_ROOT}/{split}.npz", f"{WORLD_ROOT}/{split}_gt.npz") for split in WORLD["splits"]
    }


def world_figure_inputs(wildcards):
    return [path for pair in world_split_files().values() for path in pair]


def world_figure_pairs(wildcards):
    return " ".join(f"{a}:{b}" for a, b in world_split_files().values())


def scan_shards(wildcards=None):
    scans = WORLD["scans"]
    return [f"{SCANS_ROOT}/shard-{k:04d}" for k in range(_shard_count(scans["count"], scans["shard_size"]))]


def scan_options(wildcards):
    scans = WORLD["scans"]
    return (
        f"{_shard_indices(wildcards.shard, scans['shard_size'], scans['count'])} --seed {config['seed']} "
        f"--views {scans['views']} --elevation-deg {scans['elevation_deg']} "
        f"--distance {scans['distance']} --resolution {scans['resolution']}"
    )


def _demo_datasets():
    if not WORLD["enabled"]:
        return {}
    return {
        f"{WORLD['dataset']}_{split}": {
            "annotations": f"{WORLD_ROOT}/{split}.npz",
            "images": WORLD_ROOT,
            "rows": spec["count"],
            "ground_truth": f"{WORLD_ROOT}/{split}_gt.npz",
        }
        for split, spec in WORLD["splits"].items()
    }


def _real_datasets():
    import numpy as np

    datasets = {}
    for name, spec in config["datasets"].items():
        try:
            with np.load(spec["annotations"], allow_pickle=False) as z:
                rows = len(z["imgname"])
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"datasets.{name}.annotations: cannot read {spec['annotations']} ({e})") from e
        datasets[name] = {**spec, "rows": rows}
    return datasets


DATASETS = _demo_datasets()
_clash = sorted(set(DATASETS) & set(config["datasets"]))
if _clash:
    raise ValueError(f"datasets {_clash} clash with the demo world's datasets: rename them in config.yaml")
DATASETS.update(_real_datasets())
PARTSEG = config["partseg"]


def dataset_spec(name):
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; configured: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def partseg_shards(wildcards):
    rows = dataset_spec(wildcards.dataset)["rows"]
    return [f"results/partseg/{wildcards.dataset}/shard-{k:04d}.npz" for k in range(_shard_count(rows, PARTSEG["shard_size"]))]


def partseg_inputs(wildcards):
    return {"annotations": dataset_spec(wildcards.dataset)["annotations"], "body": body_model_file()}


def partseg_options(wildcards):
    spec = dataset_spec(wildcards.dataset)
    return (
        f"--dataset {wildcards.dataset} --images {spec['images']} "
        f"{_shard_indices(wildcards.shard, PARTSEG['shard_size'], spec['rows'])} "
        f"--resolution {config['labels']['resolution']} --focal-at-224 {PARTSEG['focal_length']} "
        f"--backend {PARTSEG['backend']} --batch-size {PARTSEG['batch_size']} --device {PARTSEG['device']}"
    )


def _demo_partseg():
    return {name: spec for name, spec in DATASETS.items() if "ground_truth" in spec}


def partseg_check_inputs(wildcards):
    demo = _demo_partseg()
    return {
        "indexes": [f"results/partseg/{name}/index.json" for name in demo],
        "ground_truth": [spec["ground_truth"] for spec in demo.values()],
        "estimated": [spec["annotations"] for spec in demo.values()][:1],
        "body": body_model_file(),
    }


def partseg_check_pairs(wildcards, input):
    return " ".join(f"{i}:{g}" for i, g in zip(input.indexes, input.ground_truth))


def partseg_estimated_option(wildcards, input):
    gt = input.ground_truth[0]
    return f"--estimated {input.body} {input.estimated[0]} {gt}"


def _figure_datasets():
    demo = _demo_partseg()
    return [n for n in demo if n.endswith(("_test", "_occluded"))] or list(demo)


def partseg_figure_inputs(wildcards):
    shown = _figure_datasets()
    return {
        "annotations": [DATASETS[n]["annotations"] for n in shown],
        "indexes": [f"results/partseg/{n}/index.json" for n in shown],
        "check": "results/checks/partseg.json",
    }


def partseg_figure_items(wildcards, input):
    roots = [DATASETS[n]["images"] for n in _figure_datasets()]
    return " ".join(f"{a}:{r}:{i}" for a, r, i in zip(input.annotations, roots, input.indexes))


def partseg_targets():
    targets = [f"results/partseg/{name}/index.json" for name in DATASETS]
    if _demo_partseg():
        targets += ["results/checks/partseg.json", "results/figures/partseg.png"]
    return targets


PARSING = config["parsing"]
USE_DEMO_PARSER = PARSING["weights"] is None


def gpus(device: str) -> int:
    """GPUs a job of a stage with this `device` setting takes from the `gpu` resource: "cuda" 1, "cpu" 0,
    "auto" 1 when the machine building the DAG has CUDA (local runs). Cluster profiles set `gpu` per rule
    with set-resources instead, as the submit host may have no GPU (README, "Running on a cluster")."""
    if device == "cpu":
        return 0
    if device == "auto":
        from pipeline.config import resolve_device

        return int(resolve_device("auto") != "cpu")
    return 1


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


PRIOR = config["prior"]
USE_DEMO_SCANS = PRIOR["scans"] is None


def prior_scan_index():
    """The index of scans the prior is learned from: the demo world's, or one built from the user's folder."""
    if USE_DEMO_SCANS:
        if not WORLD["enabled"]:
            raise ValueError("prior.scans is null, so the prior uses the demo world's scans: enable world or set prior.scans")
        return f"{SCANS_ROOT}/index.json"
    return "results/prior/scans/index.json"


def _prior_scan_count():
    if USE_DEMO_SCANS:
        return WORLD["scans"]["count"]
    from pipeline.prior import MESH_SUFFIXES

    meshes = Path(PRIOR["scans"]) / "meshes"
    if not meshes.is_dir():
        raise ValueError(f"prior.scans: {PRIOR['scans']} has no meshes/ folder (AGORA-style layout: meshes/, fits/, cameras/)")
    found = len({p.stem for p in meshes.rglob("*") if p.suffix.lower() in MESH_SUFFIXES})
    if PRIOR["count"] is not None and PRIOR["count"] > found:
        raise ValueError(f"prior.count is {PRIOR['count']} but {meshes} holds {found} scans")
    return found if PRIOR["count"] is None else PRIOR["count"]


def prior_shards(wildcards=None):
    n = _shard_count(_prior_scan_count(), PRIOR["shard_size"])
    return [f"results/prior/shards/shard-{k:04d}.npz" for k in range(n)]


def prior_map_inputs(wildcards):
    return {"index": prior_scan_index(), "body": body_model_file(), "weights": parser_weights()}


def prior_map_options(wildcards):
    rig = PRIOR["rig"]
    options = (
        f"{_shard_indices(wildcards.shard, PRIOR['shard_size'], _prior_scan_count())} --seed {config['seed']} "
        f"--views {rig['views']} --elevation-deg {rig['elevation_deg']} --distance {rig['distance']} "
        f"--resolution {rig['resolution']} --ambient {PRIOR['ambient']} --prior-resolution {PRIOR['resolution']} "
        f"--device {PRIOR['device']} {parser_inference_options()}"
    )
    if not USE_DEMO_SCANS:
        options += f" --fit-type {PRIOR['fit_type']}"
        if PRIOR["deformation_transfer"] is not None:
            options += f" --deformation-transfer {PRIOR['deformation_transfer']}"
        if PRIOR["smplx_model_dir"] is not None:
            options += f" --smplx-model-dir {PRIOR['smplx_model_dir']}"
    return options


def prior_reduce_options(wildcards):
    options = f"--background-probability {PRIOR['background_probability']} --sides {'body' if PRIOR['sides_from_body'] else 'parser'}"
    if not PRIOR["part_cleaning"]:
        options += " --no-part-cleaning"
    return options


def prior_check_options(wildcards):
    options = f"--goal-agreement {PRIOR['goal_agreement']}"
    if PRIOR["min_agreement"] is not None:
        options += f" --min-agreement {PRIOR['min_agreement']}"
    return options


def prior_targets():
    if not PRIOR["enabled"] or not PARSING["enabled"]:
        return []
    targets = ["results/prior/clothing_prior.npz", "results/figures/prior.png"]
    if USE_DEMO_SCANS:
        targets.append("results/checks/prior.json")
    return targets


PACK = config["pack"]


def pack_inputs(wildcards):
    spec = dataset_spec(wildcards.dataset)
    inputs = {"annotations": spec["annotations"], "body": body_model_file(),
              "parts": f"results/partseg/{wildcards.dataset}/index.json"}
    if PARSING["enabled"]:
        inputs["parsing"] = f"results/parsing/{wildcards.dataset}/index.json"
        inputs["parser_weights"] = parser_weights()
        if PRIOR["enabled"]:
            inputs["prior"] = "results/prior/clothing_prior.npz"
    return inputs


def pack_options(wildcards, input):
    import json
    import shlex

    spec = dataset_spec(wildcards.dataset)
    # the config that shapes the file, recorded in it (and a rerun trigger through params)
    subset = {"labels": config["labels"], "pack": PACK, "partseg": {k: PARTSEG[k] for k in ("focal_length", "backend")}}
    options = (
        f"--dataset {wildcards.dataset} --images {spec['images']} --parts {input.parts} --body {input.body} "
        f"--label-resolution {config['labels']['resolution']} --context {PACK['context']} "
        f"--image-format {PACK['image_format']} --jpeg-quality {PACK['jpeg_quality']} "
        f"--config-json {shlex.quote(json.dumps(subset, sort_keys=True))}"
    )
    for key, flag in (("parsing", "--parsing"), ("parser_weights", "--parser-weights"), ("prior", "--prior")):
        if key in input.keys():
            options += f" {flag} {input[key]}"
    return options


def pack_targets():
    if not PACK["enabled"]:
        return []
    return [f"results/packed/{name}.h5" for name in DATASETS]


def world_targets():
    if not WORLD["enabled"]:
        return []
    return [
        *world_figure_inputs(None),
        f"{SCANS_ROOT}/index.json",
        "results/figures/world_samples.png",
    ]


def all_targets():
    return [body_model_file(), "results/figures/body_model.png", *world_targets(), *partseg_targets(), *parsing_targets(), *prior_targets(), *pack_targets()]
