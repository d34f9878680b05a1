# Evaluating every model (trained runs, published checkpoints) on every benchmark (the demo world's test
# and occluded splits; 3DPW, 3DPW-OCC, 3DOH, H36M protocol 2, MPI-INF-3DHP where configured), PARE's
# occlusion sensitivity analysis, and the table of all beside the papers' numbers. GPU jobs where
# evaluation.device is cuda.


include: "helpers/evaluate.smk"


rule evaluate:
    input:
        unpack(eval_inputs),
    output:
        result="results/eval/{model}/{benchmark}.json",
        samples="results/eval/{model}/{benchmark}_samples.npz",
    params:
        images=eval_images,
        settings=eval_settings,
        inputs=eval_input_options,
    log:
        "logs/evaluate/{model}/{benchmark}.log",
    benchmark:
        "benchmarks/evaluate/{model}/{benchmark}.tsv"
    conda:
        "../../environment.yml"
    threads: EVAL["threads"]
    resources:
        mem_mb=EVAL["mem_mb"],
        runtime=EVAL["runtime"],
        gpu=eval_gpus(),
        # how the job runs, not what it computes: resources, so that a change reruns nothing
        loader_workers=EVAL["num_workers"],
        eval_batch=EVAL["batch_size"],
        eval_device=EVAL["device"],
    shell:
        "OMP_NUM_THREADS={threads} python -m trainers.evaluate {input.checkpoint} {input.annotations} {params.images} "
        "{input.body} {output.result} {params.settings} --samples {output.samples}{params.inputs} "
        "--batch-size {resources.eval_batch} --workers {resources.loader_workers} --device {resources.eval_device} "
        "> {log} 2>&1"


rule eval_sensitivity:
    input:
        unpack(eval_inputs),
    output:
        maps="results/eval/{model}/sensitivity/{benchmark}.npz",
        figure=report("results/eval/{model}/sensitivity/{benchmark}.png", caption="../report/eval_sensitivity.rst",
                      category="Evaluation", subcategory="Occlusion sensitivity", labels={"model": "{model}", "benchmark": "{benchmark}"}),
    params:
        images=eval_images,
        settings=sensitivity_settings,
        inputs=eval_input_options,
    log:
        "logs/eval_sensitivity/{model}/{benchmark}.log",
    benchmark:
        "benchmarks/eval_sensitivity/{model}/{benchmark}.tsv"
    conda:
        "../../environment.yml"
    threads: EVAL["threads"]
    resources:
        mem_mb=EVAL["mem_mb"],
        runtime=EVAL["runtime"],
        gpu=eval_gpus(),
        eval_batch=EVAL["batch_size"],
        eval_device=EVAL["device"],
    shell:
        "OMP_NUM_THREADS={threads} python -m trainers.sensitivity {input.checkpoint} {input.annotations} {params.images} "
        "{input.body} {output.maps} {params.settings} --figure {output.figure}{params.inputs} "
        "--batch-size {resources.eval_batch} --device {resources.eval_device} > {log} 2>&1"


rule eval_table:
    input:
        eval_results(),
    output:
        csv=report("results/eval/table.csv", caption="../report/eval_table.rst", category="Evaluation", subcategory="Table"),
        md="results/eval/table.md",
        figure=report("results/figures/eval.png", caption="../report/eval_figure.rst", category="Evaluation", subcategory="Table"),
    params:
        options=eval_table_options,
    log:
        "logs/eval_table/table.log",
    conda:
        "../../environment.yml"
    shell:
        "python -m trainers.eval_table {output.csv} {output.md} {output.figure} {input} {params.options} > {log} 2>&1"
