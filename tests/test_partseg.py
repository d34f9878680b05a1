"""Part labels for PARE: conventions, cameras, flags, errors, and agreement with the world's ground truth."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from pipeline.body.model import BodyModel
from pipeline.camera import estimate_translation
from pipeline.datasets import AnnotationError, load_annotations
from pipeline.io import save_npz
from pipeline.partseg import (
    CAMERA_DATASET,
    CAMERA_ESTIMATED,
    PartLabelRenderer,
    PartsegSettings,
    face_part_labels,
    label_agreement,
    part_branch_labels,
    write_index,
    write_shard,
)
from pipeline.raster import rasterize


def test_a_face_takes_the_minimum_part_of_its_vertices():
    parts = np.array([5, 2, 9, 2, 7])
    faces = np.array([[0, 1, 2], [2, 4, 0], [3, 4, 2]])
    np.testing.assert_array_equal(face_part_labels(parts, faces), [2, 5, 2])


def test_rendered_map_follows_the_face_convention(demo_body):
    """A pixel's label is 1 + the minimum vertex part of the face that covers it."""
    model = BodyModel(demo_body)
    renderer = PartLabelRenderer(model, PartsegSettings(resolution=96))
    v = torch.as_tensor(demo_body.v_template * np.array([1, -1, -1]) + np.array([0, 0.1, 3.0]))
    K = np.array([[60.0, 0, 47.5], [0, 60.0, 47.5], [0, 0, 1]])
    fid = rasterize(v, torch.as_tensor(demo_body.f), torch.as_tensor(K), 96, 96).face_id.numpy()
    hit = fid >= 0
    expected = demo_body.part_labels[demo_body.f[fid[hit]]].min(axis=1) + 1
    np.testing.assert_array_equal(renderer.face_parts.numpy()[fid[hit]], expected)


def test_camera_estimate_recovers_a_known_translation():
    rng = np.random.default_rng(0)
    joints = rng.normal(0, 0.3, (24, 3))
    t_true = np.array([0.12, -0.3, 45.0])
    f, c = 5000.0, (111.5, 111.5)
    cam = joints + t_true
    keypoints = np.concatenate([cam[:, :2] / cam[:, 2:] * f + c, np.ones((24, 1))], axis=1)
    keypoints[[3, 7, 11], 2] = 0  # unannotated joints carry no weight, wherever they are
    keypoints[[3, 7, 11], :2] = 1e4
    np.testing.assert_allclose(estimate_translation(joints, keypoints, f, c), t_true, rtol=1e-9, atol=1e-9)
    noisy = keypoints.copy()
    noisy[:, :2] += rng.normal(0, 0.5, (24, 2))
    assert np.linalg.norm(estimate_translation(joints, noisy, f, c) - t_true) < 0.5
    few = keypoints.copy()
    few[4:, 2] = 0
    few[:4, 2] = [1, 1, 1, 0]
    assert estimate_translation(joints, few, f, c, min_joints=4) is None


def test_labels_reproduce_the_world_ground_truth(split, body_file):
    ann, gt = split
    renderer = PartLabelRenderer(BodyModel.from_file(body_file), PartsegSettings(resolution=gt["crop_parts"].shape[-1]))
    out = renderer.render(ann, range(len(ann)))
    labelled = ~out["absent"]
    assert (out["camera_source"][labelled] == CAMERA_DATASET).all()
    metrics = label_agreement(out["parts"][labelled], gt["crop_parts"][labelled])
    assert metrics["pixel_agreement"] > 0.999 and metrics["miou"] > 0.99


def test_rows_without_smpl_are_flagged_absent(split, body_file):
    ann, _ = split
    out = PartLabelRenderer(BodyModel.from_file(body_file), PartsegSettings()).render(ann, range(len(ann)))
    np.testing.assert_array_equal(out["absent"], ~ann.has_smpl)
    assert out["absent"].any()
    assert (out["parts"][out["absent"]] == 0).all() and all("has_smpl = 0" in r for r in out["reason"][out["absent"]])


def test_pyrender_backend_agrees_with_the_rasteriser(split, body_file):
    ann, _ = split
    body = BodyModel.from_file(body_file)
    fast = PartLabelRenderer(body, PartsegSettings()).render(ann, range(len(ann)))
    gl_renderer = PartLabelRenderer(body, PartsegSettings(backend="pyrender"))
    try:
        gl = gl_renderer.render(ann, range(len(ann)))
    finally:
        gl_renderer.close()
    assert (gl["parts"] == fast["parts"]).mean() > 0.999


