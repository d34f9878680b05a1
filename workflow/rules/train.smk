# Training the regressors on the packed files: PARE in two stages (part labels on, then off, from stage
# 1's weights), HMR (the baseline) and DSR (HMR with the semantic-rendering losses); then their check
# against the mean-pose baseline and the training curves. GPU jobs: one GPU each, or several through
# torchrun (train.gpus, train.nodes).


include: "helpers/train.smk"


rule train_pare:
    input:
        unpack(train_inputs),
    output:
        last="results/train/{run}/last.pt",
        best="results/train/{run}/best.pt",
        metrics="results/train/{run}/metrics.csv",
        summary="results/train/{run}/summary.json",
    wildcard_constraints:
        run="pare_stage1|pare",
    params:
        command=train_command,
    log:
        "logs/train_pare/{run}.log",
    benchmark:
        "benchmarks/train_pare/{run}.tsv"
    conda:
        "../../environment.yml"
    threads: TRAIN["threads"]
    resources:
        mem_mb=TRAIN["mem_mb"],
        runtime=TRAIN["runtime"],
        gpu=train_gpus(),
        # how a training is carried out, not what it computes: resources, not params, so that a change
        # reruns nothing
        loader_workers=TRAIN["num_workers"],
        train_device=TRAIN["device"],
    shell:
        "OMP_NUM_THREADS={threads} GOMP_SPINCOUNT=20000 {params.command} --num-workers {resources.loader_workers} "
        "--device {resources.train_device} > {log} 2>&1"


use rule train_pare as train_hmr with:
    wildcard_constraints:
        run="hmr",
    log:
        "logs/train_hmr/{run}.log",
    benchmark:
        "benchmarks/train_hmr/{run}.tsv"


use rule train_pare as train_dsr with:
    wildcard_constraints:
        run="dsr",
    log:
        "logs/train_dsr/{run}.log",
    benchmark:
        "benchmarks/train_dsr/{run}.tsv"


rule train_check:
    input:
        unpack(train_check_inputs),
    output:
        "results/checks/train.json",
    params:
        options=train_check_options,
    log:
        "logs/train_check/train.log",
    conda:
        "../../environment.yml"
    threads: TRAIN["threads"]
    resources:
        mem_mb=4000,
    shell:
        "OMP_NUM_THREADS={threads} python -m trainers.train_check {input.test} {input.body} {output} "
        "--models {input.models} --train-files {input.train} {params.options} > {log} 2>&1"


rule train_figure:
    input:
        expand("results/train/{run}/metrics.csv", run=TRAIN_RUNS),
    output:
        report("results/figures/train_curves.png", caption="../report/train_curves.rst", category="Training"),
    log:
        "logs/train_figure/train_curves.log",
    conda:
        "../../environment.yml"
    shell:
        "python -m trainers.train_figure {output} {input} > {log} 2>&1"
