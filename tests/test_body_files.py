"""Finding the user's SMPL files, and the errors when they are missing."""

import numpy as np
import pytest

from pipeline.body.model import SMPL_REGISTER_URL, BodyModelError, find_smpl_file, load_body_model


def test_missing_model_file_names_paths_and_registration(tmp_path):
    with pytest.raises(BodyModelError) as err:
        find_smpl_file(tmp_path, "female")
    msg = str(err.value)
    assert str(tmp_path) in msg and "SMPL_FEMALE.pkl" in msg and "basicModel_f_lbs_10_207_0_v1.0.0.pkl" in msg
    assert SMPL_REGISTER_URL in msg and "model_dir: null" in msg


def test_finds_official_names_and_prefers_npz(tmp_path):
    (tmp_path / "basicmodel_m_lbs_10_207_0_v1.0.0.pkl").write_bytes(b"")
    assert find_smpl_file(tmp_path, "male").name == "basicmodel_m_lbs_10_207_0_v1.0.0.pkl"
    (tmp_path / "SMPL_MALE.npz").write_bytes(b"")
    assert find_smpl_file(tmp_path, "MALE").name == "SMPL_MALE.npz"


def test_wrong_arrays_are_named(tmp_path):
    path = tmp_path / "broken.npz"
    np.savez(path, v_template=np.zeros((10, 3)))
    with pytest.raises(BodyModelError, match="broken.npz: not an SMPL-format model, missing shapedirs"):
        load_body_model(path)
    with pytest.raises(BodyModelError, match="not found"):
        load_body_model(tmp_path / "absent.npz")
