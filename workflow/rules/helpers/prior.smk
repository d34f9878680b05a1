# rules/prior.smk's config and helpers: the scans (index, count), shard lists, options and the stage's
# targets. The parser runs as parsing's helpers set it up: parser_weights(), parser_inference_options().
# Apart from the rules because Snakemake's linter flags a file that mixes rules and functions.
import functools


PRIOR = config["prior"]
USE_DEMO_SCANS = PRIOR["scans"] is None


def prior_scan_index(wildcards=None):
    """The index of scans the prior is learned from: the demo world's, or one built from the user's folder."""
    if USE_DEMO_SCANS:
        if not WORLD["enabled"]:
            raise ValueError("prior.scans is null, so the prior uses the demo world's scans: enable world or set prior.scans")
        return f"{SCANS_ROOT}/index.json"
    return "results/prior/scans/index.json"


# Lists the user's scan folder while the DAG is built: the number of scans decides the map shards (and
# bounds prior.count). Cached: one listing per run, not one per map job.
@functools.cache
def _prior_scan_count():
    if USE_DEMO_SCANS:
        return WORLD["scans"]["count"]
    from pipeline.scans import MESH_SUFFIXES

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
