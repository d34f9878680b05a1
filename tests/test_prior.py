"""The clothing prior: vertex counts from known labels, occlusion, order-free reduce, inputs and errors."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import prior, scans
from pipeline.camera import RigSettings, opencv_look_at
from pipeline.crop import crop_matrix, warp
from pipeline.labelsets import CIHP, NUM_CIHP_CLASSES, palette
from pipeline.raster import rasterize

PALETTE = palette(NUM_CIHP_CLASSES).astype(np.int64)
GREY = (0.3, 0.6, 0.9)  # not a palette colour (label 7 is VOC grey)


class PaletteParser:
    """A parser that reads labels off flat palette colours: it returns each pixel's label exactly, in
    the label crop frame, through the same `label_crops` interface the real runner has."""

    def __init__(self, resolution):
        self.resolution = resolution

    def label_crops(self, jobs):
        for key, image, center, scale in jobs:
            crop = warp(image, crop_matrix(center, scale, self.resolution), (self.resolution,) * 2, nearest=True)
            match = (crop[:, :, None, :].astype(np.int64) == PALETTE[None, None]).all(-1)
            labels = np.where(match.any(-1), match.argmax(-1), 0).astype(np.uint8)
            yield key, labels


def garment_labels(demo_model):
    """A label per face from the part segmentation: shoes, legs, pants, upper clothes, arms, face."""
    from pipeline.skeleton import SMPL_PART_NAMES

    by_part = {"leftFoot": "Left-shoe", "leftToeBase": "Left-shoe", "rightFoot": "Right-shoe", "rightToeBase": "Right-shoe",
               "leftLeg": "Left-leg", "rightLeg": "Right-leg", "leftUpLeg": "Pants", "rightUpLeg": "Pants", "hips": "Pants",
               "head": "Face", "neck": "Face", "leftForeArm": "Left-arm", "leftHand": "Left-arm", "leftHandIndex1": "Left-arm",
               "rightForeArm": "Right-arm", "rightHand": "Right-arm", "rightHandIndex1": "Right-arm"}
    part_label = np.array([CIHP[by_part.get(name, "UpperClothes")] for name in SMPL_PART_NAMES])
    faces = demo_model.faces
    return part_label[demo_model.data.part_labels[faces].min(1)]


def flat_scan(vertices, faces, face_labels):
    """A 'scan' that is the body surface itself, every face its own vertices in its label's colour."""
    v = vertices[faces].reshape(-1, 3)
    f = np.arange(len(v)).reshape(-1, 3)
    colours = np.repeat(PALETTE[face_labels] / 255.0, 3, axis=0)
    normals = np.repeat(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), 3, axis=0)
    return scans.ScanMesh(v, f, normals / np.linalg.norm(normals, axis=1, keepdims=True).clip(1e-12), colours)


@pytest.fixture(scope="module")
def labelled_scan(tmp_path_factory, demo_model):
    """A scan folder with one scan whose every face's label is known, its exact fit and 4 views."""
    root = tmp_path_factory.mktemp("scans")
    rng = np.random.default_rng(0)
    fit = {"betas": rng.normal(0, 0.5, 10), "global_orient": np.array([0.0, 0.4, 0.0]),
           "body_pose": rng.normal(0, 0.1, 69), "transl": np.array([0.1, 0.0, -0.2])}
    with torch.no_grad():
        verts = demo_model(**{k: torch.as_tensor(v[None], dtype=torch.float32) for k, v in fit.items()}).vertices[0].double().numpy()
    labels = garment_labels(demo_model)
    (root / "fits").mkdir()
    np.savez(root / "fits" / "scan_a.npz", **fit)
    centre = 0.5 * (verts.min(0) + verts.max(0))
    K = np.array([[500.0, 0, 191.5], [0, 500.0, 191.5], [0, 0, 1]])
    views = []
    for azimuth in np.deg2rad([0, 90, 180, 270]):
        R, t = opencv_look_at(centre + 3.0 * np.array([np.sin(azimuth), 0.2, np.cos(azimuth)]), centre)
        views.append({"K": K.tolist(), "R": R.tolist(), "t": t.tolist(), "width": 384, "height": 384})
    (root / "cameras").mkdir()
    (root / "cameras" / "scan_a.json").write_text(json.dumps({"views": views}))
    return root, verts, labels, flat_scan(verts, demo_model.faces, labels)