def _without_camera(ann, tmp_path, name="nocam", **edits):
    arrays = {k: v.copy() for k, v in ann.arrays.items() if k not in ("cam_intrinsics", "transl")}
    for key, (row, value) in edits.items():
        arrays[key][row] = value
    path = tmp_path / f"{name}.npz"
    save_npz(path, arrays)
    return load_annotations(path, image_root=ann.image_root, name=name)


def test_estimated_camera_path_places_the_body(split, body_file, tmp_path):
    ann, gt = split
    nocam = _without_camera(ann, tmp_path)
    out = PartLabelRenderer(BodyModel.from_file(body_file), PartsegSettings()).render(nocam, range(len(nocam)))
    used = ~out["absent"] & ~out["skipped"]
    assert used.any() and (out["camera_source"][used] == CAMERA_ESTIMATED).all()
    assert (out["cam_t"][used, 2] > 10).all()  # focal 5000 puts the body tens of metres away
    pred, true = out["parts"][used] > 0, gt["crop_parts"][used] > 0
    assert (pred & true).sum() / (pred | true).sum() > 0.7  # silhouettes overlap despite the weak-perspective camera


def test_a_row_without_camera_or_joints_is_skipped_with_its_reason(split, body_file, tmp_path):
    ann, _ = split
    row = int(np.flatnonzero(ann.has_smpl)[0])
    nocam = _without_camera(ann, tmp_path, part=(row, np.zeros((24, 3))), openpose=(row, np.zeros((25, 3))))
    out = PartLabelRenderer(BodyModel.from_file(body_file), PartsegSettings()).render(nocam, range(len(nocam)))
    assert out["skipped"][row] and "fewer than 4 confident 2D joints" in out["reason"][row]


def test_a_corrupt_row_names_dataset_and_index(split, body_file, tmp_path):
    ann, _ = split
    row = int(np.flatnonzero(ann.has_smpl)[-1])
    broken = _without_camera(ann, tmp_path, name="broken_set", pose=(row, np.full(72, np.nan)))
    with pytest.raises(AnnotationError, match=rf"dataset broken_set .*row {row} .*pose has non-finite values"):
        PartLabelRenderer(BodyModel.from_file(body_file), PartsegSettings()).render(broken, range(len(broken)))


def test_shards_and_index_list_rows_without_labels(split, body_file, tmp_path):
    ann, _ = split
    shards = []
    for k, rows in enumerate((range(0, 4), range(4, 6))):
        shards.append(tmp_path / f"shard-{k:04d}.npz")
        write_shard(str(body_file), str(ann.path), str(ann.image_root), "demo_test", rows, str(shards[-1]), PartsegSettings())
    counts = write_index([str(s) for s in shards], str(tmp_path / "index.json"))
    index = json.loads((tmp_path / "index.json").read_text())
    assert counts == {"rows": 6, "labelled": int(ann.has_smpl.sum()), "absent": int((~ann.has_smpl).sum()), "skipped": 0}
    assert [s["start"] for s in index["shards"]] == [0, 4]
    assert sorted(r["index"] for r in index["without_labels"]) == list(np.flatnonzero(~ann.has_smpl))
    with pytest.raises(ValueError, match="has 6 rows"):
        write_shard(str(body_file), str(ann.path), str(ann.image_root), "demo_test", range(4, 8), str(tmp_path / "x.npz"), PartsegSettings())


def test_part_branch_map_derives_from_the_crop_map(split):
    _, gt = split
    parts = gt["crop_parts"]
    small = part_branch_labels(parts, 56)
    assert small.shape == (len(parts), 56, 56)
    np.testing.assert_array_equal(small[:, 10, 20], parts[:, 42, 82])  # the crop pixel under the centre
    for a, b in zip(small, parts):
        assert set(np.unique(a)) <= set(np.unique(b))


def test_missing_headless_gl_names_the_package_to_install():
    """With a platform that cannot work here (OSMesa without libosmesa6), the error says what to install."""
    code = ("from pipeline.render import offscreen_renderer, HeadlessGLError\n"
            "try:\n    offscreen_renderer(8, 8)\nexcept HeadlessGLError as e:\n    print(e)\nelse:\n    print('WORKS')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYOPENGL_PLATFORM": "osmesa"})
    if "WORKS" in proc.stdout:
        pytest.skip("OSMesa is installed here: no failure to observe")
    assert "apt-get install libosmesa6" in proc.stdout, proc.stdout + proc.stderr
