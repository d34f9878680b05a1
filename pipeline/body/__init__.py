"""Body models: SMPL-format files (licensed SMPL or the procedural demo body) and a batched forward."""

from pipeline.body.model import (
    BodyModel,
    BodyModelData,
    BodyModelError,
    BodyOutput,
    convert_model_file,
    find_smpl_file,
    load_body_model,
)
from pipeline.body.smpl_pickle import UnsafePickleError, load_smpl_pickle

__all__ = [
    "BodyModel", "BodyModelData", "BodyModelError", "BodyOutput", "UnsafePickleError",
    "convert_model_file", "find_smpl_file", "load_body_model", "load_smpl_pickle",
]
