# One HDF5 file per dataset split: annotations, image crops, part labels, parser labels and flags, the
# clothing prior, and the hashes of every input; then verified.


include: "helpers/pack.smk"


rule pack_split:
    input:
        unpack(pack_inputs),
    output:
        "results/packed/{dataset}.h5",
    params:
        settings=pack_settings,
        inputs=pack_input_options,
        format_version=PACK_FORMAT_VERSION,
    log:
        "logs/pack_split/{dataset}.log",
    benchmark:
        "benchmarks/pack_split/{dataset}.tsv"
    conda:
        "../../environment.yml"
    resources:
        mem_mb=4000,
        runtime=120,
    shell:
        "python -m pipeline.pack split {input.annotations} {output} {params.settings} {params.inputs} > {log} 2>&1 "
        "&& python -m pipeline.pack verify {output} >> {log} 2>&1"


rule pack:
    input:
        pack_targets(),
    default_target: False


rule dsr_figure:
    input:
        unpack(dsr_figure_inputs),
    output:
        report("results/figures/dsr_rendering.png", caption="../report/dsr_rendering.rst", category="Clothing prior"),
    params:
        settings=dsr_loss_settings_json,
    log:
        "logs/dsr_figure/dsr_rendering.log",
    conda:
        "../../environment.yml"
    shell:
        "python -m trainers.dsr_figure {input.packed} {input.prior} {input.body} {output} "
        "--settings-json {params.settings:q} > {log} 2>&1"
