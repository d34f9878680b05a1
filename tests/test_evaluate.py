"""Evaluation on the benchmarks' own formats (3DPW, 3DPW-OCC, 3DOH, Human3.6M protocol 2, MPI-INF-3DHP, the
demo splits): the rows each scores, its ground truth, its metrics, the skips, and the command."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from trainers.benchmarks import PW3D_OCCLUDED_SEQUENCES, load_benchmark, pw3d_sequence, row_genders

N_ROWS = 8


class Oracle(torch.nn.Module):
    """Reads the row index that a fixture photo's grey level encodes and answers that row's true SMPL
    parameters (a perfect regressor), or, with `mean`, always row 0's (a regressor that ignores the image)."""

    def __init__(self, pose: np.ndarray, shape: np.ndarray, mean: bool = False):
        super().__init__()
        from models.rotations import axis_angle_to_rotmat

        self.register_buffer("rotmat", axis_angle_to_rotmat(torch.as_tensor(pose, dtype=torch.float32).reshape(-1, 24, 3)))
        self.register_buffer("betas", torch.as_tensor(shape, dtype=torch.float32))
        self.mean = mean

    def forward(self, images):
        from models.smpl_head import Prediction
        from trainers.packed import IMAGENET_MEAN, IMAGENET_STD

        r = images.shape[-1]
        centre = images[:, 0, r // 4:3 * r // 4, r // 4:3 * r // 4]  # inside the photo (the crop's box overhangs it)
        grey = centre.mean((1, 2)) * IMAGENET_STD[0] + IMAGENET_MEAN[0]  # [0, 1]
        rows = torch.round(grey * 255.0 / 20.0).long() - 1
        if self.mean:
            rows = torch.zeros_like(rows)
        b = len(images)
        return Prediction(rotmat=self.rotmat[rows], betas=self.betas[rows], cam=images.new_tensor([[0.9, 0, 0]]).expand(b, 3),
                          pose6d=images.new_zeros(b, 24, 6))


def _photo(path, row):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((120, 100, 3), 20 * (row + 1), np.uint8)).save(path)  # PNG: the grey level is exact


def _smpl_rows(demo_model, n, seed=0):
    """Random bodies in the SPIN layout: pose (n, 72), shape (n, 10), and S (n, 24, 4): the 17 joints SPIN's
    files hold, placed as SPIN's preprocessing places them (the body's H36M joints through H36M_TO_J17 into
    J24_TO_J17's slots, confidence 1; the other 7 slots empty), in camera-like coordinates (not centred)."""
    from trainers.pose_metrics import H36M_TO_J17, J24_TO_J17

    rng = np.random.default_rng(seed)
    pose = rng.normal(0, 0.3, (n, 72)).astype(np.float32)
    pose[:, :3] = rng.normal(0, 1.0, (n, 3))
    shape = rng.normal(0, 1, (n, 10)).astype(np.float32)
    with torch.no_grad():
        out = demo_model(betas=torch.as_tensor(shape), body_pose=torch.as_tensor(pose[:, 3:]),
                         global_orient=torch.as_tensor(pose[:, :3]))
    s = np.zeros((n, 24, 4), np.float32)
    s[:, list(J24_TO_J17), :3] = out.h36m_joints[:, list(H36M_TO_J17)].numpy() + np.array([0.1, -0.2, 4.0])
    s[:, list(J24_TO_J17), 3] = 1.0
    return pose, shape, s


def _write(root, imgnames, **arrays):
    n = len(imgnames)
    for i, name in enumerate(imgnames):
        _photo(root / name, i)
    np.savez(root / "annotations.npz", imgname=np.array(imgnames), center=np.tile([50.0, 60.0], (n, 1)),
             scale=np.full(n, 0.6), **arrays)
    return root / "annotations.npz"


