"""Packed HDF5 files: every field round-trips; verify catches truncation, tampering and changed inputs;
a missing image is recorded, not zero-filled."""

import json
import shutil

import h5py
import numpy as np
import pytest
import torch

from pipeline import pack
from pipeline.crop import crop_matrix, warp


@pytest.fixture(scope="module")
def packed_inputs(tmp_path_factory, split, body_file):
    """Part-label and parser shards (two each) for the 6-image demo split, a parser weights file."""
    from models.graphonomy import build
    from pipeline import parsing, partseg
    from pipeline.human_parser import ParsingSettings

    ann, _ = split
    root = tmp_path_factory.mktemp("labels")
    ps = [str(root / f"parts-{k}.npz") for k in range(2)]
    pp = [str(root / f"parse-{k}.npz") for k in range(2)]
    torch.manual_seed(0)
    weights = root / "parser.pth"
    torch.save(build("transfer", width=0.0625).state_dict(), weights)
    settings = ParsingSettings.preset("dsr", scales=(1.0,), input_resolution=64)
    for k, rows in enumerate((range(0, 4), range(4, 6))):
        partseg.write_shard(str(body_file), str(ann.path), str(ann.image_root), "demo_test", rows, ps[k], partseg.PartsegSettings())
        parsing.write_shard(str(weights), "transfer", str(ann.path), str(ann.image_root), "demo_test", rows, pp[k], settings)
    partseg.write_index(ps, str(root / "parts.json"))
    parsing.write_index(pp, str(root / "parsing.json"))
    return {"parts": str(root / "parts.json"), "parsing": str(root / "parsing.json"), "weights": str(weights)}


def make_pack(tmp_path, split, body_file, packed_inputs, image_root=None, image_format="jpeg", name="p.h5"):
    ann, _ = split
    out = tmp_path / name
    counts = pack.pack_split("demo_test", str(ann.path), str(image_root or ann.image_root), str(out),
                             pack.PackSettings(image_format=image_format), packed_inputs["parts"], packed_inputs["parsing"],
                             str(body_file), packed_inputs["weights"], None, {"labels": {"resolution": 224}}, progress=False)
    return out, counts


@pytest.mark.parametrize("image_format", ["jpeg", "raw"])
def test_every_field_round_trips(tmp_path, split, body_file, packed_inputs, image_format):
    from pipeline.shards import load_shards

    ann, _ = split
    out, counts = make_pack(tmp_path, split, body_file, packed_inputs, image_format=image_format)
    parts = load_shards(packed_inputs["parts"], ("parts", "absent", "skipped", "cam_t"))
    parsed = load_shards(packed_inputs["parsing"], ("labels", "box", "min_clothing_valid", "no_keypoints", "skipped"))
    with h5py.File(out, "r") as f:
        for key, value in ann.arrays.items():
            stored = f["annotations"][key][()]
            if value.dtype.kind in "US":
                assert [s.decode() for s in stored] == [str(v) for v in value], key
            else:
                np.testing.assert_array_equal(stored, value, err_msg=key)
        np.testing.assert_array_equal(f["parts/labels"][()], parts["parts"])
        for key in ("absent", "skipped", "cam_t"):
            np.testing.assert_array_equal(f["parts"][key][()], parts[key])
        np.testing.assert_array_equal(f["parsing/labels"][()], parsed["labels"])
        for key in ("box", "min_clothing_valid", "no_keypoints", "skipped"):
            np.testing.assert_array_equal(f["parsing"][key][()], parsed[key])
        np.testing.assert_array_equal(f["flags/has_smpl"][()], ann.has_smpl)
        assert f["image_ok"][()].all() and counts["images_missing"] == 0
        C = int(f.attrs["image_resolution"])
        assert C == 280 and int(f.attrs["label_resolution"]) == 224
        # the stored crop is the photo in the crop frame enlarged by `context`; the label crop is its centre
        for i in range(len(ann)):
            stored = pack.decode_jpeg(f["images"][i]) if image_format == "jpeg" else f["images"][i]
            from PIL import Image

            photo = np.asarray(Image.open(ann.image_path(i)).convert("RGB"))
            expected = warp(photo, crop_matrix(ann["center"][i], ann["scale"][i] * 1.25, C), (C, C), nearest=False)
            error = np.abs(stored.astype(int) - expected.astype(int))
            assert error.mean() < (2.5 if image_format == "jpeg" else 1e-9)
            centre = stored[28:252, 28:252]
            label_crop = ann.crop(i, 224)
            assert np.abs(centre.astype(int) - label_crop.astype(int)).mean() < (3 if image_format == "jpeg" else 1.01)
        inputs = json.loads(f.attrs["inputs"])
        assert set(inputs) == {"annotations", "images", "body_model", "part_labels", "parser_labels", "parser_weights"}
        assert inputs["body_model"]["sha256"] == pack.sha256_file(body_file)
    faults, _ = pack.verify(out)
    assert faults == []


def test_verify_catches_truncation_tampering_and_changed_inputs(tmp_path, split, body_file, packed_inputs):
    out, _ = make_pack(tmp_path, split, body_file, packed_inputs)
    truncated = tmp_path / "truncated.h5"
    data = out.read_bytes()
    truncated.write_bytes(data[: len(data) * 2 // 3])
    faults, _ = pack.verify(truncated)
    assert faults and ("truncated" in faults[0] or "failed" in faults[0] or "differs" in " ".join(faults))
    assert pack.main(["verify", str(truncated)]) == 1
    tampered = tmp_path / "tampered.h5"
    shutil.copy(out, tampered)
    with h5py.File(tampered, "r+") as f:
        f["parts/labels"][0, 100, 100] = 3 if f["parts/labels"][0, 100, 100] != 3 else 4
    faults, _ = pack.verify(tampered)
    assert any("parts/labels: content differs" in x for x in faults)
    # an input that changed after packing: the parser weights here
    changed = tmp_path / "changed.h5"
    shutil.copy(out, changed)
    weights_copy = tmp_path / "weights.pth"
    shutil.copy(packed_inputs["weights"], weights_copy)
    with h5py.File(changed, "r+") as f:
        inputs = json.loads(f.attrs["inputs"])
        inputs["parser_weights"]["path"] = str(weights_copy)
        f.attrs["inputs"] = json.dumps(inputs)
    assert pack.verify(changed)[0] == []
    weights_copy.write_bytes(weights_copy.read_bytes() + b"\0")
    faults, _ = pack.verify(changed)
    assert any("input parser_weights changed since packing" in x for x in faults)
    assert pack.main(["verify", str(out)]) == 0


def test_a_missing_image_is_recorded_not_zero_filled(tmp_path, split, body_file, packed_inputs):
    ann, _ = split
    images = tmp_path / "images"
    shutil.copytree(ann.image_root, images)
    (images / str(ann["imgname"][2])).unlink()
    out, counts = make_pack(tmp_path, split, body_file, packed_inputs, image_root=images)
    assert counts["images_missing"] == 1
    with h5py.File(out, "r") as f:
        assert list(f["image_ok"][()]) == [True, True, False, True, True, True]
        assert "missing image file" in f["image_error"][2].decode() and len(f["images"][2]) == 0
        assert not f["flags/has_parts"][2] and not f["flags/has_image"][2]
    faults, notes = pack.verify(out)
    assert faults == [] and any("1 rows without an image" in n for n in notes)
