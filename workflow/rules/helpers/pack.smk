# rules/pack.smk's config and helpers: inputs, options and the stage's targets. It reads the config of
# the stages it packs (PARTSEG, PARSING, PRIOR) and parser_weights().
# Apart from the rules because Snakemake's linter flags a file that mixes rules and functions.


from pipeline.pack_format import FORMAT_VERSION as PACK_FORMAT_VERSION  # pack_split takes it as a param, so a new layout repacks old files

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


def pack_settings(wildcards):
    """The options that come from the config: a function of the wildcards alone, so that Snakemake
    compares them and a changed setting repacks (it does not compare params that are functions of input)."""
    import json
    import shlex

    spec = dataset_spec(wildcards.dataset)
    # the config that shapes the file, recorded in it
    subset = {"labels": config["labels"], "pack": PACK, "partseg": {k: PARTSEG[k] for k in ("focal_length", "backend")}}
    return (
        f"--dataset {wildcards.dataset} --images {spec['images']} "
        f"--label-resolution {config['labels']['resolution']} --context {PACK['context']} "
        f"--image-format {PACK['image_format']} --jpeg-quality {PACK['jpeg_quality']} "
        f"--config-json {shlex.quote(json.dumps(subset, sort_keys=True))}"
    )


def pack_input_options(wildcards, input):
    """The options that name input files (a changed file reruns the job through its input)."""
    options = f"--parts {input.parts} --body {input.body}"
    for key, flag in (("parsing", "--parsing"), ("parser_weights", "--parser-weights"), ("prior", "--prior")):
        if key in input.keys():
            options += f" {flag} {input[key]}"
    return options


def pack_targets():
    if not PACK["enabled"]:
        return []
    targets = [f"results/packed/{name}.h5" for name in DATASETS]
    if dsr_figure_dataset() is not None:
        targets.append("results/figures/dsr_rendering.png")
    return targets


def dsr_figure_dataset():
    """The split the DSR rendering figure shows: a demo split with ground-truth bodies (training split
    first), or None when the parser labels or the prior are switched off or there is no such split."""
    if not (PARSING["enabled"] and PRIOR["enabled"]):
        return None
    names = sorted(_demo_partseg(), key=lambda name: (not name.endswith("train"), name))
    return names[0] if names else None


def dsr_figure_inputs(wildcards):
    return {"packed": f"results/packed/{dsr_figure_dataset()}.h5", "prior": "results/prior/clothing_prior.npz",
            "body": body_model_file()}


def dsr_loss_settings_json(wildcards):
    """The config's dsr_losses section as JSON (a param, so that a change redraws the figure)."""
    import json

    return json.dumps(config["dsr_losses"], sort_keys=True)
