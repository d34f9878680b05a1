# The body model: the procedural demo body, or the user's SMPL file converted to a clean .npz.


include: "helpers/body.smk"


rule demo_body:
    output:
        "results/body/demo_body.npz",
    params:
        seed=BODY["demo"]["seed"],
        grid_spacing=BODY["demo"]["grid_spacing"],
    log:
        "logs/demo_body/demo_body.log",
    benchmark:
        "benchmarks/demo_body/demo_body.tsv"
    conda:
        "../../environment.yml"
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "python -m pipeline.body demo {output} --seed {params.seed} --grid-spacing {params.grid_spacing} > {log} 2>&1"


rule convert_smpl:
    input:
        unpack(smpl_conversion_inputs),
    output:
        "results/body/smpl_{gender}.npz",
    params:
        options=smpl_conversion_options,
    log:
        "logs/convert_smpl/{gender}.log",
    conda:
        "../../environment.yml"
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "python -m pipeline.body convert {input.smpl} {output} {params.options} > {log} 2>&1"


rule body_figure:
    input:
        body_model_file(),
    output:
        report(
            "results/figures/body_model.png",
            caption="../report/body_model.rst",
            category="Body model",
        ),
    log:
        "logs/body_figure/body_figure.log",
    conda:
        "../../environment.yml"
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "python -m pipeline.body figure {input} {output} > {log} 2>&1"
