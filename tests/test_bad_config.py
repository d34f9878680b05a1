"""A config that points at files that are not there stops the workflow while it is read, for every target
(dry runs included), with the config key, the path and the fix; never after some jobs ran, and never with
"Nothing to be done" over labels made from something else."""

import numpy as np
import pytest
import yaml

from conftest import REPO
from test_workflow import snakemake, workdir  # noqa: F401 - the tiny-world working directory fixture

REAL = REPO.parent / "shared" / "fixtures" / "real"


def configure(workdir, **sections):
    """Update sections of the working directory's config (e.g. body={...}) and write it back."""
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    for name, values in sections.items():
        if isinstance(config.get(name), dict):
            config[name].update(values)
        else:
            config[name] = values
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))


def refused(workdir, target):
    """The output of a dry run of `target` that must fail."""
    proc = snakemake("-n", "--cores", "1", target, cwd=workdir, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    return out


def leave_demo_part_labels(workdir):
    """The partseg target's files as a demo-body run leaves them (empty: the dry run only sees that they exist)."""
    for split in ("train", "test", "occluded"):
        (workdir / f"results/partseg/demo_{split}").mkdir(parents=True)
        (workdir / f"results/partseg/demo_{split}/index.json").write_text("{}")
    for path in ("results/checks/partseg.json", "results/figures/partseg.png"):
        (workdir / path).parent.mkdir(parents=True, exist_ok=True)
        (workdir / path).write_text("")


def smpl_folder(workdir, *names):
    folder = workdir / "smpl"
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes(b"")  # the read-time check looks for the files; only convert_smpl reads them
    return folder


# --- the body model ---------------------------------------------------------------------------------------------


def test_an_smpl_folder_that_does_not_exist_is_named(workdir):
    folder = workdir / "no_such_folder"
    configure(workdir, body={"model_dir": str(folder)})
    out = refused(workdir, "all")
    assert f"body.model_dir: {folder} is not a folder" in out
    assert "SMPL_NEUTRAL.pkl" in out and "smpl.is.tue.mpg.de" in out and "body.model_dir: null" in out


@pytest.mark.parametrize("target", ["partseg", "parsing", "all"])
def test_an_empty_smpl_folder_stops_every_target_even_when_demo_labels_exist(workdir, target):
    """The hole: the check ran with convert_smpl's inputs only, so after a demo run `snakemake partseg`
    found the part labels present, said "Nothing to be done" and kept the demo body's labels."""
    folder = smpl_folder(workdir)
    configure(workdir, body={"model_dir": str(folder)})
    leave_demo_part_labels(workdir)
    out = refused(workdir, target)
    assert "Nothing to be done" not in out
    assert f"body.model_dir: no SMPL model file for gender 'neutral' in {folder}" in out
    assert "SMPL_NEUTRAL.pkl" in out and "smpl.is.tue.mpg.de" in out


def test_the_smpl_file_of_the_configured_gender_is_required(workdir):
    folder = smpl_folder(workdir, "SMPL_NEUTRAL.pkl", "J_regressor_h36m.npy", "J_regressor_extra.npy")
    configure(workdir, body={"model_dir": str(folder), "gender": "female",
                             "h36m_regressor": str(folder / "J_regressor_h36m.npy"),
                             "extra_regressor": str(folder / "J_regressor_extra.npy")})
    out = refused(workdir, "partseg")
    assert f"body.model_dir: no SMPL model file for gender 'female' in {folder}" in out and "SMPL_FEMALE.pkl" in out


@pytest.mark.parametrize("missing, present", [("h36m_regressor", "extra_regressor"), ("extra_regressor", "h36m_regressor")])
def test_a_regressor_file_that_is_not_there_is_named(workdir, missing, present):
    folder = smpl_folder(workdir, "SMPL_NEUTRAL.pkl", "present.npy")
    configure(workdir, body={"model_dir": str(folder), missing: "regressors/absent.npy", present: str(folder / "present.npy")})
    leave_demo_part_labels(workdir)
    out = refused(workdir, "partseg")
    assert f"body.{missing}: regressors/absent.npy ({workdir / 'regressors/absent.npy'}) is not a file" in out
    assert "J_regressor_" in out and "spin/data.tar.gz" in out


# --- the configured datasets ------------------------------------------------------------------------------------


def spin_annotations(path):
    """A one-row SPIN-format file made from the real fixtures (as the workflow test's real dataset)."""
    if not REAL.is_dir():
        pytest.skip(f"real fixtures not found at {REAL}")
    from pipeline.datasets import read_bbox_json, read_openpose_json
    from pipeline.io import save_npz

    center, scale = read_bbox_json(REAL / "spin_im1010_bbox.json")
    save_npz(path, {
        "imgname": np.array(["spin_im1010.jpg"]), "center": center[None], "scale": np.array([scale]),
        "openpose": read_openpose_json(REAL / "spin_im1010_openpose.json")[:1], "has_smpl": np.zeros(1),
        "pose": np.zeros((1, 72)), "shape": np.zeros((1, 10)),
    })


@pytest.mark.parametrize("target", ["partseg", "all"])
def test_a_dataset_images_folder_that_does_not_exist_is_named(workdir, target):
    spin_annotations(workdir / "spin_example.npz")
    configure(workdir, datasets={"spin_example": {"annotations": "spin_example.npz", "images": "no_such_images"}})
    out = refused(workdir, target)
    assert f"datasets.spin_example.images: no_such_images ({workdir / 'no_such_images'}) is not a folder" in out


@pytest.mark.parametrize("target", ["partseg", "all"])
def test_a_dataset_with_no_rows_is_named(workdir, target):
    np.savez(workdir / "empty.npz", imgname=np.array([], dtype="<U16"), center=np.zeros((0, 2)), scale=np.zeros(0),
             openpose=np.zeros((0, 25, 3)), has_smpl=np.zeros(0), pose=np.zeros((0, 72)), shape=np.zeros((0, 10)))
    (workdir / "images").mkdir()
    configure(workdir, datasets={"empty_set": {"annotations": "empty.npz", "images": "images"}})
    out = refused(workdir, target)
    assert f"datasets.empty_set.annotations: empty.npz ({workdir / 'empty.npz'}) has 0 rows" in out
    assert "usage:" not in out  # not the index rule's argparse error, after the DAG was built
