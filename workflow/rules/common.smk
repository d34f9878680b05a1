# Config validation, global wildcard constraints and the helpers rules use (rules hold no logic).
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


def world_targets():
    return [
        *world_figure_inputs(None),
        f"{SCANS_ROOT}/index.json",
        "results/figures/world_samples.png",
    ]


def all_targets():
    return [body_model_file(), "results/figures/body_model.png", *world_targets()]
