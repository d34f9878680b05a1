# Body-part labels for PARE: per row, 24 SMPL parts + background in the crop frame, in shards.


include: "helpers/partseg.smk"


rule partseg_shard:
    input:
        unpack(partseg_inputs),
    output:
        "results/partseg/{dataset}/shard-{shard}.npz",
    params:
        options=partseg_options,
    log:
        "logs/partseg_shard/{dataset}/{shard}.log",
    benchmark:
        "benchmarks/partseg_shard/{dataset}/{shard}.tsv"
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=gpus(PARTSEG["device"]) if PARTSEG["backend"] == "raster" else 0,
    shell:
        "OMP_NUM_THREADS={threads} GOMP_SPINCOUNT=20000 python -m pipeline.partseg shard {input.body} {input.annotations} {output} "
        "{params.options} > {log} 2>&1"


rule partseg_index:
    input:
        partseg_shards,
    output:
        "results/partseg/{dataset}/index.json",
    log:
        "logs/partseg_index/{dataset}.log",
    conda:
        "../../environment.yml"
    shell:
        "python -m pipeline.partseg index {output} {input} > {log} 2>&1"


rule partseg_check:
    input:
        unpack(partseg_check_inputs),
    output:
        report("results/checks/partseg.json", caption="../report/partseg_check.rst", category="Checks"),
    params:
        pairs=partseg_check_pairs,
        estimated=partseg_estimated_option,
        min_agreement=PARTSEG["min_agreement"],
    log:
        "logs/partseg_check/partseg_check.log",
    conda:
        "../../environment.yml"
    shell:
        "python -m pipeline.partseg check {output} {params.pairs} --min-agreement {params.min_agreement} "
        "{params.estimated} > {log} 2>&1"


rule partseg_figure:
    input:
        unpack(partseg_figure_inputs),
    output:
        report("results/figures/partseg.png", caption="../report/partseg.rst", category="Part labels"),
    params:
        panels=partseg_figure_items,
    log:
        "logs/partseg_figure/partseg_figure.log",
    conda:
        "../../environment.yml"
    shell:
        "python -m pipeline.partseg figure {output} {params.panels} --check {input.check} > {log} 2>&1"


rule partseg:
    input:
        partseg_targets(),
    default_target: False
