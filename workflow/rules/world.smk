# The demo world: synthetic image datasets (SPIN/EFT format) and clothed scans (AGORA-like layout),
# generated in shards from the body model, with ground truth for every label the pipeline makes.


include: "helpers/world.smk"


rule world_image_shard:
    input:
        body=body_model_file(),
    output:
        directory(f"{WORLD_ROOT}/shards/{{split}}-{{shard}}"),
    params:
        options=world_image_options,
    log:
        f"logs/world_image_shard/{WORLD['dataset']}/{{split}}-{{shard}}.log",
    benchmark:
        f"benchmarks/world_image_shard/{WORLD['dataset']}/{{split}}-{{shard}}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=30,
    shell:
        "OMP_NUM_THREADS={threads} GOMP_SPINCOUNT=20000 python -m pipeline.world images {input.body} {output} "
        "--split {wildcards.split} {params.options} > {log} 2>&1"


rule world_split:
    input:
        world_split_shards,
    output:
        annotations=f"{WORLD_ROOT}/{{split}}.npz",
        gt=f"{WORLD_ROOT}/{{split}}_gt.npz",
    log:
        f"logs/world_split/{WORLD['dataset']}/{{split}}.log",
    conda:
        "../../environment.yml"
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "python -m pipeline.world merge {output.annotations} {output.gt} {input} > {log} 2>&1"


rule world_scan_shard:
    input:
        body=body_model_file(),
    output:
        directory(f"{SCANS_ROOT}/shard-{{shard}}"),
    params:
        options=scan_options,
    log:
        "logs/world_scan_shard/{shard}.log",
    benchmark:
        "benchmarks/world_scan_shard/{shard}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=30,
    shell:
        "OMP_NUM_THREADS={threads} GOMP_SPINCOUNT=20000 python -m pipeline.world scans {input.body} {output} "
        "{params.options} > {log} 2>&1"


rule world_scan_index:
    input:
        scan_shards,
    output:
        f"{SCANS_ROOT}/index.json",
    log:
        "logs/world_scan_index/index.log",
    conda:
        "../../environment.yml"
    shell:
        "python -m pipeline.world scan-index {output} {input} > {log} 2>&1"


rule world_figure:
    input:
        world_figure_inputs,
    output:
        report(
            "results/figures/world_samples.png",
            caption="../report/world_samples.rst",
            category="Demo world",
        ),
    params:
        pairs=world_figure_pairs,
    log:
        "logs/world_figure/world_figure.log",
    conda:
        "../../environment.yml"
    shell:
        "python -m pipeline.world figure {output} {params.pairs} > {log} 2>&1"


rule world:
    input:
        world_targets(),
    default_target: False
