# Clothing pseudo-labels for DSR: a Graphonomy parser with multi-scale + flip inference, in shards,
# stored raw in the crop frame with DSR's keypoint box and minimal-clothing flags.


include: "helpers/parsing.smk"


rule parsing_demo_weights:
    input:
        unpack(demo_parser_inputs),
    output:
        "results/parsing/weights/demo_parser.pth",
    params:
        options=demo_parser_options,
    log:
        "logs/parsing_demo_weights/demo_parser.log",
    benchmark:
        "benchmarks/parsing_demo_weights/demo_parser.tsv"
    conda:
        "../../environment.yml"
    threads: TRAINER_THREADS
    resources:
        mem_mb=6000,
        runtime=180,
        gpu=gpus(PARSING["device"]),
    shell:
        "OMP_NUM_THREADS={threads} GOMP_SPINCOUNT=20000 python -m trainers.demo_parser {input.annotations} {input.ground_truth} {output} "
        "{params.options} > {log} 2>&1"


rule parsing_shard:
    input:
        unpack(parsing_inputs),
    output:
        "results/parsing/{dataset}/shard-{shard}.npz",
    params:
        options=parsing_options,
    log:
        "logs/parsing_shard/{dataset}/{shard}.log",
    benchmark:
        "benchmarks/parsing_shard/{dataset}/{shard}.tsv"
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=gpus(PARSING["device"]),
    shell:
        "OMP_NUM_THREADS={threads} GOMP_SPINCOUNT=20000 python -m pipeline.parsing shard {input.weights} {input.annotations} {output} "
        "{params.options} > {log} 2>&1"


rule parsing_index:
    input:
        parsing_shards,
    output:
        "results/parsing/{dataset}/index.json",
    log:
        "logs/parsing_index/{dataset}.log",
    conda:
        "../../environment.yml"
    shell:
        "python -m pipeline.parsing index {output} {input} > {log} 2>&1"


rule parsing_check:
    input:
        unpack(parsing_check_inputs),
    output:
        report("results/checks/parsing.json", caption="../report/parsing_check.rst", category="Checks"),
    params:
        pairs=parsing_check_pairs,
        thresholds=parsing_check_thresholds,
    log:
        "logs/parsing_check/parsing_check.log",
    conda:
        "../../environment.yml"
    shell:
        "python -m pipeline.parsing check {output} {params.pairs} {params.thresholds} > {log} 2>&1"


rule parsing_figure:
    input:
        unpack(parsing_figure_inputs),
    output:
        report("results/figures/parsing.png", caption="../report/parsing.rst", category="Clothing labels"),
    params:
        panels=parsing_figure_items,
    log:
        "logs/parsing_figure/parsing_figure.log",
    conda:
        "../../environment.yml"
    shell:
        "python -m pipeline.parsing figure {output} {params.panels} --check {input.check} > {log} 2>&1"


rule parsing:
    input:
        parsing_targets(),
    default_target: False
