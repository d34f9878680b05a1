# rules/evaluate.smk's config and helpers: the evaluated models (trained runs and published checkpoints),
# the benchmarks (configured files and the demo world's splits), each job's inputs and options, the
# table's and the stage's targets.
# Apart from the rules because Snakemake's linter flags a file that mixes rules and functions.

EVAL = config["evaluation"]
# the trained runs whose final model is evaluated (PARE's second stage; its first is an intermediate)
_EVAL_TRAINED = [run for run in ("pare", "hmr", "dsr") if run in TRAIN_RUNS]


def _eval_models():
    available = {**{run: f"results/train/{run}/best.pt" for run in _EVAL_TRAINED},
                 **{name: spec["path"] for name, spec in EVAL["checkpoints"].items()}}
    clash = sorted(set(_EVAL_TRAINED) & set(EVAL["checkpoints"]))
    if clash:
        raise ValueError(f"evaluation.checkpoints {clash} clash with the trained runs' names: rename them")
    if EVAL["models"] is None:
        return available
    unknown = [m for m in EVAL["models"] if m not in available]
    if unknown:
        raise ValueError(f"evaluation.models {unknown}: not a trained run (train.models {TRAIN['models']}) nor a name "
                         f"in evaluation.checkpoints; available: {', '.join(sorted(available)) or 'none'}")
    return {m: available[m] for m in EVAL["models"]}


def _eval_benchmarks():
    benchmarks = {}
    if WORLD["enabled"]:
        for split in EVAL["demo_splits"]:
            if split not in WORLD["splits"]:
                raise ValueError(f"evaluation.demo_splits: the demo world has no split {split!r} "
                                 f"(world.splits: {', '.join(WORLD['splits'])})")
            spec = DATASETS[f"{WORLD['dataset']}_{split}"]
            benchmarks[f"{WORLD['dataset']}_{split}"] = {"annotations": spec["annotations"], "images": spec["images"],
                                                         "kind": "demo", "paper": False}
    for name, spec in EVAL["benchmarks"].items():
        if name in benchmarks:
            raise ValueError(f"evaluation.benchmarks.{name} clashes with a demo split's name: rename it")
        if not Path(spec["annotations"]).is_file():
            raise ValueError(f"evaluation.benchmarks.{name}.annotations: {shown_path(spec['annotations'])} is not a file: "
                             f"point it at the benchmark's .npz (SPIN/PARE format)")
        if not Path(spec["images"]).is_dir():
            raise ValueError(f"evaluation.benchmarks.{name}.images: {shown_path(spec['images'])} is not a folder: set it to "
                             f"the folder the imgname entries of {spec['annotations']} are relative to")
        benchmarks[name] = {"paper": True, **spec}
    return benchmarks


EVAL_ENABLED = EVAL["enabled"]
EVAL_MODELS = _eval_models() if EVAL_ENABLED else {}
EVAL_BENCHMARKS = _eval_benchmarks() if EVAL_ENABLED else {}


def _sensitivity_benchmarks():
    """The benchmarks of the occlusion analysis. A demo split named while the world is off is left out, as the
    demo splits are from the evaluation (the default names one); any other name must be an evaluated benchmark."""
    if not (EVAL_ENABLED and EVAL["sensitivity"]["enabled"]):
        return []
    demo = {f"{WORLD['dataset']}_{split}" for split in WORLD["splits"]}
    chosen = []
    for name in EVAL["sensitivity"]["benchmarks"]:
        if name in EVAL_BENCHMARKS:
            chosen.append(name)
        elif WORLD["enabled"] or name not in demo:
            raise ValueError(f"evaluation.sensitivity.benchmarks: {name!r} is not an evaluated benchmark "
                             f"({', '.join(sorted(EVAL_BENCHMARKS)) or 'none'})")
    return chosen


EVAL_SENSITIVITY = _sensitivity_benchmarks()


def _eval_model(wildcards):
    if wildcards.model not in EVAL_MODELS:
        raise ValueError(f"model {wildcards.model} is not evaluated (evaluation.models): {', '.join(sorted(EVAL_MODELS))}")
    return EVAL_MODELS[wildcards.model]


def _eval_benchmark(wildcards):
    if wildcards.benchmark not in EVAL_BENCHMARKS:
        raise ValueError(f"benchmark {wildcards.benchmark} is not evaluated: {', '.join(sorted(EVAL_BENCHMARKS))}")
    return EVAL_BENCHMARKS[wildcards.benchmark]


def _gendered_bodies():
    """The gendered SMPL bodies of gendered ground truth; none with the demo body (its rows are neutral)."""
    if EVAL["gender"] != "gendered" or USE_DEMO_BODY:
        return {}
    return {"male": "results/body/smpl_male.npz", "female": "results/body/smpl_female.npz"}


def eval_inputs(wildcards):
    bench = _eval_benchmark(wildcards)
    return {"checkpoint": _eval_model(wildcards), "annotations": bench["annotations"], "body": body_model_file(),
            **_gendered_bodies()}


def eval_settings(wildcards):
    """The options from the config (a function of the wildcards alone: a changed setting reruns the job)."""
    bench = _eval_benchmark(wildcards)
    return f"--kind {bench['kind']} --name {wildcards.benchmark} --gender {EVAL['gender']}"


def eval_images(wildcards):
    """The folder the benchmark's image names are relative to (a folder, not an input file: its photos are read
    as they are; the annotation file is the input)."""
    return _eval_benchmark(wildcards)["images"]


def eval_input_options(wildcards, input):
    return "".join(f" --{g} {input[g]}" for g in ("male", "female") if g in input.keys())


def sensitivity_settings(wildcards):
    s = EVAL["sensitivity"]
    return f"{eval_settings(wildcards)} --samples {s['samples']} --size {s['size']} --stride {s['stride']}"


def eval_gpus():
    return gpus(EVAL["device"])


def eval_table_options(wildcards):
    papers = " ".join(f"--paper {name}={spec.get('paper') or 'none'}" for name, spec in EVAL["checkpoints"].items())
    no_paper = [name for name, spec in EVAL_BENCHMARKS.items() if not spec["paper"]]
    return papers + (f" --no-paper {' '.join(no_paper)}" if no_paper else "")


def eval_results():
    return [f"results/eval/{m}/{b}.json" for m in EVAL_MODELS for b in EVAL_BENCHMARKS]


def sensitivity_targets():
    return [f"results/eval/{m}/sensitivity/{b}.png" for m in EVAL_MODELS for b in EVAL_SENSITIVITY]


def evaluate_targets():
    if not (EVAL_MODELS and EVAL_BENCHMARKS):
        return []
    return ["results/eval/table.csv", "results/eval/table.md", "results/figures/eval.png", *sensitivity_targets()]
