"""The demo world: annotations in the real format, ground truth that agrees with itself, determinism."""

import json

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from conftest import REPO, SETTINGS
from pipeline.camera import RigSettings
from pipeline.crop import crop_matrix, warp
from pipeline.datasets import (
    AnnotationError,
    keypoints_center_scale,
    load_annotations,
    read_bbox_json,
    read_openpose_json,
)
from pipeline.io import save_npz
from pipeline.labelsets import CIHP
from pipeline.raster import rasterize
from pipeline.world.images import write_image_shard
from pipeline.world.scans import write_scan_index, write_scan_shard

REAL = REPO.parent / "shared" / "fixtures" / "real"


def full_map(ann, gt, key, i):
    return np.asarray(Image.open(ann.image_root / str(gt[f"full_{key}"][i])))


def test_annotations_have_the_spin_format(split):
    ann, gt = split
    assert len(ann) == 6
    for key, shape in {"center": (2,), "pose": (72,), "shape": (10,), "S": (24, 4), "part": (24, 3), "openpose": (25, 3)}.items():
        assert ann[key].shape == (6, *shape)
    assert set(ann["gender"]) == {"n"}
    assert ann.has_smpl.any() and not ann.has_smpl.all()  # no_smpl_fraction rows exist
    assert (ann["pose"][~ann.has_smpl] == 0).all()
    for i in range(len(ann)):
        image = Image.open(ann.image_path(i))
        assert image.format == "JPEG" and 200 < max(image.size) < 500
        assert full_map(ann, gt, "parts", i).shape == image.size[::-1]


def test_keypoints_project_inside_the_ground_truth_silhouette(split):
    ann, gt = split
    checked = 0
    for i in range(len(ann)):
        silhouette = full_map(ann, gt, "parts", i) > 0
        h, w = silhouette.shape
        grown = silhouette.copy()  # surface landmarks sit on the outline: allow one pixel
        grown[1:] |= silhouette[:-1]; grown[:-1] |= silhouette[1:]; grown[:, 1:] |= silhouette[:, :-1]; grown[:, :-1] |= silhouette[:, 1:]  # noqa: E702
        for x, y, visible in ann["part"][i]:
            if visible:
                assert grown[int(round(y)), int(round(x))], (i, x, y)
                checked += 1
        for x, y, conf in ann["openpose"][i]:
            if conf > 0.3:  # confident detections: within the detector's noise of the body
                r, c = int(np.clip(round(y), 0, h - 1)), int(np.clip(round(x), 0, w - 1))
                near = grown[max(r - 6, 0): r + 7, max(c - 6, 0): c + 7]
                assert near.any(), (i, x, y)
    assert checked > 40


def test_visible_flags_follow_occlusion(split):
    ann, gt = split
    for i in range(len(ann)):
        instance = full_map(ann, gt, "instance", i)
        h, w = instance.shape
        for x, y, visible in ann["part"][i]:
            r, c = int(round(y)), int(round(x))
            inside = 0 <= r < h and 0 <= c < w
            assert bool(visible) == (inside and instance[r, c] == 1) or not visible


def test_crop_and_full_frame_maps_agree_after_warping(split):
    ann, gt = split
    res = gt["crop_parts"].shape[-1]
    for i in range(len(ann)):
        matrix = crop_matrix(ann["center"][i], ann["scale"][i], res)
        for key in ("parts", "cihp", "instance"):
            full = full_map(ann, gt, key, i)
            warped = warp(full, matrix, (res, res), nearest=True, fill=255)
            inside = warped != 255  # crop pixels that fall outside the photo have no full-frame value
            agreement = (warped[inside] == gt[f"crop_{key}"][i][inside]).mean()
            assert agreement > 0.97, (i, key, agreement)


def test_ground_truth_labels_are_in_range_and_plausible(split):
    ann, gt = split
    assert gt["crop_parts"].max() <= 24 and gt["crop_cihp"].max() <= 19
    present = set(np.unique(gt["crop_cihp"]))
    assert {CIHP["Face"], CIHP["Left-shoe"], CIHP["Right-shoe"]} <= present
    assert gt["occluded_fraction"].max() >= 0.1  # every image was given an occluder
    # clothing labels are modal, parts amodal: occluded body pixels have parts but no clothing
    occluded = (gt["crop_instance"] == 3) & (gt["crop_parts"] > 0)
    assert occluded.any() and (gt["crop_cihp"][occluded] == 0).all()


def test_same_seed_same_files_other_seed_other_files(tmp_path, body_file, split):
    ann, _ = split
    again = tmp_path / "again"
    write_image_shard(body_file, again, "test", range(0, 3), seed=0, settings=SETTINGS, progress=False)
    original = ann.image_root / "shards" / "test-0000"
    for name in ("images/000000.jpg", "images/000002.jpg", "gt/000001_cihp.png"):
        assert (again / name).read_bytes() == (original / name).read_bytes(), name
    with np.load(again / "annotations.npz") as a, np.load(original / "annotations.npz") as b:
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])
    other = tmp_path / "other"
    write_image_shard(body_file, other, "test", range(0, 3), seed=1, settings=SETTINGS, progress=False)
    assert (other / "images/000000.jpg").read_bytes() != (original / "images/000000.jpg").read_bytes()


