# rules/partseg.smk's config and helpers: shard lists, inputs, options, the check's and the figure's
# arguments and the stage's targets.
# Apart from the rules because Snakemake's linter flags a file that mixes rules and functions.


PARTSEG = config["partseg"]


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
