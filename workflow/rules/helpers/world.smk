# rules/world.smk's helpers: shard lists, options, the split files and the stage's targets. Its config
# (WORLD, WORLD_ROOT, SCANS_ROOT) is in common.smk: the dataset table reads it too.
# Apart from the rules because Snakemake's linter flags a file that mixes rules and functions.


def world_split_shards(wildcards):
    split = WORLD["splits"][wildcards.split]
    n = _shard_count(split["count"], WORLD["shard_size"])
    return [f"{WORLD_ROOT}/shards/{wildcards.split}-{k:04d}" for k in range(n)]


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
    if not WORLD["enabled"]:
        return []
    return [
        *world_figure_inputs(None),
        f"{SCANS_ROOT}/index.json",
        "results/figures/world_samples.png",
    ]