def test_one_reader_for_real_and_demo_files(tmp_path, split):
    """A SPIN-format file made from the real fixtures (box + OpenPose output) reads through the same loader."""
    if not REAL.is_dir():
        pytest.skip(f"real fixtures not found at {REAL}")
    openpose = read_openpose_json(REAL / "spin_im1010_openpose.json")
    assert openpose.shape == (1, 25, 3) and openpose[0, :, 2].max() > 0.5
    center, scale = read_bbox_json(REAL / "spin_im1010_bbox.json")
    np.testing.assert_allclose(center, [17 + 117 / 2, 37 + 142 / 2])
    assert scale == pytest.approx(142 * 1.2 / 200)
    kp_center, kp_scale = keypoints_center_scale(openpose[0], threshold=0.1)
    assert np.linalg.norm(kp_center - center) < 30 and 0.5 < kp_scale / scale < 1.5
    coco = read_openpose_json(REAL / "dsr_COCO_val_0544_openpose.json")
    assert coco.shape[0] == 8
    real = tmp_path / "real.npz"
    save_npz(real, {"imgname": np.array(["spin_im1010.jpg"]), "center": center[None], "scale": np.array([scale]),
                    "openpose": openpose[:1], "part": np.zeros((1, 24, 3))})
    loaded = load_annotations(real, image_root=REAL, name="spin_example")
    assert loaded.image_path(0).is_file() and not loaded.has_smpl.any()
    demo, _ = split
    assert type(loaded) is type(demo)


def test_bad_rows_and_files_are_named(tmp_path):
    path = tmp_path / "broken.npz"
    np.savez(path, imgname=np.array(["a.jpg", "b.jpg"]), center=np.zeros((2, 2)), scale=np.array([1.0, -1.0]))
    with pytest.raises(AnnotationError, match=r"dataset broken .* row 1 \(b.jpg\): scale must be a positive number"):
        load_annotations(path)
    np.savez(path, imgname=np.array(["a.jpg"]), center=np.zeros((1, 2)), scale=np.ones(1), pose=np.zeros((1, 69)))
    with pytest.raises(AnnotationError, match=r"'pose' has shape \(1, 69\), expected \(1, 72\)"):
        load_annotations(path)
    np.savez(path, imgname=np.array(["a.jpg"], dtype=object), center=np.zeros((1, 2)), scale=np.ones(1))
    with pytest.raises(AnnotationError, match="cannot read without pickle"):
        load_annotations(path)


@pytest.fixture(scope="module")
def scans(tmp_path_factory, body_file):
    root = tmp_path_factory.mktemp("scans")
    shard = root / "shard-0000"
    write_scan_shard(body_file, shard, range(0, 2), seed=0, rig=RigSettings(views=4, resolution=256), progress=False)
    write_scan_index([shard], root, root / "index.json")
    return root, json.loads((root / "index.json").read_text())["scans"]


def test_scan_layout_fit_and_rig(scans, demo_model, demo_body):
    root, index = scans
    assert len(index) == 2
    for row in index:
        mesh = trimesh.load(root / row["mesh"], process=False)
        assert len(mesh.visual.vertex_colors) == len(mesh.vertices) > 4 * len(demo_body.v_template) * 0.9
        with np.load(root / row["fit"]) as fit:
            body = demo_model(**{k: torch.as_tensor(fit[k][None], dtype=torch.float32)
                                 for k in ("betas", "body_pose", "global_orient", "transl")}).vertices[0].detach().numpy()
        # the scan is the fitted body pushed outwards by its garments: never inside, at most a few cm off
        gap = mesh.vertices[: len(body)] - body
        normals = trimesh.Trimesh(body, demo_body.f, process=False).vertex_normals
        assert (np.einsum("ij,ij->i", gap, normals) > -1e-6).all() and np.linalg.norm(gap, axis=1).max() < 0.03
        labels = np.load(root / row["gt_vertex_labels"])
        assert labels.shape == (len(body),) and labels.max() < 20
        views = json.loads((root / row["cameras"]).read_text())["views"]
        assert len(views) == 4
        for view in views:
            K, R, t = (np.asarray(view[k]) for k in ("K", "R", "t"))
            np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-9)
            r = rasterize(torch.as_tensor(mesh.vertices @ R.T + t), torch.as_tensor(mesh.faces), torch.as_tensor(K), 256, 256)
            ys, xs = np.nonzero(r.mask.numpy())
            assert 0.6 < (ys.max() - ys.min()) / 256 < 0.98  # the whole body, large in the frame
            assert abs(xs.mean() - 127.5) < 40


def test_shard_size_does_not_change_the_data(tmp_path, body_file, split):
    ann, _ = split
    whole = tmp_path / "whole"
    write_image_shard(body_file, whole, "test", range(0, 6), seed=0, settings=SETTINGS, progress=False)
    second_shard = ann.image_root / "shards" / "test-0001"  # indices 3..5 with shard size 3
    for index in (3, 5):
        assert (whole / f"images/{index:06d}.jpg").read_bytes() == (second_shard / f"images/{index:06d}.jpg").read_bytes()
