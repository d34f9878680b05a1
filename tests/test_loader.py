"""The training loader over packed files: stored fields come back unchanged without augmentation; a
flipped sample's part labels equal the labels rendered for the mirrored body; pose rotation and flip
agree with the body model; batches mix files with fixed counts and do not depend on the workers."""

import dataclasses

import numpy as np
import pytest
import torch

from pipeline.camera import camera_z_rotation
from pipeline.crop import crop_matrix, transform_points
from test_pack import make_pack, packed_inputs  # noqa: F401 - the packed-inputs fixture
from trainers.augment import (
    AugmentSettings,
    SampleParams,
    flip_pose,
    label_to_output_matrix,
    paste_occluders,
    OccluderSet,
    rotate_global_orient,
)
from trainers.packed import MixedBatchSampler, PackedDataset, mixed_loader

NONE = AugmentSettings(enabled=False)


def only(**kw) -> AugmentSettings:
    """Augmentation with everything off except what is given."""
    base = dict(flip_prob=0.0, rotation_prob=0.0, scale_std=0.0, colour_noise=0.0, occlusion_prob=0.0, random_crop_prob=0.0)
    return AugmentSettings(**{**base, **kw})


@pytest.fixture(scope="module")
def packed(tmp_path_factory, split, body_file, packed_inputs):  # noqa: F811
    root = tmp_path_factory.mktemp("packed")
    a, _ = make_pack(root, split, body_file, packed_inputs, name="a.h5")
    b, _ = make_pack(root, split, body_file, packed_inputs, image_format="raw", name="b.h5")
    return str(a), str(b)


def test_unaugmented_sample_is_the_stored_crop(packed, split):
    import h5py

    from pipeline.labelsets import cleaned_from_shard

    ann, _ = split
    data = PackedDataset([packed[1]], NONE)
    with h5py.File(packed[1], "r") as f:
        for j in range(len(ann)):
            s = data.sample(0, j, 0, 0, NONE)
            C, R = f.attrs["image_resolution"], f.attrs["label_resolution"]
            d = (C - R) // 2
            np.testing.assert_array_equal(s["image"].permute(1, 2, 0).numpy(), f["images"][j][d:d + R, d:d + R])
            if f["flags/has_parts"][j]:
                np.testing.assert_array_equal(s["part_labels"].numpy(), f["parts/labels"][j])
            else:
                assert not s["has_parts"] and (s["part_labels"] == 255).all()
            if f["flags/has_parser"][j]:
                expected = cleaned_from_shard(f["parsing/labels"][j:j + 1], f["parsing/box"][j:j + 1])[0]
                np.testing.assert_array_equal(s["parser_labels"].numpy(), expected)
            np.testing.assert_array_equal(s["pose"].numpy(), ann["pose"][j].astype(np.float32))
            np.testing.assert_array_equal(s["betas"].numpy(), ann["shape"][j].astype(np.float32))
            kp = np.concatenate([ann["openpose"][j], ann["part"][j]])
            uv = (2 * transform_points(kp[:, :2], crop_matrix(ann["center"][j], ann["scale"][j], R)) + 1) / R - 1
            seen = kp[:, 2] > 0
            np.testing.assert_allclose(s["keypoints"].numpy()[seen, :2], uv[seen], atol=1e-5)