def run_map(labelled_scan, demo_model, monkeypatch, resolution=192):
    root, verts, labels, scan = labelled_scan
    monkeypatch.setattr(prior, "load_scan_mesh", lambda path: scan)
    row = {"scan": "scan_a", "mesh": __file__, "fit": str(root / "fits" / "scan_a.npz"), "fit_type": "smpl",
           "cameras": str(root / "cameras" / "scan_a.json")}
    return prior.map_scans([row], scans.FitReader(demo_model), PaletteParser(resolution), RigSettings(),
                           scans.RenderSettings(supersample=1, ambient=1.0, background=GREY),
                           prior.MapSettings(label_resolution=resolution), progress=False)


def test_counts_from_a_scan_with_known_labels(labelled_scan, demo_model, monkeypatch):
    _, _, face_label, _ = labelled_scan
    result = run_map(labelled_scan, demo_model, monkeypatch)
    counts, seen = result["counts"], result["seen_views"] > 0
    faces = demo_model.faces
    V = demo_model.data.num_vertices
    assert counts[:, CIHP["Background"]].sum() == 0  # background never counts
    assert seen.mean() > 0.9 and result["records"][0]["views"] == 4
    # vertices whose two rings of faces all carry one label: every vote is for that label
    vertex_faces = [[] for _ in range(V)]
    for f, tri in enumerate(faces):
        for v in tri:
            vertex_faces[v].append(f)
    ring1 = [set(face_label[fs]) for fs in vertex_faces]
    neighbours = [set(faces[fs].ravel()) for fs in vertex_faces]
    interior = np.array([len(set().union(*(ring1[n] for n in neighbours[v]))) == 1 for v in range(V)])
    expected = np.array([next(iter(ring1[v])) for v in range(V)])
    voted = seen & interior & (counts.sum(1) > 0)
    assert voted.sum() > 0.6 * V
    # the parser's crop is resampled (nearest pixel) from the rendered view, so a pixel at an occlusion
    # edge can read the face beside it in the image: a few stray votes, never a majority
    # (measured: 0.9992 of votes right; 4 of 4924 vertices wrong, each with 1 or 2 votes, where the legs touch)
    assert counts[voted, expected[voted]].sum() > 0.998 * counts[voted].sum()
    assert (counts[voted].argmax(1) == expected[voted]).mean() > 0.998
    strong = voted & (counts.sum(1) >= 3)
    assert strong.sum() > 0.3 * V and (counts[strong].argmax(1) == expected[strong]).all()


def test_an_occluded_face_gets_no_label():
    """Two squares, one hidden behind the other: only the front one's vertices are voted for."""
    square = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], dtype=np.float64)
    vertices = np.concatenate([square * 0.5 + [0, 0, 3.0], square * 0.3 + [0, 0, 4.0]])
    faces = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    K = np.array([[100.0, 0, 31.5], [0, 100.0, 31.5], [0, 0, 1]])
    r = rasterize(torch.as_tensor(vertices), torch.as_tensor(faces), torch.as_tensor(K), 64, 64)
    labels = np.full((64, 64), CIHP["Coat"], np.uint8)
    counts, seen = prior.vote(r.face_id.numpy(), r.bary.numpy(), labels, faces, len(vertices))
    assert counts[:4, CIHP["Coat"]].sum() == (r.face_id.numpy() >= 0).sum() > 0
    assert counts[4:].sum() == 0 and not seen[4:].any() and seen[:4].all()
    # ignored pixels (outside a keypoint box) and background give no votes, but the vertex is still seen
    labels[:] = 255
    counts, seen = prior.vote(r.face_id.numpy(), r.bary.numpy(), labels, faces, len(vertices))
    assert counts.sum() == 0 and seen[:4].all()


