# DSR's clothing semantic prior: map (render scans x views, parse, count labels per body vertex) in
# shards of scans, then reduce to a per-vertex and per-face distribution over the 20 CIHP labels.


include: "helpers/prior.smk"


rule prior_scan_index:
    output:
        "results/prior/scans/index.json",
    params:
        root=PRIOR["scans"],
        fit_type=PRIOR["fit_type"],
    log:
        "logs/prior_scan_index/index.log",
    conda:
        "../../environment.yml"
    shell:
        "python -m pipeline.prior index {params.root} {output} --fit-type {params.fit_type} > {log} 2>&1"


rule prior_map:
    input:
        unpack(prior_map_inputs),
    output:
        "results/prior/shards/shard-{shard}.npz",
    params:
        options=prior_map_options,
    log:
        "logs/prior_map/{shard}.log",
    benchmark:
        "benchmarks/prior_map/{shard}.tsv"
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=6000,
        runtime=120,
        gpu=gpus(PRIOR["device"]),
    shell:
        "OMP_NUM_THREADS={threads} GOMP_SPINCOUNT=20000 python -m pipeline.prior map {input.index} {input.body} "
        "{input.weights} {output} {params.options} > {log} 2>&1"


rule prior_reduce:
    input:
        body=body_model_file(),
        shards=prior_shards,
    output:
        "results/prior/clothing_prior.npz",
    params:
        options=prior_reduce_options,
    log:
        "logs/prior_reduce/prior.log",
    conda:
        "../../environment.yml"
    resources:
        mem_mb=2000,
    shell:
        "python -m pipeline.prior reduce {input.body} {output} {input.shards} {params.options} > {log} 2>&1"


rule prior_check:
    input:
        prior="results/prior/clothing_prior.npz",
        index=prior_scan_index,
    output:
        report("results/checks/prior.json", caption="../report/prior_check.rst", category="Checks"),
    params:
        options=prior_check_options,
    log:
        "logs/prior_check/prior.log",
    conda:
        "../../environment.yml"
    shell:
        "python -m pipeline.prior check {input.prior} {input.index} {output} {params.options} > {log} 2>&1"


rule prior_figure:
    input:
        prior="results/prior/clothing_prior.npz",
        body=body_model_file(),
    output:
        report("results/figures/prior.png", caption="../report/prior.rst", category="Clothing prior"),
    log:
        "logs/prior_figure/prior.log",
    conda:
        "../../environment.yml"
    shell:
        "python -m pipeline.prior figure {input.prior} {input.body} {output} > {log} 2>&1"


rule prior:
    input:
        prior_targets(),
    default_target: False