def test_flipped_part_labels_equal_the_labels_of_the_mirrored_body(packed, split, body_file, tmp_path):
    """The loader's flipped part labels against two renders of the mirrored scene:
    - the body's own vertices mirrored in the camera frame (x -> -x, principal point mirrored about the
      crop centre), faces relabelled left <-> right: equal up to rasterisation ties at edges;
    - the body posed with the flipped SMPL pose (x of the translation negated): equal up to the demo
      body's own asymmetry (a marching-cubes mesh: mirror vertices 1 cm apart, 2.3% of vertices take the
      mirrored part), so a lower bound."""
    from pipeline.body.model import BodyModel
    from pipeline.camera import crop_intrinsics
    from pipeline.datasets import load_annotations
    from pipeline.partseg import PartLabelRenderer, PartsegSettings
    from trainers.augment import part_label_flip_lut

    ann, _ = split
    model = BodyModel.from_file(body_file)
    renderer = PartLabelRenderer(model, PartsegSettings(resolution=224))
    arrays = {k: v.copy() for k, v in ann.arrays.items()}
    arrays["pose"] = np.stack([flip_pose(p) for p in ann["pose"]])
    arrays["transl"][:, 0] *= -1
    arrays["cam_intrinsics"][:, 0, 2] = 2 * ann["center"][:, 0] - ann["cam_intrinsics"][:, 0, 2]
    np.savez(tmp_path / "mirrored.npz", **arrays)
    mirrored = load_annotations(tmp_path / "mirrored.npz", image_root=ann.image_root)
    posed = renderer.render(mirrored, range(len(ann)))["parts"]
    lut = torch.as_tensor(part_label_flip_lut())

    data = PackedDataset([packed[0]], only(flip_prob=1.0))
    compared = 0
    for j in range(len(ann)):
        s = data.sample(0, j, seed=j, step=0, settings=data.augment)
        assert bool(s["flip"])
        if not s["has_parts"]:
            continue
        pose = torch.as_tensor(ann["pose"][j], dtype=torch.float32)[None]
        body = model(betas=torch.as_tensor(ann["shape"][j][:10], dtype=torch.float32)[None], body_pose=pose[:, 3:],
                     global_orient=pose[:, :3], transl=torch.as_tensor(ann["transl"][j], dtype=torch.float32)[None])
        vertices = body.vertices[0].double() * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
        K = crop_intrinsics(arrays["cam_intrinsics"][j], ann["center"][j], ann["scale"][j], 224)
        fid = renderer._face_ids(vertices, K)
        exact = torch.where(fid >= 0, lut[renderer.face_parts[fid.clamp(min=0)].long()], 0).numpy()
        ours = s["part_labels"].numpy()
        for theirs, bound in ((exact, 0.995), (posed[j], 0.95)):
            union = (ours > 0) | (theirs > 0)
            agreement = (ours[union] == theirs[union]).mean()
            assert agreement > bound, (j, agreement, bound)
        assert len(np.unique(ours[ours > 0])) > 8  # a body, not an empty map
        compared += 1
    assert compared >= 3


def test_pose_flip_and_rotation_move_the_body_as_the_image_does(demo_model):
    rng = np.random.default_rng(1)
    pose = rng.normal(0, 0.3, 72)
    pose[:3] = [2.8, 0.3, -0.2]  # near a half turn, the usual global orientation of a camera-frame body
    betas = torch.zeros(1, 10)

    def verts(p):
        p = torch.as_tensor(p, dtype=torch.float32)[None]
        out = demo_model(betas=betas, body_pose=p[:, 3:], global_orient=p[:, :3])
        return out.vertices[0].numpy().astype(np.float64), out.joints[0, 0].numpy().astype(np.float64)

    v, root = verts(pose)
    for degrees in (-50.0, 17.0, 90.0):
        v_rot, root_rot = verts(rotate_global_orient(pose, degrees))
        np.testing.assert_allclose(v_rot - root_rot, (v - root) @ camera_z_rotation(degrees).T, atol=2e-5)
    # mirror: the flipped pose's vertices are the mirror image of the original's (as a point set)
    v_flip, root_flip = verts(flip_pose(pose))
    mirrored = (v - root) * np.array([-1, 1, 1])
    from scipy.spatial import cKDTree

    dist, _ = cKDTree(mirrored).query(v_flip - root_flip)
    assert np.percentile(dist, 99) < 0.02 and np.abs(flip_pose(flip_pose(pose)) - pose).max() == 0


