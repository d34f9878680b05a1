"""Bad inputs stop the stage that meets them with a message naming the file and the fix: non-finite
keypoints, a dataset none of whose images exists, a packed file damaged inside."""

import shutil

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from pipeline import pack, parsing, partseg
from pipeline.datasets import AnnotationError, load_annotations
from pipeline.human_parser import ParsingSettings
from pipeline.io import save_npz
from test_pack import make_pack, packed_inputs  # noqa: F401 - the packed-inputs fixture
from trainers.packed import PackedDataset, PackedFileError

ROWS = 3


def tiny_dataset(root, name="tiny", images=True, **edits):
    """ROWS photos of 64 x 64 pixels and their annotation file (a box and a few confident OpenPose
    joints per row); `edits`: key=(row, value) to damage a row."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    openpose = np.zeros((ROWS, 25, 3))
    openpose[:, :8] = np.concatenate([rng.uniform(16, 48, (ROWS, 8, 2)), np.ones((ROWS, 8, 1))], axis=2)
    arrays = {"imgname": np.array([f"img{i}.png" for i in range(ROWS)]), "center": np.full((ROWS, 2), 32.0),
              "scale": np.full(ROWS, 0.3), "openpose": openpose, "part": np.zeros((ROWS, 24, 3))}
    for key, (row, value) in edits.items():
        arrays[key][row] = value
    if images:
        for i in range(ROWS):
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / f"img{i}.png")
    save_npz(root / f"{name}.npz", arrays)
    return root / f"{name}.npz"


@pytest.fixture(scope="module")
def tiny_parser(tmp_path_factory):
    from models.graphonomy import build

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("parser") / "parser.pth"
    torch.save(build("transfer", width=0.0625).state_dict(), path)
    return str(path)


PARSER = ParsingSettings.preset("dsr", scales=(1.0,), input_resolution=64)


def run_parsing(weights, annotations, images_root, out):
    return parsing.write_shard(weights, "transfer", str(annotations), str(images_root), "tiny", range(ROWS), str(out), PARSER)


# -- non-finite keypoints ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key, value", [("openpose", (1, 2, np.nan)), ("part", (1, np.inf, 1.0))])
def test_non_finite_keypoints_stop_every_stage_naming_the_row(tmp_path, body_file, tiny_parser, key, value):
    joints = np.zeros((25 if key == "openpose" else 24, 3))
    joints[4] = value
    annotations = tiny_dataset(tmp_path, **{key: (1, joints)})
    expected = rf"dataset tiny \(.*tiny.npz\), row 1 \(img1.png\): {key} has non-finite values \(NaN or inf\) at joints \[4\].*damaged"
    with pytest.raises(AnnotationError, match=expected):
        partseg.write_shard(str(body_file), str(annotations), str(tmp_path), "tiny", range(ROWS), str(tmp_path / "p.npz"),
                            partseg.PartsegSettings())
    with pytest.raises(AnnotationError, match=expected):
        run_parsing(tiny_parser, annotations, tmp_path, tmp_path / "s.npz")
    with pytest.raises(AnnotationError, match=expected):
        pack.pack_split("tiny", str(annotations), str(tmp_path), str(tmp_path / "t.h5"), pack.PackSettings(), progress=False)
    assert not (tmp_path / "p.npz").exists() and not (tmp_path / "s.npz").exists() and not (tmp_path / "t.h5").exists()


def test_check_row_finds_a_non_finite_3d_joint(tmp_path):
    ann = load_annotations(tiny_dataset(tmp_path), name="tiny")
    ann.arrays["S"] = np.zeros((ROWS, 24, 4))
    ann.check_row(2)
    ann.arrays["S"][2, 7, 1] = np.nan
    with pytest.raises(AnnotationError, match=r"row 2 .*S has non-finite values \(NaN or inf\) at joints \[7\]"):
        ann.check_row(2)


# -- images that are not there ---------------------------------------------------------------------------


def test_a_shard_without_any_image_fails_naming_the_images_root(tmp_path, tiny_parser):
    annotations = tiny_dataset(tmp_path / "data")
    wrong = tmp_path / "elsewhere"
    wrong.mkdir()
    with pytest.raises(AnnotationError, match=rf"dataset tiny .*none of the images of rows 0-2 exists under the images root "
                                              rf"{wrong} .*check datasets.tiny.images"):
        run_parsing(tiny_parser, annotations, wrong, tmp_path / "s.npz")
    assert not (tmp_path / "s.npz").exists()
    # one missing photo among others stays a recorded skip
    (tmp_path / "data" / "img1.png").unlink()
    counts = run_parsing(tiny_parser, annotations, tmp_path / "data", tmp_path / "s.npz")
    assert counts["skipped"] == 1
    with np.load(tmp_path / "s.npz") as z:
        assert list(z["skipped"]) == [False, True, False] and z["reason"][1].startswith("missing image file")


def test_a_pack_without_any_readable_image_fails(tmp_path):
    annotations = tiny_dataset(tmp_path / "data")
    wrong = tmp_path / "elsewhere"
    wrong.mkdir()
    out = tmp_path / "t.h5"
    with pytest.raises(AnnotationError, match=rf"none of the images of rows 0-2 exists under the images root {wrong} "
                                              r".*check datasets.tiny.images"):
        pack.pack_split("tiny", str(annotations), str(wrong), str(out), pack.PackSettings(), progress=False)
    for i in range(ROWS):  # photos there but unreadable: no usable row either
        (wrong / f"img{i}.png").write_bytes(b"not a png")
    with pytest.raises(AnnotationError, match=r"none of the 3 images under .* could be read .*check datasets.tiny.images"):
        pack.pack_split("tiny", str(annotations), str(wrong), str(out), pack.PackSettings(), progress=False)
    assert not out.exists()
    (tmp_path / "data" / "img0.png").unlink()  # some photos missing: packed, recorded
    counts = pack.pack_split("tiny", str(annotations), str(tmp_path / "data"), str(out), pack.PackSettings(), progress=False)
    assert counts["images_missing"] == 1 and pack.verify(out)[0] == []


def test_verify_reports_a_file_without_usable_images(tmp_path):
    annotations = tiny_dataset(tmp_path)
    out = tmp_path / "t.h5"
    pack.pack_split("tiny", str(annotations), str(tmp_path), str(out), pack.PackSettings(), progress=False)
    with h5py.File(out, "r+") as f:
        f["image_ok"][...] = False
    faults, _ = pack.verify(out, check_inputs=False)
    assert any("no usable image: none of the 3 rows has a photo" in x and "check datasets.tiny.images" in x for x in faults)


# -- damage inside a packed file ---------------------------------------------------------------------------


def test_damage_inside_a_packed_file_stops_the_loader(tmp_path, split, body_file, packed_inputs):  # noqa: F811
    ann, _ = split
    out, _ = make_pack(tmp_path, split, body_file, packed_inputs)
    with h5py.File(out, "r") as f:
        j = int(np.flatnonzero(f["flags/has_parts"][()])[0])
        chunk = f["parts/labels"].id.get_chunk_info(j)
        stored_parts = f["parts/labels"][j]
        k = int(np.flatnonzero(f["image_ok"][()])[-1])
        jpeg = bytes(f["images"][k])
    good = PackedDataset([str(out)])
    expected = {row: good.sample(0, row, 0, 0, good.augment) for row in (j, k)}
    assert np.array_equal(good.read(0, j)["parts"], stored_parts)

    damaged = tmp_path / "damaged.h5"
    data = bytearray(out.read_bytes())
    middle = chunk.byte_offset + chunk.size // 2
    data[middle:middle + 16] = bytes(16)  # zeroed inside the file, not truncated
    at = data.find(jpeg[len(jpeg) // 2: len(jpeg) // 2 + 64])
    assert at > 0
    data[at:at + 32] = bytes(32)
    damaged.write_bytes(bytes(data))
    loader = PackedDataset([str(damaged)])  # the per-row arrays are intact: it opens
    with pytest.raises(PackedFileError, match=rf"{damaged}: row {j} of dataset parts/labels is damaged .*delete it and rerun "
                                              r"`snakemake pack`"):
        loader.sample(0, j, 0, 0, loader.augment)
    with pytest.raises(PackedFileError, match=rf"{damaged}: row {k} of dataset images is damaged \(its bytes fail their CRC-32 "
                                              r"in image_crc32\).*snakemake pack"):
        loader.sample(0, k, 0, 0, loader.augment)
    # rows whose chunks are intact read as before
    other = next(r for r in range(len(ann)) if r not in (j, k))
    a, b = loader.sample(0, other, 0, 0, loader.augment), good.sample(0, other, 0, 0, good.augment)
    assert all(torch.equal(a[key], b[key]) for key in a)
    # the undamaged file gives the same samples twice over
    again = PackedDataset([str(out)])
    for row, sample in expected.items():
        assert all(torch.equal(sample[key], again.sample(0, row, 0, 0, again.augment)[key]) for key in sample)
    assert any("parts/labels: rows 0-5 unreadable, damaged" in x for x in pack.verify(damaged, check_inputs=False)[0])


def test_fletcher32_catches_damage_in_uncompressed_crops(tmp_path, split, body_file, packed_inputs):  # noqa: F811
    out, _ = make_pack(tmp_path, split, body_file, packed_inputs, image_format="raw")
    tampered = tmp_path / "tampered.h5"
    shutil.copy(out, tampered)
    with h5py.File(out, "r") as f:
        assert f["images"].fletcher32 and f["parts/labels"].fletcher32 and f["annotations/openpose"].fletcher32
        chunk = f["images"].id.get_chunk_info(2)  # raw crops: no compression that could notice damage itself
    data = bytearray(out.read_bytes())
    middle = chunk.byte_offset + chunk.size // 2
    # Fletcher-32 cannot tell a 16-bit word 0x0000 from 0xFFFF: overwrite with neither
    data[middle:middle + 8] = bytes(0x5A if b != 0x5A else 0xA5 for b in data[middle:middle + 8])
    out.write_bytes(bytes(data))
    loader = PackedDataset([str(out)])
    with pytest.raises(PackedFileError, match=rf"{out}: row 2 of dataset images is damaged \(HDF5: .*snakemake pack"):
        loader.read(0, 2)
    loader.read(0, 3)
    # a change Fletcher-32 cannot see (here: written through HDF5, checksum updated) fails the row's CRC-32
    with h5py.File(tampered, "r+") as f:
        crop = f["images"][3]
        crop[100, 100:110] = np.where(crop[100, 100:110] == 0, 255, 0)
        f["images"][3] = crop
    with pytest.raises(PackedFileError, match=rf"{tampered}: row 3 of dataset images is damaged \(its bytes fail their CRC-32"):
        PackedDataset([str(tampered)]).read(0, 3)
    assert any("images: 1 rows fail their checksum (damaged), e.g. rows [3]" in x for x in pack.verify(tampered, False)[0])


def test_a_file_of_an_older_format_is_refused(tmp_path, split, body_file, packed_inputs):  # noqa: F811
    out, _ = make_pack(tmp_path, split, body_file, packed_inputs)
    with h5py.File(out, "r+") as f:
        f.attrs["format_version"] = 1
    with pytest.raises(PackedFileError, match=r"packed format 1, this code reads format 2 only .*delete the file and rerun "
                                              r"`snakemake pack`"):
        PackedDataset([str(out)])
