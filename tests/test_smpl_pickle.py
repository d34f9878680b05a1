"""The official SMPL pickles (chumpy + scipy sparse, Python 2) load without chumpy, and hostile pickles
are refused before anything they name can run."""

import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse

import pickle_writer as pw
from pipeline.body.model import STANDARD_KEYS, BodyModelError, load_body_model
from pipeline.body.smpl_pickle import NotAnSmplPickleError, UnsafePickleError, load_smpl_pickle, loads_smpl_pickle


def fake_smpl_arrays(num_vertices: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    weights = rng.random((num_vertices, 24))
    j_reg = scipy.sparse.random(24, num_vertices, density=min(1.0, 200 / num_vertices), format="csc", random_state=seed)
    return {
        "v_template": rng.normal(size=(num_vertices, 3)),
        "shapedirs": rng.normal(size=(num_vertices, 3, 10)),
        "posedirs": rng.normal(size=(num_vertices, 3, 207)),
        "J_regressor": j_reg,
        "weights": weights / weights.sum(1, keepdims=True),
        "kintree_table": np.stack([np.r_[4294967295, np.array([0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21])],
                                   np.arange(24)]).astype(np.int64),
        "f": rng.integers(0, num_vertices, size=(2 * num_vertices, 3)).astype(np.uint32),
    }


def smpl_style_pickle(arrays, sparse_module="scipy.sparse.csc", ch_style="newobj") -> bytes:
    """Laid out like basicModel_neutral_lbs_10_207_0_v1.0.0.pkl: chumpy where SMPL has chumpy."""
    values = {
        "v_template": pw.chumpy_ch(arrays["v_template"], ch_style),
        "shapedirs": pw.chumpy_ch(arrays["shapedirs"], ch_style),
        "posedirs": pw.ndarray(arrays["posedirs"]),
        "J_regressor": pw.sparse_csc(arrays["J_regressor"], sparse_module),
        "weights": pw.chumpy_ch(arrays["weights"], ch_style),
        "kintree_table": pw.ndarray(arrays["kintree_table"]),
        "f": pw.ndarray(arrays["f"]),
        "bs_type": pw.py2_str("lrotmin"),
        "bs_style": pw.py2_str("lbs"),
    }
    return pw.model_pickle(values)


@pytest.mark.parametrize("sparse_module", ["scipy.sparse.csc", "scipy.sparse._csc"])
@pytest.mark.parametrize("ch_style", ["newobj", "reconstructor"])
def test_chumpy_pickle_loads_with_right_arrays(tmp_path, sparse_module, ch_style):
    arrays = fake_smpl_arrays(40)
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(smpl_style_pickle(arrays, sparse_module, ch_style))
    loaded = load_smpl_pickle(path)
    for key in STANDARD_KEYS:
        expected = arrays[key]
        got = loaded[key]
        if scipy.sparse.issparse(expected):
            assert scipy.sparse.issparse(got) and got.shape == expected.shape
            assert np.array_equal(got.toarray(), expected.toarray())
        else:
            assert isinstance(got, np.ndarray) and got.dtype == expected.dtype
            assert np.array_equal(got, expected), key
    assert loaded["bs_type"] == "lrotmin"
    assert "chumpy" not in sys.modules


HOSTILE = {
    "os.system": pw.global_("os", "system") + pw.tuple_([pw.unicode_("touch {marker}")]) + pw.REDUCE,
    "posix.system": pw.global_("posix", "system") + pw.tuple_([pw.unicode_("touch {marker}")]) + pw.REDUCE,
    "builtins.eval": pw.global_("builtins", "eval")
    + pw.tuple_([pw.unicode_("open(r'{marker}', 'w').close()")]) + pw.REDUCE,
    "builtins.exec via __builtin__": pw.global_("__builtin__", "exec")
    + pw.tuple_([pw.unicode_("open(r'{marker}', 'w').close()")]) + pw.REDUCE,
    "subprocess.call": pw.global_("subprocess", "call") + pw.tuple_([pw.unicode_("touch {marker}")]) + pw.REDUCE,
    "reconstructor with a foreign class": pw.global_("copy_reg", "_reconstructor")
    + pw.tuple_([pw.global_("builtins", "dict"), pw.global_("__builtin__", "object"), pw.NONE]) + pw.REDUCE,
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_pickle_is_refused_and_never_runs(tmp_path, name):
    marker = tmp_path / "pwned"
    payload = HOSTILE[name].replace(b"{marker}", str(marker).encode())
    # the payload hides among genuine model arrays, as a tampered download would
    arrays = fake_smpl_arrays(10)
    data = pw.model_pickle({"v_template": pw.chumpy_ch(arrays["v_template"]), "f": payload,
                            "weights": pw.ndarray(arrays["weights"])})
    with pytest.raises(UnsafePickleError, match="refus"):
        loads_smpl_pickle(data, source="evil.pkl")
    assert not marker.exists()


def test_codecs_encode_is_limited_to_latin1():
    data = pw.PROTO2 + pw.global_("_codecs", "encode") + pw.tuple_([pw.unicode_("x"), pw.unicode_("rot13")]) + pw.REDUCE + pw.STOP
    with pytest.raises(UnsafePickleError):
        loads_smpl_pickle(data)


def test_convert_cli_writes_clean_npz_equal_to_source(tmp_path):
    arrays = fake_smpl_arrays(6890)  # SMPL's topology: extra-joint ids come from SMPL's published ids
    src = tmp_path / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"
    src.write_bytes(smpl_style_pickle(arrays, "scipy.sparse._csc"))
    h36m = np.random.default_rng(1).random((17, 6890))
    extra = np.random.default_rng(2).random((9, 6890))
    np.save(tmp_path / "J_regressor_h36m.npy", h36m)
    np.save(tmp_path / "J_regressor_extra.npy", extra)
    dst = tmp_path / "smpl_neutral.npz"
    proc = subprocess.run([sys.executable, "-m", "pipeline.body", "convert", str(src), str(dst),
                           "--h36m-regressor", str(tmp_path / "J_regressor_h36m.npy"),
                           "--extra-regressor", str(tmp_path / "J_regressor_extra.npy")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    with np.load(dst, allow_pickle=False) as z:
        for key in STANDARD_KEYS:
            expected = arrays[key].toarray() if scipy.sparse.issparse(arrays[key]) else arrays[key]
            assert np.array_equal(z[key], expected), key
        assert np.array_equal(z["J_regressor_h36m"], h36m) and np.array_equal(z["J_regressor_extra"], extra)
    model = load_body_model(dst)
    assert model.extra_vertex_ids["nose"] == 332  # SMPL's nose vertex
    assert np.array_equal(model.part_labels, arrays["weights"].argmax(1))


def test_convert_cli_reports_hostile_file_by_name(tmp_path):
    src = tmp_path / "SMPL_NEUTRAL.pkl"
    marker = tmp_path / "pwned"
    src.write_bytes(pw.PROTO2 + HOSTILE["os.system"].replace(b"{marker}", str(marker).encode()) + pw.STOP)
    proc = subprocess.run([sys.executable, "-m", "pipeline.body", "convert", str(src), str(tmp_path / "out.npz")],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert str(src) in proc.stderr and "os.system" in proc.stderr
    assert not marker.exists() and not (tmp_path / "out.npz").exists()


def test_non_smpl_topology_needs_its_vertex_ids(tmp_path):
    src = tmp_path / "tiny.pkl"
    src.write_bytes(smpl_style_pickle(fake_smpl_arrays(40)))
    with pytest.raises(BodyModelError, match="40-vertex model without extra_vertex_ids"):
        load_body_model(src)


@pytest.mark.parametrize("content, expected", [
    (b"", "is empty"),
    (b"\xef\xbb\xbf\n  <!DOCTYPE html><html><head><title>SMPL</title></head><body>Sign in</body></html>", "is an HTML page"),
    (b"v_template 0.1 0.2 0.3\nf 1 2 3\n", "not an SMPL pickle"),
])
def test_a_file_that_is_no_pickle_is_named_with_the_fix(tmp_path, content, expected):
    src = tmp_path / "SMPL_NEUTRAL.pkl"
    src.write_bytes(content)
    with pytest.raises(NotAnSmplPickleError) as caught:
        load_smpl_pickle(src)
    message = str(caught.value)
    assert str(src) in message and expected in message
    assert "https://smpl.is.tue.mpg.de" in message and "SMPL for Python" in message
    if expected == "is an HTML page":
        assert "download probably failed" in message
    with pytest.raises(NotAnSmplPickleError, match="SMPL_NEUTRAL.pkl"):  # the body-model reader passes it on
        load_body_model(src)


def test_a_truncated_pickle_says_so(tmp_path):
    data = smpl_style_pickle(fake_smpl_arrays(50))
    src = tmp_path / "SMPL_NEUTRAL.pkl"
    src.write_bytes(data[: len(data) // 2])
    with pytest.raises(NotAnSmplPickleError, match=r"SMPL_NEUTRAL.pkl: the SMPL pickle is truncated .*SMPL for Python"):
        load_smpl_pickle(src)
    assert loads_smpl_pickle(data)["v_template"].shape == (50, 3)  # the whole file still loads