def test_geometry_is_shared_by_image_labels_and_keypoints(packed, split):
    """With rotation, scale, crop and flip, a keypoint lands where the same map sends its pixel."""
    ann, _ = split
    data = PackedDataset([packed[0]], AugmentSettings(occlusion_prob=0.0))
    for seed in range(5):
        s = data.sample(0, 0, seed, 10_000, data.augment)
        from trainers.augment import draw_params

        p = draw_params(data.augment, np.random.default_rng(seed), 10_000)
        M = label_to_output_matrix(p, 224, 224) @ crop_matrix(ann["center"][0], ann["scale"][0], 224)
        kp = np.concatenate([ann["openpose"][0], ann["part"][0]])
        uv = (2 * transform_points(kp[:, :2], M) + 1) / 224 - 1
        perm = data._joints_perm if p.flip else np.arange(49)
        seen = kp[perm, 2] > 0
        np.testing.assert_allclose(s["keypoints"].numpy()[seen, :2], uv[perm][seen], atol=1e-5)
        assert float(s["rotation"]) == pytest.approx(p.rotation) and bool(s["flip"]) == p.flip


def test_occluders_hide_parser_labels_and_start_at_their_step(packed):
    settings = only(occlusion_prob=1.0, occlusion_from_step=100)
    data = PackedDataset([packed[0]], settings)
    before = data.sample(0, 1, 3, 99, settings)
    after = data.sample(0, 1, 3, 100, settings)
    assert not before["occluded"].any() and after["occluded"].any()
    hidden = after["occluded"].numpy()
    assert (after["parser_labels"].numpy()[hidden] == 255).all()
    assert (after["part_labels"].numpy()[hidden] == before["part_labels"].numpy()[hidden]).all()
    assert (after["image"] != before["image"]).any()
    # PARE's random crop: from its step on, with probability 1, the view is a sub-box (zoomed in)
    crop = only(random_crop_prob=1.0, random_crop_from_step=5)
    zoomed = PackedDataset([packed[0]], crop).sample(0, 1, 3, 5, crop)
    plain = PackedDataset([packed[0]], crop).sample(0, 1, 3, 4, crop)
    spread = lambda s: np.ptp(s["keypoints"].numpy()[s["keypoints"].numpy()[:, 2] > 0, :2], axis=0).max()  # noqa: E731
    from trainers.augment import draw_params

    side = draw_params(crop, np.random.default_rng(3), 5).crop[2]
    assert 0.5 <= side <= 0.7 and spread(zoomed) == pytest.approx(spread(plain) / side, rel=1e-4)


def test_occluder_folder(tmp_path):
    from PIL import Image

    rgba = np.zeros((20, 10, 4), np.uint8)
    rgba[5:15, 2:8] = [200, 10, 10, 255]
    Image.fromarray(rgba).save(tmp_path / "object.png")
    image, labels = np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64), np.uint8)
    mask = paste_occluders(image, labels, [7], only(occluders=str(tmp_path)), OccluderSet(str(tmp_path)))
    assert mask.any() and np.abs(image[mask].astype(int) - [200, 10, 10]).max() <= 2 and (labels[mask] == 255).all() and (labels[~mask] == 0).all()
    Image.fromarray(rgba[..., :3]).save(tmp_path / "object.png")
    with pytest.raises(ValueError, match="not RGBA"):
        paste_occluders(image, labels, [7], only(occluders=str(tmp_path)), OccluderSet(str(tmp_path)))


def test_batches_mix_files_with_fixed_counts():
    sampler = MixedBatchSampler([50, 7], [0.6, 0.4], batch_size=10, seed=3, steps=20)
    batches = list(sampler)
    assert len(batches) == 20
    for b in batches:
        assert [k for k, *_ in b].count(0) == 6 and [k for k, *_ in b].count(1) == 4
    rows1 = [r for b in batches for k, r, *_ in b if k == 1]
    assert sorted(rows1[:7]) == list(range(7))  # every row of a pass before any repeats
    assert [b[0][3] for b in batches] == list(range(20))
    assert list(MixedBatchSampler([50, 7], [0.6, 0.4], 10, seed=3, steps=20)) == batches
    assert list(MixedBatchSampler([50, 7], [0.6, 0.4], 10, seed=4, steps=20)) != batches
    with pytest.raises(ValueError, match="mixing ratios"):
        MixedBatchSampler([5, 5], [0.5], 4)


