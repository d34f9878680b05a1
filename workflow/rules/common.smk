# What several stages share: config validation, global wildcard constraints, the body model file, the
# shard arithmetic, the dataset table (the demo world's splits and the configured real datasets), the
# `gpu` resource helper and all_targets() (the default targets). Each stage's own config, helpers and
# target list are in rules/helpers/STAGE.smk, which rules/STAGE.smk includes above its rules (rules hold
# no logic); a stage may use the helpers of a stage included before it (prior and pack use parsing's
# parser_weights()).
#
# Torch-heavy rules run with OMP_NUM_THREADS={threads} and GOMP_SPINCOUNT=20000: OpenMP threads spin
# briefly, then sleep. With more job threads than cores (e.g. --cores 8 on a 2-core machine) the
# default spinning made 4 concurrent parsing jobs 2x slower than this; a job alone is as fast as before
# (measured: 85 s vs 40 s for 4 x 20 images; 11.3 s vs 11.6 s for 60 images alone).
import zipfile
from pathlib import Path

from numpy.lib.format import read_array_header_1_0, read_array_header_2_0, read_magic

from pipeline.config import validate_config


def npz_rows(path, key="imgname"):
    """Rows of the array `key` in the .npz at `path`, from its .npy header alone: no array data is read
    and nothing is unpickled (an object array stops here, as np.load with allow_pickle=False does)."""
    with zipfile.ZipFile(path) as archive:
        try:
            member = archive.open(f"{key}.npy")
        except KeyError:
            raise KeyError(f"{key} is not a file in the archive") from None
        with member:
            version = read_magic(member)
            # format 3.0 is 2.0 with a UTF-8 header (non-Latin-1 field names): the same shape and dtype
            shape, _, dtype = (read_array_header_1_0 if version == (1, 0) else read_array_header_2_0)(member)
    if dtype.hasobject:
        raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
    if not shape:
        raise ValueError(f"{key} is a single value, not an array with one entry per row")
    return shape[0]


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


def _shard_count(count, shard_size):
    return -(-count // shard_size)


def _shard_indices(shard, shard_size, count):
    """A shard's own sample range: growing a split leaves its earlier shards' parameters unchanged."""
    start = int(shard) * shard_size
    return f"--indices {start} {min(start + shard_size, count)}"


# The demo world's config and paths (world.smk builds it): the dataset table, the demo parser
# (parsing.smk) and the prior's demo scans (prior.smk) read them too.
WORLD = config["world"]
WORLD_ROOT = f"results/world/{WORLD['dataset']}"
SCANS_ROOT = "results/world/scans"


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


def shown_path(path):
    """A configured path for an error message: relative ones also resolved (they are read from the working
    directory, which --directory sets)."""
    return str(path) if Path(path).is_absolute() else f"{path} ({Path(path).resolve()})"


def _real_datasets():
    """The configured datasets with their row counts, read (and checked) while the workflow is read, for
    every target."""
    datasets = {}
    for name, spec in config["datasets"].items():
        try:
            rows = npz_rows(spec["annotations"])  # rows decide the shard count
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            raise ValueError(f"datasets.{name}.annotations: cannot read {spec['annotations']} ({e})") from e
        if rows == 0:
            raise ValueError(
                f"datasets.{name}.annotations: {shown_path(spec['annotations'])} has 0 rows (imgname is empty): "
                f"point it at a file with samples, or remove datasets.{name} from the config"
            )
        if not Path(spec["images"]).is_dir():
            raise ValueError(
                f"datasets.{name}.images: {shown_path(spec['images'])} is not a folder: set it to the folder "
                f"that the imgname entries of {spec['annotations']} are relative to"
            )
        datasets[name] = {**spec, "rows": rows}
    return datasets


DATASETS = _demo_datasets()
_clash = sorted(set(DATASETS) & set(config["datasets"]))
if _clash:
    raise ValueError(f"datasets {_clash} clash with the demo world's datasets: rename them in config.yaml")
DATASETS.update(_real_datasets())


def dataset_spec(name):
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; configured: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def _demo_partseg():
    """The demo world's datasets (they have ground truth): what partseg's and parsing's checks and figures use."""
    return {name: spec for name, spec in DATASETS.items() if "ground_truth" in spec}


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


def all_targets():
    """The default targets (`all`, in the Snakefile): the body model, its figure and every stage's target
    list. It names functions of rules/helpers/, so the Snakefile calls it after every include."""
    return [body_model_file(), "results/figures/body_model.png", *world_targets(), *partseg_targets(), *parsing_targets(), *prior_targets(), *pack_targets(),
            *train_targets(), *evaluate_targets()]