def _fake_shard(path, rng, V, name):
    counts = rng.integers(0, 50, size=(V, NUM_CIHP_CLASSES))
    counts[:, 0] = 0
    counts[rng.random(V) < 0.2] = 0  # unseen vertices
    np.savez(path, counts=counts, seen_views=(counts.sum(1) > 0).astype(np.int32) * rng.integers(1, 4, V),
             scans=np.array([name]), views=np.array([10]), mesh_sha256=np.array([name * 2]), fit_sha256=np.array([name * 3]),
             parser_sha256=np.array("p"))
    return str(path)


def test_reduce_is_the_same_in_any_shard_order(tmp_path, body_file, demo_model):
    rng = np.random.default_rng(1)
    V = demo_model.data.num_vertices
    shards = [_fake_shard(tmp_path / f"s{k}.npz", rng, V, f"scan{k}") for k in range(4)]
    prior.reduce_counts(shards, str(body_file), str(tmp_path / "a.npz"))
    prior.reduce_counts(shards[::-1][1:] + shards[-1:], str(body_file), str(tmp_path / "b.npz"))
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as b:
        assert a.files == b.files
        for key in a.files:
            assert np.array_equal(a[key], b[key]), key
        total = sum(np.load(s)["counts"] for s in shards)
        assert np.array_equal(a["counts"], total) and int(a["num_views"]) == 40
        assert list(a["scans"]) == ["scan0", "scan1", "scan2", "scan3"]
        vp, fp = a["vertex_prior"], a["face_prior"]
    assert vp.shape == (V, NUM_CIHP_CLASSES) and fp.shape == (len(demo_model.faces), NUM_CIHP_CLASSES)
    np.testing.assert_allclose(vp.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(vp[:, 0], 0.01, atol=1e-6)  # the background probability
    np.testing.assert_allclose(fp, vp[demo_model.faces].mean(1), atol=1e-6)


def test_part_rules_zero_implausible_labels(tmp_path, body_file, demo_model):
    """A shoe seen on a hand is removed; a shoe on a foot stays."""
    from pipeline.skeleton import SMPL_PART_NAMES

    V = demo_model.data.num_vertices
    parts = demo_model.data.part_labels
    counts = np.zeros((V, NUM_CIHP_CLASSES), np.int64)
    counts[:, CIHP["Left-arm"]] = 5
    hand, foot = parts == SMPL_PART_NAMES.index("leftHand"), parts == SMPL_PART_NAMES.index("leftFoot")
    counts[hand | foot, CIHP["Left-shoe"]] = 20
    np.savez(tmp_path / "s.npz", counts=counts, seen_views=np.ones(V, np.int32), scans=np.array(["a"]), views=np.array([1]),
             mesh_sha256=np.array(["m"]), fit_sha256=np.array(["f"]), parser_sha256=np.array("p"))
    for cleaning, name in ((True, "clean.npz"), (False, "raw.npz")):
        prior.reduce_counts([str(tmp_path / "s.npz")], str(body_file), str(tmp_path / name), part_cleaning=cleaning)
    clean, raw = np.load(tmp_path / "clean.npz")["vertex_prior"], np.load(tmp_path / "raw.npz")["vertex_prior"]
    shoe = CIHP["Left-shoe"]
    assert (raw[hand, shoe] > 0.7).all() and (clean[hand, shoe] == 0).all()
    assert (clean[foot, shoe] > 0.7).all()
    rules = prior.load_part_rules()
    assert rules.shape == (24, NUM_CIHP_CLASSES) and rules.any(0).all()


def test_sides_come_from_the_body(tmp_path, body_file, demo_model):
    """Votes of a parser that swapped left and right (a person seen from behind) count for the side
    of the vertex's own body part; central parts keep their votes; every vertex keeps its total."""
    from pipeline.skeleton import SMPL_PART_NAMES

    V = demo_model.data.num_vertices
    parts = demo_model.data.part_labels
    left_arm, right_leg = parts == SMPL_PART_NAMES.index("leftForeArm"), parts == SMPL_PART_NAMES.index("rightLeg")
    spine = parts == SMPL_PART_NAMES.index("spine2")
    counts = np.zeros((V, NUM_CIHP_CLASSES), np.int64)
    counts[:, CIHP["UpperClothes"]] = 6
    counts[left_arm, CIHP["Right-arm"]], counts[left_arm, CIHP["Left-arm"]] = 7, 3
    counts[right_leg, CIHP["Left-leg"]], counts[right_leg, CIHP["Right-leg"]] = 4, 4
    counts[spine, CIHP["Left-arm"]], counts[spine, CIHP["Right-arm"]] = 2, 1
    pooled = prior.pool_sides(counts, parts)
    assert np.array_equal(pooled.sum(1), counts.sum(1))
    assert (pooled[left_arm, CIHP["Left-arm"]] == 10).all() and (pooled[left_arm, CIHP["Right-arm"]] == 0).all()
    assert (pooled[right_leg, CIHP["Right-leg"]] == 8).all() and (pooled[right_leg, CIHP["Left-leg"]] == 0).all()
    assert np.array_equal(pooled[spine], counts[spine])
    np.savez(tmp_path / "s.npz", counts=counts, seen_views=np.ones(V, np.int32), scans=np.array(["a"]), views=np.array([1]),
             mesh_sha256=np.array(["m"]), fit_sha256=np.array(["f"]), parser_sha256=np.array("p"))
    argmax = {}
    for sides in (True, False):
        prior.reduce_counts([str(tmp_path / "s.npz")], str(body_file), str(tmp_path / f"{sides}.npz"), sides_from_body=sides)
        with np.load(tmp_path / f"{sides}.npz") as z:
            argmax[sides] = z["vertex_prior"][:, 1:].argmax(1) + 1
            assert bool(z["sides_from_body"]) == sides
    # pooled: 10 arm votes beat 6 for the sleeve; as voted, part cleaning drops the 7 wrong-side votes
    assert (argmax[True][left_arm] == CIHP["Left-arm"]).all() and (argmax[False][left_arm] == CIHP["UpperClothes"]).all()
    assert (argmax[True][right_leg] == CIHP["Right-leg"]).all()


def test_fill_unseen_spreads_from_seen_neighbours():
    faces = np.array([[0, 1, 2], [1, 2, 3], [2, 3, 4]])
    dist = np.zeros((5, NUM_CIHP_CLASSES))
    dist[0, 5] = 1
    seen = np.array([True, False, False, False, False])
    filled = prior.fill_unseen(dist, seen, faces)
    assert (filled.argmax(1) == 5).all() and np.allclose(filled.sum(1), 1)


def test_a_missing_fit_names_the_scan(tmp_path, demo_model):
    (tmp_path / "meshes").mkdir()
    (tmp_path / "fits").mkdir()
    for name in ("scan_ok", "scan_nofit"):
        (tmp_path / "meshes" / f"{name}.ply").write_text("ply")
    np.savez(tmp_path / "fits" / "scan_ok.npz", betas=np.zeros(10))
    with pytest.raises(scans.ScanInputError, match="scan scan_nofit: no fit at .*scan_nofit.npz"):
        scans.build_scan_index(tmp_path, tmp_path / "index.json")
    with pytest.raises(scans.ScanInputError, match="scan scan_gone: body fit not found at .*gone.npz"):
        scans.FitReader(demo_model).vertices(tmp_path / "fits" / "gone.npz", "smpl", "scan_gone")
    with pytest.raises(scans.ScanInputError, match="scan scan_ok: fit .* has no 'body_pose'|no 'pose'"):
        scans.FitReader(demo_model).vertices(tmp_path / "fits" / "scan_ok.npz", "smpl", "scan_ok")


def test_scan_folder_index_and_textured_obj(tmp_path):
    """An AGORA-style folder: a textured OBJ (UV + image) renders its texture's colours."""
    import trimesh
    from PIL import Image

    (tmp_path / "meshes" / "scan_t").mkdir(parents=True)
    (tmp_path / "fits").mkdir()
    vertices = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], dtype=np.float64)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=np.float64)
    texture = np.zeros((8, 8, 3), np.uint8)
    texture[:, :4] = (200, 30, 30)  # left half red
    texture[:, 4:] = (30, 30, 200)  # right half blue
    material = trimesh.visual.material.SimpleMaterial(image=Image.fromarray(texture))
    mesh = trimesh.Trimesh(vertices, faces, visual=trimesh.visual.TextureVisuals(uv=uv, material=material), process=False)
    mesh.export(tmp_path / "meshes" / "scan_t" / "scan_t.obj")
    np.savez(tmp_path / "fits" / "scan_t.npz", betas=np.zeros(10), global_orient=np.zeros(3), body_pose=np.zeros(69))
    n = scans.build_scan_index(tmp_path, tmp_path / "index.json")
    rows = scans.read_scan_index(tmp_path / "index.json")
    assert n == 1 and rows[0]["scan"] == "scan_t" and rows[0]["cameras"] is None and rows[0]["fit"].endswith("scan_t.npz")
    scan = scans.load_scan_mesh(rows[0]["mesh"])
    assert scan.texture is not None
    R, t = opencv_look_at(np.array([0, 0, -4.0]), np.zeros(3))  # looking at the front (+z normal faces away: no matter, unlit)
    K = np.array([[60.0, 0, 31.5], [0, 60.0, 31.5], [0, 0, 1]])
    image = scans.render_scan(scan, R, t, K, 64, 64, scans.RenderSettings(supersample=1, ambient=1.0)).astype(int)
    # seen from -z, the texture's left half (x < 0) is on the image's right
    assert np.abs(image[32, 40] - (200, 30, 30)).max() <= 2 and np.abs(image[32, 23] - (30, 30, 200)).max() <= 2
    # generated rig: views around the scan from config
    views = scans.scan_views(rows[0], scan, RigSettings(views=3, resolution=64), seed=0)
    assert len(views) == 3 and views[0]["width"] == 64