@pytest.mark.slow
def test_batches_do_not_depend_on_the_workers(packed):
    def run(workers):
        loader = mixed_loader(list(packed), [0.5, 0.5], batch_size=4, seed=11, num_workers=workers, steps=3,
                              augment=AugmentSettings())
        return list(loader)

    def per_sample(workers):  # per-sample fetch + default collate: the same batches
        data = PackedDataset(list(packed), AugmentSettings())
        sampler = MixedBatchSampler(data.lengths, [0.5, 0.5], 4, seed=11, steps=3, usable=[f.usable for f in data.files])
        return list(torch.utils.data.DataLoader(data, batch_sampler=sampler, num_workers=workers))

    a, b, c = run(0), run(2), per_sample(2)
    assert len(a) == len(b) == len(c) == 3
    for x, y in list(zip(a, b)) + list(zip(a, c)):
        assert x.keys() == y.keys()
        for key in x:
            assert torch.equal(x[key], y[key]), key
    assert any(bool(x["flip"].any()) for x in a) and any(not bool(x["flip"].all()) for x in a)


def test_rows_without_a_photo_are_not_sampled(tmp_path, split, body_file, packed_inputs):  # noqa: F811
    import shutil

    from trainers.packed import PackedFileError

    ann, _ = split
    images = tmp_path / "images"
    shutil.copytree(ann.image_root, images)
    (images / ann["imgname"][2]).unlink()
    out, counts = make_pack(tmp_path, split, body_file, packed_inputs, image_root=images)
    data = PackedDataset([str(out)], NONE)
    assert data.lengths == [len(ann) - 1] and 2 not in data.files[0].usable
    with pytest.raises(PackedFileError, match="row 2 has no image"):
        data.sample(0, 2, 0, 0, NONE)
    rows = {r for b in MixedBatchSampler(data.lengths, None, 5, steps=4, usable=[data.files[0].usable]) for _, r, *_ in b}
    assert 2 not in rows and rows <= set(range(len(ann)))


def test_bad_files_fail_with_the_path(tmp_path):
    from trainers.packed import PackedFileError

    with pytest.raises(PackedFileError, match="no such packed file"):
        PackedDataset([str(tmp_path / "none.h5")])
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(PackedFileError, match="junk.h5"):
        PackedDataset([str(tmp_path / "junk.h5")])


def test_settings_are_checked():
    with pytest.raises(ValueError, match="probability"):
        AugmentSettings(flip_prob=1.5)
    with pytest.raises(ValueError, match="random_crop_cut"):
        AugmentSettings(random_crop_cut=(0.5, 0.3))
    assert dataclasses.asdict(SampleParams())["flip"] is False


def test_a_resumed_sampler_yields_what_an_uninterrupted_one_yields():
    from trainers.packed import MixedBatchSampler

    whole = list(MixedBatchSampler([7, 5], [0.6, 0.4], batch_size=4, seed=3, steps=9))
    resumed = list(MixedBatchSampler([7, 5], [0.6, 0.4], batch_size=4, seed=3, steps=4, start_step=5))
    assert resumed == whole[5:]
    assert list(MixedBatchSampler([7, 5], [0.6, 0.4], batch_size=4, seed=4, steps=9)) != whole


def test_distributed_shares_partition_every_global_batch():
    from trainers.packed import MixedBatchSampler

    whole = list(MixedBatchSampler([7, 5], [0.6, 0.4], batch_size=4, seed=3, steps=5))
    shares = [list(MixedBatchSampler([7, 5], [0.6, 0.4], batch_size=4, seed=3, steps=5, rank=r, world=2)) for r in (0, 1)]
    for b, batch in enumerate(whole):
        assert sorted(shares[0][b] + shares[1][b]) == sorted(batch) and len(shares[0][b]) == len(shares[1][b]) == 2
    with pytest.raises(ValueError, match="equal per-process shares"):
        MixedBatchSampler([7, 5], batch_size=5, world=2)