@pytest.fixture(scope="module")
def pw3d(tmp_path_factory, demo_model):
    """3DPW in SPIN's format (imgname, center, scale, pose, shape, gender; no has_smpl), half of its rows
    from occluded sequences."""
    root = tmp_path_factory.mktemp("3dpw")
    seqs = ["courtyard_backpack_00", "downtown_arguing_00", "outdoors_slalom_01", "courtyard_hug_00"]
    names = [f"imageFiles/{seqs[i % 4]}/image_{i:05d}.jpg" for i in range(N_ROWS)]
    pose, shape, _ = _smpl_rows(demo_model, N_ROWS)
    ann = _write(root, names, pose=pose, shape=shape, gender=np.array(["m", "f"] * (N_ROWS // 2)))
    return ann, root, pose, shape


def test_3dpw_sequences_and_occluded_subset(pw3d):
    assert pw3d_sequence("imageFiles/courtyard_backpack_00/image_00000.jpg") == "courtyard_backpack"
    assert pw3d_sequence("imageFiles/outdoors_slalom_01/image_00012.jpg") == "outdoors_slalom"
    assert len(PW3D_OCCLUDED_SEQUENCES) == 17
    ann, root, _, _ = pw3d
    full, occ = load_benchmark(ann, root, "3dpw"), load_benchmark(ann, root, "3dpw_occ")
    assert full.rows.tolist() == list(range(N_ROWS)) and full.outside == 0
    # rows 0, 2, 4, 6 are courtyard_backpack / outdoors_slalom: occluded; downtown_arguing and courtyard_hug are not
    assert occ.rows.tolist() == [0, 2, 4, 6] and occ.outside == 4 and not occ.skipped


def _evaluate(bench, kind, demo_model, net, **kw):
    from trainers.evaluate import evaluate_rows

    return evaluate_rows(net, 64, bench, kind, demo_model, progress=False, batch_size=3, **kw)


def test_a_perfect_answer_scores_zero_and_a_constant_one_scores_its_own_error(pw3d, demo_model):
    from models.rotations import axis_angle_to_rotmat
    from trainers.pose_metrics import joint_errors, pve

    ann, root, pose, shape = pw3d
    bench = load_benchmark(ann, root, "3dpw")
    perfect = _evaluate(bench, "3dpw", demo_model, Oracle(pose, shape))
    assert perfect["rows"].tolist() == list(range(N_ROWS)) and not perfect["skipped"]
    for k in ("mpjpe", "pa_mpjpe", "pve"):
        assert np.abs(perfect[k]).max() < 1e-3, k
    assert perfect["per_joint"].shape == (N_ROWS, 14)
    constant = _evaluate(bench, "3dpw", demo_model, Oracle(pose, shape, mean=True))
    with torch.no_grad():
        gt = demo_model(betas=torch.as_tensor(shape), rotmat=axis_angle_to_rotmat(torch.as_tensor(pose).reshape(-1, 24, 3)))
        e = joint_errors(gt.h36m_joints[:1].expand(N_ROWS, -1, -1), gt.h36m_joints)
        v = pve(gt.vertices[:1].expand(N_ROWS, -1, -1), gt.vertices, gt.h36m_joints[:1, 0].expand(N_ROWS, -1),
                gt.h36m_joints[:, 0])
    np.testing.assert_allclose(constant["mpjpe"], e["mpjpe"].numpy(), atol=1e-3)
    np.testing.assert_allclose(constant["pa_mpjpe"], e["pa_mpjpe"].numpy(), atol=1e-3)
    np.testing.assert_allclose(constant["pve"], v.numpy(), atol=1e-3)
    assert constant["mpjpe"][1:].min() > 10.0  # the other rows' bodies differ from row 0's


def test_gendered_ground_truth_uses_each_rows_body(pw3d, demo_body, demo_model):
    from dataclasses import replace

    from pipeline.body.model import BodyModel

    ann, root, pose, shape = pw3d
    bench = load_benchmark(ann, root, "3dpw")
    assert row_genders(bench.annotations, bench.rows, "neutral").tolist() == ["neutral"] * N_ROWS
    assert row_genders(bench.annotations, bench.rows, "gendered").tolist() == ["male", "female"] * (N_ROWS // 2)
    with pytest.raises(ValueError, match="female and male body"):
        _evaluate(bench, "3dpw", demo_model, Oracle(pose, shape), gender="gendered")
    # a "male" body 20% taller than the network's: the perfect answer is exact on the female rows only
    taller = BodyModel(replace(demo_body, v_template=demo_body.v_template * 1.2))
    res = _evaluate(bench, "3dpw", demo_model, Oracle(pose, shape), gender="gendered",
                    bodies={"neutral": demo_model, "male": taller, "female": demo_model})
    assert res["mpjpe"][1::2].max() < 1e-3 and res["mpjpe"][0::2].min() > 5.0


def test_3doh_rows_without_smpl_are_recorded_skips(tmp_path, demo_model):
    pose, shape, s = _smpl_rows(demo_model, 4, seed=1)
    ann = _write(tmp_path, [f"images/{i:06d}.jpg" for i in range(4)], pose=pose, shape=shape, S=s,
                 has_smpl=np.array([1, 0, 1, 1.0]))
    (tmp_path / "images/000003.jpg").unlink()  # a missing photo
    bench = load_benchmark(ann, tmp_path, "3doh")
    assert bench.rows.tolist() == [0, 2, 3] and bench.skipped == {1: "no SMPL parameters (has_smpl 0)"}
    res = _evaluate(bench, "3doh", demo_model, Oracle(pose, shape))
    assert res["rows"].tolist() == [0, 2] and res["mpjpe"].max() < 1e-3
    assert res["skipped"][3].startswith("missing image file") and "000003.jpg" in res["skipped"][3]


def _h36m_name(subject, camera, frame):
    return f"images/{subject}_Directions_1.{camera}_{frame:06d}.jpg"


def test_h36m_protocol_2_rows_and_s_ground_truth(tmp_path, demo_model):
    names = [_h36m_name("S9", "60457274", 1), _h36m_name("S11", "60457274", 6), _h36m_name("S9", "54138969", 1),
             _h36m_name("S9", "60457274", 3), _h36m_name("S1", "60457274", 1), _h36m_name("S11", "60457274", 11)]
    pose, shape, s = _smpl_rows(demo_model, len(names), seed=2)
    ann = _write(tmp_path, names, pose=pose, shape=shape, S=s)
    bench = load_benchmark(ann, tmp_path, "h36m_p2")
    # another camera, a frame off the 5-frame grid, and subject 1 are outside protocol 2
    assert bench.rows.tolist() == [0, 1, 5] and bench.outside == 3
    res = _evaluate(bench, "h36m_p2", demo_model, Oracle(pose, shape))
    assert res["per_joint"].shape == (3, 14) and res["mpjpe"].max() < 1e-3 and res["pa_mpjpe"].max() < 1e-3
    other = _evaluate(bench, "h36m_p2", demo_model, Oracle(pose, shape, mean=True))
    assert other["mpjpe"][1:].min() > 10.0 and "pve" not in other  # no mesh truth without SMPL
    np.savez(tmp_path / "bad.npz", imgname=np.array(["images/S9_Directions.jpg"]), center=np.zeros((1, 2)),
             scale=np.ones(1), S=s[:1])
    with pytest.raises(ValueError, match="subject, camera and frame"):
        load_benchmark(tmp_path / "bad.npz", tmp_path, "h36m_p2")


def test_mpi_inf_3dhp_pck_auc_and_missing_joints(tmp_path, demo_model):
    from trainers.pose_metrics import J24_TO_J17

    names = [f"mpi_inf_3dhp_test_set/TS{1 + i // 3}/imageSequence/img_{i:06d}.jpg" for i in range(6)]
    pose, shape, s = _smpl_rows(demo_model, 6, seed=3)
    s[5, J24_TO_J17[3], 3] = 0.0  # row 5 lacks a scored joint
    s[4, J24_TO_J17[0], :3] += np.array([0.0, 0.2, 0.0])  # row 4's right ankle 200 mm off: outside PCK@150
    ann = _write(tmp_path, names, S=s)
    bench = load_benchmark(ann, tmp_path, "mpi_inf_3dhp")
    assert bench.rows.tolist() == [0, 1, 2, 3, 4] and list(bench.skipped) == [5]
    res = _evaluate(bench, "mpi_inf_3dhp", demo_model, Oracle(pose, shape))
    assert res["per_joint"].shape == (5, 17)
    np.testing.assert_allclose(res["pck"], [1, 1, 1, 1, 16 / 17], atol=1e-6)
    # every joint within 5 mm and more (a float error above 0 mm misses the 0 mm threshold, 1 of 31)
    assert res["auc"][:4].min() >= 30 / 31 - 1e-6
    # the ankle counts at no threshold up to 150 mm
    assert 16 / 17 * 30 / 31 - 1e-6 <= res["auc"][4] <= 16 / 17 + 1e-6
    assert res["mpjpe"][4] == pytest.approx(200.0 / 17, rel=1e-3)
    with pytest.raises(ValueError, match="SMPL parameters"):
        load_benchmark(ann, tmp_path, "3dpw")


def test_evaluate_command_writes_results_and_samples(tmp_path, pw3d, monkeypatch, body_file):
    import trainers.evaluate as ev

    ann, root, pose, shape = pw3d
    (root / "imageFiles/courtyard_hug_00/image_00007.jpg").rename(tmp_path / "moved.jpg")
    try:
        monkeypatch.setattr(ev, "load_regressor", lambda path: ("hmr", Oracle(pose, shape), 64))
        out, samples = tmp_path / "eval.json", tmp_path / "samples.npz"
        assert ev.main([str(tmp_path / "any.pt"), str(ann), str(root), str(body_file), str(out), "--kind", "3dpw_occ",
                        "--name", "3dpw_occ", "--samples", str(samples), "--batch-size", "2"]) == 0
        r = json.loads(out.read_text())
        assert r["benchmark"] == "3dpw_occ" and r["scored"] == 4 and r["outside_subset"] == 4 and r["skipped"] == 0
        assert r["mpjpe"] < 1e-3 and set(r["per_joint"]) >= {"right ankle", "head top"} and r["images_per_second"] > 0
        with np.load(samples) as z:
            assert z["rows"].tolist() == [0, 2, 4, 6] and z["imgname"][0].startswith("imageFiles/courtyard_backpack")
        assert ev.main([str(tmp_path / "any.pt"), str(ann), str(root), str(body_file), str(out), "--kind", "3dpw"]) == 0
        r = json.loads(out.read_text())
        assert r["scored"] == 7 and r["skip_reasons"] == {"missing or unreadable image": 1}
        assert "image_00007.jpg" in r["skipped_rows"]["7"]
    finally:
        (tmp_path / "moved.jpg").rename(root / "imageFiles/courtyard_hug_00/image_00007.jpg")


def test_published_and_own_checkpoints_load_for_evaluation(tmp_path):
    from models.hmr import HMR
    from trainers.evaluate import load_regressor

    net = HMR(width_mult=0.0625)
    torch.save({"model": {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}},
               tmp_path / "spin_like.pt")
    family, loaded, res = load_regressor(tmp_path / "spin_like.pt")
    assert family == "hmr" and res == 224
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(loaded(x).rotmat, net.eval()(x).rotmat)
    # PARE's released .ckpt (Lightning, with pickled config classes our own reader refuses)
    from test_published_checkpoints import fixture, tensors, write_lightning

    write_lightning(tmp_path / "pare_checkpoint.ckpt", tensors(fixture("pare_checkpoint_keys.txt")), legacy=False)
    family, loaded, res = load_regressor(tmp_path / "pare_checkpoint.ckpt")
    assert family == "pare" and res == 224 and not loaded.head.iterative
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError):
        load_regressor(tmp_path / "other.pt")


def test_occlusion_windows_follow_pare():
    from trainers.sensitivity import occluded_copies, windows

    n, boxes = windows(224, 40, 40)
    assert n == 6 and len(boxes) == 36 and boxes[0] == (0, 40, 0, 40) and boxes[5] == (0, 40, 200, 224)
    assert boxes[-1] == (200, 224, 200, 224)  # clipped at the border
    image = torch.ones(3, 224, 224)
    copies = occluded_copies(image, boxes)
    assert copies.shape == (36, 3, 224, 224)
    assert copies[7, :, 40:80, 40:80].abs().max() == 0 and copies[7].sum() == 3 * (224 * 224 - 1600)


def test_occlusion_sensitivity_finds_what_the_model_looks_at(pw3d, demo_model, tmp_path):
    """The oracle reads only the crop's centre: a square there changes its answer, one on the border does not;
    the batched analysis equals one forward per occluded image."""
    from trainers.sensitivity import figure, occlusion_sensitivity

    ann, root, pose, shape = pw3d
    bench = load_benchmark(ann, root, "3dpw")
    kw = dict(max_samples=3, progress=False)
    res = occlusion_sensitivity(Oracle(pose, shape), 64, bench, "3dpw", demo_model, **kw)
    assert res["per_joint"].shape == (3, 6, 6, 14) and res["grid"].shape == (6, 6, 4)
    assert np.abs(res["base_per_joint"]).max() < 1e-3
    maps = res["per_joint"].mean((0, 3))
    border = np.concatenate([maps[0], maps[-1], maps[:, 0], maps[:, -1]])
    assert np.abs(border).max() < 1e-3 and maps[1:-1, 1:-1].max() > 10.0
    slow = occlusion_sensitivity(Oracle(pose, shape), 64, bench, "3dpw", demo_model, batch_size=1, **kw)
    np.testing.assert_allclose(slow["per_joint"], res["per_joint"], atol=1e-3)
    chunked = occlusion_sensitivity(Oracle(pose, shape), 64, bench, "3dpw", demo_model, batch_size=5, **kw)
    np.testing.assert_allclose(chunked["per_joint"], res["per_joint"], atol=1e-3)
    np.testing.assert_allclose(chunked["pa_per_joint"], res["pa_per_joint"], atol=1e-3)
    out = tmp_path / "sensitivity.png"
    from trainers.evaluate import LSP14_NAMES

    figure(res, str(out), "test", LSP14_NAMES)
    assert Image.open(out).size[0] > 600
