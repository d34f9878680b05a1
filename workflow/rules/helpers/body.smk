# rules/body.smk's helpers: the SMPL conversion's inputs (checked while the workflow is read) and options.
# BODY and body_model_file() are in common.smk (every stage reads the body model).
# Apart from the rules because Snakemake's linter flags a file that mixes rules and functions.


def smpl_files(gender):
    """The user's licensed files for `gender`, by convert_smpl's input names. A missing folder, SMPL file,
    regressor or part segmentation stops with the config key, the path and the fix."""
    from pipeline.body.model import find_smpl_file

    model_dir = Path(BODY["model_dir"])
    try:
        inputs = {"smpl": str(find_smpl_file(model_dir, gender))}
    except (ValueError, OSError) as e:  # BodyModelError: the paths tried and where to get SMPL
        if not model_dir.is_dir():
            problem = f"{shown_path(model_dir)} is not a folder; "
        else:
            problem = "" if model_dir.is_absolute() else f"{shown_path(model_dir)}: "
        raise ValueError(f"body.model_dir: {problem}{e}") from None
    for key, name, shape in (("h36m_regressor", "J_regressor_h36m.npy", "17 x 6890"),
                             ("extra_regressor", "J_regressor_extra.npy", "9 x 6890")):
        where = f"{name} ({shape}, from the SPIN data release, http://visiondata.cis.upenn.edu/spin/data.tar.gz)"
        if BODY[key] is None:
            raise ValueError(f"body.{key} is required with real SMPL files: point it at {where}")
        if not Path(BODY[key]).is_file():
            raise ValueError(f"body.{key}: {shown_path(BODY[key])} is not a file: point it at {where}")
        inputs[key] = BODY[key]
    if BODY["part_segmentation"] is not None:
        if not Path(BODY["part_segmentation"]).is_file():
            raise ValueError(
                f"body.part_segmentation: {shown_path(BODY['part_segmentation'])} is not a file: point it at "
                "smpl_vert_segmentation.json, or set it to null (parts from the dominant skinning joint)"
            )
        inputs["part_segmentation"] = BODY["part_segmentation"]
    return inputs


# Checked while the workflow is read, for every target: a job-time check would let a run that finds the
# demo body's labels up to date say "Nothing to be done" and keep them.
if not USE_DEMO_BODY:
    smpl_files(BODY["gender"])


def smpl_conversion_inputs(wildcards):
    return smpl_files(wildcards.gender)


def smpl_conversion_options(wildcards, input):
    options = f"--h36m-regressor {input.h36m_regressor} --extra-regressor {input.extra_regressor}"
    if "part_segmentation" in input.keys():
        options += f" --part-segmentation {input.part_segmentation}"
    return options
