# rules/body.smk's helpers: the SMPL conversion's inputs and options. BODY and body_model_file() are in
# common.smk (every stage reads the body model).
# Apart from the rules because Snakemake's linter flags a file that mixes rules and functions.


def smpl_conversion_inputs(wildcards):
    """The user's licensed files; a missing one stops the DAG with the paths tried and where to get SMPL."""
    from pipeline.body.model import find_smpl_file

    inputs = {"smpl": str(find_smpl_file(BODY["model_dir"], wildcards.gender))}
    for key, name, shape in (("h36m_regressor", "J_regressor_h36m.npy", "17 x 6890"),
                             ("extra_regressor", "J_regressor_extra.npy", "9 x 6890")):
        if BODY[key] is None:
            raise ValueError(
                f"body.{key} is required with real SMPL files: point it at {name} ({shape}, from the SPIN "
                "data release, http://visiondata.cis.upenn.edu/spin/data.tar.gz)"
            )
        inputs[key] = BODY[key]
    if BODY["part_segmentation"] is not None:
        inputs["part_segmentation"] = BODY["part_segmentation"]
    return inputs


def smpl_conversion_options(wildcards, input):
    options = f"--h36m-regressor {input.h36m_regressor} --extra-regressor {input.extra_regressor}"
    if "part_segmentation" in input.keys():
        options += f" --part-segmentation {input.part_segmentation}"
    return options