def test_smplx_fits_go_through_the_deformation_transfer(tmp_path, demo_model):
    """SMPL-X vertices -> body vertices with the user's transfer matrix; without it, a clear error."""
    rng = np.random.default_rng(0)
    with torch.no_grad():
        body = demo_model(body_pose=torch.as_tensor(rng.normal(0, 0.2, (1, 69)), dtype=torch.float32)).vertices[0].double().numpy()
    V = len(body)
    perm = rng.permutation(V)
    source = np.concatenate([body[perm], rng.normal(size=(7, 3))])  # a 'SMPL-X' mesh: other order, more vertices
    matrix = np.zeros((V, len(source)))
    matrix[perm, np.arange(V)] = 1.0
    np.savez(tmp_path / "fit.npz", vertices=source)
    np.savez(tmp_path / "transfer.npz", mtx=np.concatenate([matrix, np.zeros_like(matrix)], axis=1))  # + normals half
    out = scans.FitReader(demo_model, deformation_transfer=str(tmp_path / "transfer.npz")).vertices(tmp_path / "fit.npz", "smplx", "scan_x")
    np.testing.assert_allclose(out, body, atol=1e-9)
    with pytest.raises(scans.ScanInputError, match="smplx2smpl_deftrafo_setup.pkl"):
        scans.FitReader(demo_model).vertices(tmp_path / "fit.npz", "smplx", "scan_x")


