"""The procedural demo body is a valid, humanlike SMPL-format model."""

import numpy as np
import pytest
import torch
import trimesh
from scipy import ndimage

from meshtools import winding_number
from pipeline.body.demo import build_demo_body
from pipeline.body.model import STANDARD_KEYS, BodyModel, joints49, load_body_model
from pipeline.skeleton import EXTRA_JOINT_NAMES, JOINTS49_NAMES, NUM_SMPL_JOINTS, SMPL_JOINT_NAMES

JOINT = {n: i for i, n in enumerate(SMPL_JOINT_NAMES)}


def test_rest_pose_equals_template(demo_body, demo_model):
    with torch.no_grad():
        out = demo_model()
    np.testing.assert_allclose(out.vertices[0].numpy(), demo_body.v_template, atol=1e-5)
    np.testing.assert_allclose(out.joints[0].numpy(), demo_body.J_regressor @ demo_body.v_template, atol=1e-5)


def test_mesh_is_closed_single_humanlike_surface(demo_body):
    mesh = trimesh.Trimesh(demo_body.v_template, demo_body.f, process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert len(mesh.split(only_watertight=False)) == 1
    assert mesh.euler_number == 2  # genus 0: arms and legs are not fused into loops
    assert 2000 < len(demo_body.v_template) < 12000
    height = np.ptp(demo_body.v_template[:, 1])
    assert 1.5 < height < 2.0  # metres
    assert 0.04 < mesh.volume < 0.12  # m^3: an adult body's volume (about 1 litre per kg)


def test_joints_lie_inside_the_mesh(demo_body):
    rest = demo_body.J_regressor @ demo_body.v_template
    h36m = demo_body.J_regressor_h36m @ demo_body.v_template
    spin_extra = demo_body.J_regressor_extra @ demo_body.v_template
    w = winding_number(demo_body.v_template, demo_body.f, np.vstack([rest, h36m, spin_extra]))
    inside = w > 0.5
    assert inside.all(), f"outside: {np.flatnonzero(~inside)} winding {w[~inside]}"


def test_posed_joints_stay_inside(demo_body, demo_model):
    from pipeline.body.figures import example_pose

    with torch.no_grad():
        out = demo_model(body_pose=example_pose(), betas=torch.full((1, 10), 1.0))
    w = winding_number(out.vertices[0].numpy(), demo_body.f, out.joints[0].numpy())
    assert (w > 0.5).all()


def test_all_parts_present_and_parts_follow_skinning(demo_body):
    counts = np.bincount(demo_body.part_labels, minlength=NUM_SMPL_JOINTS)
    assert (counts > 0).all(), dict(zip(SMPL_JOINT_NAMES, counts))
    np.testing.assert_array_equal(demo_body.part_labels, demo_body.weights.argmax(axis=1))
    assert (demo_body.weights >= 0).all()
    np.testing.assert_allclose(demo_body.weights.sum(axis=1), 1.0, atol=1e-9)
    # left parts are on the body's left (+x), right parts on its right
    x = demo_body.v_template[:, 0]
    for name in SMPL_JOINT_NAMES:
        side = np.sign(x[demo_body.part_labels == JOINT[name]].mean())
        if name.startswith("left_"):
            assert side > 0, name
        elif name.startswith("right_"):
            assert side < 0, name


def test_skinning_is_smooth_across_joints(demo_body):
    """Blends exist near the elbow (smooth LBS), and never between unrelated parts."""
    w = demo_body.weights
    elbow_blend = (w[:, JOINT["left_shoulder"]] > 0.2) & (w[:, JOINT["left_elbow"]] > 0.2)
    assert elbow_blend.sum() >= 10
    assert np.abs(w[demo_body.part_labels == JOINT["left_hip"], JOINT["right_hip"]]).max() == 0


def test_lbs_moves_only_the_bent_limb(demo_body, demo_model):
    pose = torch.zeros(1, NUM_SMPL_JOINTS, 3)
    pose[0, JOINT["left_elbow"], 1] = 1.2
    with torch.no_grad():
        bent = demo_model(body_pose=pose[:, 1:].reshape(1, -1)).vertices[0].numpy()
    moved = np.linalg.norm(bent - demo_body.v_template, axis=1)
    parts = demo_body.part_labels
    hand = np.isin(parts, [JOINT["left_wrist"], JOINT["left_hand"]])
    assert moved[hand].min() > 0.05
    right_side = np.isin(parts, [JOINT[n] for n in SMPL_JOINT_NAMES if n.startswith("right_")])
    assert moved[right_side].max() < 1e-6


def test_shape_directions(demo_body, demo_model):
    def height(beta0):
        betas = torch.zeros(1, 10)
        betas[0, 0] = beta0
        with torch.no_grad():
            v = demo_model(betas=betas).vertices[0].numpy()
        return np.ptp(v[:, 1])

    assert height(-2) < height(0) < height(2)
    assert abs(height(2) - height(0)) > 0.05
    # every direction changes the body, and the 10 directions are linearly independent
    flat = demo_body.shapedirs.reshape(-1, 10)
    assert np.linalg.matrix_rank(flat) == 10
    assert np.linalg.norm(flat, axis=0).min() > 0.05


def test_batched_forward_with_metadata_vertex_ids(demo_body, demo_model):
    gen = torch.Generator().manual_seed(0)
    b = 5
    out = demo_model(betas=torch.randn(b, 10, generator=gen), body_pose=0.3 * torch.randn(b, 69, generator=gen),
                     global_orient=torch.randn(b, 3, generator=gen), transl=torch.randn(b, 3, generator=gen))
    v = len(demo_body.v_template)
    assert out.vertices.shape == (b, v, 3) and out.joints.shape == (b, 24, 3)
    assert out.extra_joints.shape == (b, len(EXTRA_JOINT_NAMES), 3) and out.h36m_joints.shape == (b, 17, 3)
    ids = [demo_body.extra_vertex_ids[n] for n in EXTRA_JOINT_NAMES]
    torch.testing.assert_close(out.extra_joints, out.vertices[:, ids])
    torch.testing.assert_close(out.h36m_joints, torch.einsum("jv,bvc->bjc", demo_model.J_regressor_h36m, out.vertices))
    j49 = joints49(out)
    assert j49.shape == (b, 49, 3)
    names = {n: i for i, n in enumerate(JOINTS49_NAMES)}
    torch.testing.assert_close(j49[:, names["OP LWrist"]], out.joints[:, JOINT["left_wrist"]])
    torch.testing.assert_close(j49[:, names["Left Eye"]], out.vertices[:, demo_body.extra_vertex_ids["leye"]])
    torch.testing.assert_close(j49[:, names["Top of Head (LSP)"]], out.spin_extra_joints[:, 3])


def test_landmarks_are_where_their_names_say(demo_body):
    v, ids = demo_body.v_template, demo_body.extra_vertex_ids
    assert v[ids["nose"], 2] > v[:, 2][demo_body.part_labels == JOINT["head"]].mean() + 0.05
    assert v[ids["leye"], 0] > 0 > v[ids["reye"], 0]
    assert v[ids["LBigToe"], 2] > v[ids["LHeel"], 2] + 0.15
    assert v[ids["lmiddle"], 0] > v[ids["lthumb"], 0] > 0.6
    assert len(set(ids.values())) == len(ids)


def test_same_seed_same_body_other_seed_other_body(demo_body):
    again = build_demo_body(seed=0, grid_spacing=0.02)
    other = build_demo_body(seed=7, grid_spacing=0.02)
    for key in (*STANDARD_KEYS, "part_labels", "J_regressor_h36m"):
        np.testing.assert_array_equal(getattr(again, key), getattr(demo_body, key))
    assert len(other.v_template) != len(demo_body.v_template) or not np.array_equal(other.v_template, demo_body.v_template)


def test_saved_file_round_trips(tmp_path, demo_body):
    demo_body.save(tmp_path / "demo.npz")
    loaded = load_body_model(tmp_path / "demo.npz")
    for key in (*STANDARD_KEYS, "part_labels", "J_regressor_h36m", "J_regressor_extra"):
        np.testing.assert_array_equal(getattr(loaded, key), getattr(demo_body, key))
    assert loaded.extra_vertex_ids == demo_body.extra_vertex_ids and loaded.name == "demo_body"


def test_headless_silhouette_is_one_connected_component(demo_body):
    from pipeline.camera import look_at
    from pipeline.render import render_vertex_colors

    verts = demo_body.v_template
    center = 0.5 * (verts.min(0) + verts.max(0))
    colors = np.full((len(verts), 3), 255, dtype=np.uint8)
    _, depth = render_vertex_colors(verts, demo_body.f, colors, look_at(center + [0, 0, 3.2], center),
                                    yfov=np.deg2rad(34), width=256, height=256)
    mask = depth > 0
    labels, count = ndimage.label(mask)
    assert count == 1
    assert 0.05 < mask.mean() < 0.5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_forward_on_cuda_matches_cpu(demo_body):
    cpu = BodyModel(demo_body)
    gpu = BodyModel(demo_body).cuda()
    pose = 0.3 * torch.randn(4, 69)
    torch.testing.assert_close(gpu(body_pose=pose.cuda()).vertices.cpu(), cpu(body_pose=pose).vertices, atol=1e-4, rtol=1e-4)