def test_check_reports_agreement_with_ground_truth(tmp_path, demo_model):
    V = demo_model.data.num_vertices
    gt = np.full(V, CIHP["Pants"], np.uint8)
    gt[: V // 2] = CIHP["UpperClothes"]
    for k in range(3):
        np.save(tmp_path / f"gt{k}.npy", gt)
    (tmp_path / "index.json").write_text(json.dumps({"scans": [
        {"scan": f"s{k}", "mesh": "m", "fit": "f", "gt_vertex_labels": f"gt{k}.npy"} for k in range(3)]}))
    vp = np.zeros((V, NUM_CIHP_CLASSES), np.float32)
    vp[np.arange(V), gt] = 0.9
    vp[:, 0] = 0.95  # background is never the answer
    vp[:100] = 0
    vp[:100, CIHP["Coat"]] = 1  # wrong on 100 vertices
    seen = np.ones(V, np.int64)
    seen[-50:] = 0
    np.savez(tmp_path / "prior.npz", vertex_prior=vp, seen_views=seen)
    result = prior.check_prior(str(tmp_path / "prior.npz"), str(tmp_path / "index.json"), str(tmp_path / "check.json"), 0.9)
    assert result["meets_goal"] and result["argmax_agreement"] == pytest.approx(1 - 100 / (V - 50))
    assert json.loads((tmp_path / "check.json").read_text())["seen_vertices"] == V - 50
    with pytest.raises(RuntimeError, match="below 0.99"):
        prior.check_prior(str(tmp_path / "prior.npz"), str(tmp_path / "index.json"), str(tmp_path / "check.json"), 0.99, 0.99)


def test_an_exact_parser_brings_the_prior_to_the_ground_truth(tmp_path, body_file, demo_model, monkeypatch):
    """The ceiling of map, reduce and check on demo-world scans (clothes as offset surfaces around
    the fitted body, cameras from the rig): with a parser that reads every pixel's true garment label,
    the prior's argmax agrees with the scans' ground truth almost everywhere. What the demo prior falls
    short of this is the parser's doing, not the rendering, voting or reduction."""
    from pipeline.world.poses import PosePrior
    from pipeline.camera import camera_rig
    from pipeline.world.scans import make_scan

    pose_prior = PosePrior.load()
    rig = RigSettings(views=10, resolution=256)
    meshes, rows = {}, []
    for i in range(9):  # odd: fewer exact ties in the ground-truth argmax
        rng = np.random.default_rng([7, i])
        scan = make_scan(demo_model, pose_prior, rng)
        name = f"scan_{i}"
        meshes[f"{name}.ply"] = flat_scan(np.asarray(scan["mesh"].vertices), np.asarray(scan["mesh"].faces), scan["face_labels"])
        scan["mesh"].export(tmp_path / f"{name}.ply")  # the textured scan; parsed through its palette twin below
        np.savez(tmp_path / f"{name}_fit.npz", **scan["fit"])
        (tmp_path / f"{name}_cameras.json").write_text(json.dumps({"views": camera_rig(scan["center"], scan["extent"], rng, rig)}))
        np.save(tmp_path / f"{name}_gt.npy", scan["labels"])
        rows.append({"scan": name, "mesh": f"{name}.ply", "fit": f"{name}_fit.npz", "cameras": f"{name}_cameras.json",
                     "gt_vertex_labels": f"{name}_gt.npy"})
    index = tmp_path / "index.json"
    index.write_text(json.dumps({"scans": rows}))
    monkeypatch.setattr(prior, "load_scan_mesh", lambda path: meshes[Path(path).name])
    result = prior.map_scans(scans.read_scan_index(index), scans.FitReader(demo_model), PaletteParser(256), rig,
                             scans.RenderSettings(supersample=1, ambient=1.0, background=GREY),
                             prior.MapSettings(label_resolution=256), progress=False)
    V = demo_model.data.num_vertices
    np.savez(tmp_path / "s.npz", counts=result["counts"], seen_views=result["seen_views"], scans=np.array([r["scan"] for r in rows]),
             views=np.full(len(rows), rig.views), mesh_sha256=np.array(["m"] * len(rows)), fit_sha256=np.array(["f"] * len(rows)),
             parser_sha256=np.array("exact"))
    prior.reduce_counts([str(tmp_path / "s.npz")], str(body_file), str(tmp_path / "prior.npz"))
    checked = prior.check_prior(str(tmp_path / "prior.npz"), str(index), str(tmp_path / "prior.json"))
    assert checked["seen_vertices"] > 0.95 * V
    assert checked["argmax_agreement"] > 0.95, checked
