"""The soft rasteriser against each convention of the legacy SoftRas kernel DSR used
(../shared/notes/softras.md), each on a case that isolates it, plus gradients, the hard limit against
the exact rasteriser, culling and chunking against the dense computation."""

from __future__ import annotations

import math

import pytest
import torch

from models.soft_render import SoftRasterSettings, project_vertices, soft_rasterize
from pipeline.camera import crop_focal_length, intrinsics
from pipeline.raster import rasterize

F64 = torch.float64
ONE = torch.tensor([[0, 1, 2]])


def screen_triangle(points, z=5.0):
    """(1, 3, 3) screen vertices from three (col, row) points at depth z."""
    return torch.tensor([[[c, r, z] for c, r in points]], dtype=F64)


def test_a_pixel_centre_on_an_edge_has_alpha_one_half():
    """Inside means all barycentrics strictly in (0, 1): on an edge, d = 0 and D = sigmoid(0)."""
    s = SoftRasterSettings(image_size=16)
    _, alpha = soft_rasterize(screen_triangle([(2, 2), (10, 2), (2, 10)]), ONE, torch.ones(1, 1, dtype=F64), s)
    assert alpha[0, 2, 5].item() == 0.5  # on the edge row = 2
    assert alpha[0, 6, 6].item() == 0.5  # on the hypotenuse col + row = 12
    assert alpha[0, 2, 2].item() == 0.5  # a vertex
    assert alpha[0, 4, 4].item() > 1 - 1e-12  # inside, far from every edge in units of sigma


def test_the_cut_off_distance_gives_exactly_zero_beyond_and_1e4_at_it():
    """D = 0 for faces farther than sqrt(sigma ln 9999) (NDC units) from the pixel; just inside that
    distance D is just above 1e-4. sigma in NDC^2: at 224 px one pixel is 2/224."""
    s = SoftRasterSettings(image_size=32)
    radius = math.sqrt(s.sigma * math.log(9999.0)) * s.image_size / 2  # pixels
    for gap, expect_zero in ((radius + 1e-6, True), (radius - 1e-6, False)):
        top = 5.0 + gap  # the triangle's top edge lies `gap` pixels below row 5
        _, alpha = soft_rasterize(screen_triangle([(0.5, top), (30.5, top), (15.5, top + 20)]), ONE,
                                  torch.ones(1, 1, dtype=F64), s)
        value = alpha[0, 5, 15].item()
        if expect_zero:
            assert value == 0.0
        else:
            assert 1e-4 <= value < 1.01e-4


def test_an_off_centre_body_lands_right_and_down_as_the_pinhole_puts_it():
    """DSR's mirrored projection matrix gives an ordinary top-down image: a point right of and below the
    optical axis (OpenCV camera: x right, y down) lands right of and below the centre, where the
    project's pinhole (pipeline.camera.intrinsics, f = 5000 at 224) puts it."""
    res = 224
    tri = torch.tensor([[[0.30, 0.20, 0.0], [0.36, 0.20, 0.0], [0.30, 0.26, 0.0]]], dtype=F64)
    cam_t = torch.tensor([[0.0, 0.0, 50.0]], dtype=F64)
    screen = project_vertices(tri, cam_t, res)
    _, alpha = soft_rasterize(screen, ONE, torch.ones(1, 1, dtype=F64), SoftRasterSettings(image_size=res))
    rows, cols = torch.nonzero(alpha[0] > 0.5, as_tuple=True)
    K = torch.as_tensor(intrinsics(crop_focal_length(res), res))
    cam = tri[0] + cam_t[0]
    pinhole = cam[:, :2] / cam[:, 2:] * K[0, 0] + K[:2, 2]  # (3, 2) col, row
    assert cols.double().mean() > res / 2 + 20 and rows.double().mean() > res / 2 + 10
    torch.testing.assert_close(screen[0, :, :2], pinhole, atol=1e-4, rtol=0)
    assert cols.min() >= pinhole[:, 0].min() - 1 and cols.max() <= pinhole[:, 0].max() + 1
    assert rows.min() >= pinhole[:, 1].min() - 1 and rows.max() <= pinhole[:, 1].max() + 1


def test_colour_is_the_depth_softmax_with_the_kernels_background_weight():
    """colour = (sum D e^(zn/g) c + e^(2 eps/g) c_bg) / (sum D e^(zn/g) + e^(2 eps/g)), zn = (far - z)/(far - near),
    with D = 1 deep inside both faces; alpha = 1 - prod(1 - D)."""
    s = SoftRasterSettings(image_size=16, gamma=0.5, eps=0.05)
    near_face = [[1, 1, 10.0], [14, 1, 10.0], [1, 14, 10.0]]
    far_face = [[1, 1, 40.0], [14, 1, 40.0], [1, 14, 40.0]]
    screen = torch.tensor([near_face + far_face], dtype=F64)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    tex = torch.tensor([[1.0], [3.0]], dtype=F64)
    rgb, alpha = soft_rasterize(screen, faces, tex, s, background=7.0)
    zn = torch.tensor([(100 - 10) / 99, (100 - 40) / 99], dtype=F64)
    w = torch.exp(zn / s.gamma)
    bg = math.exp(2 * s.eps / s.gamma)
    expected = (w[0] * 1 + w[1] * 3 + bg * 7) / (w.sum() + bg)
    torch.testing.assert_close(rgb[0, 0, 4, 4], expected, rtol=1e-9, atol=0)
    assert alpha[0, 4, 4].item() > 1 - 1e-12


def test_faces_beyond_far_enter_alpha_but_not_colour():
    s = SoftRasterSettings(image_size=16)
    screen = torch.tensor([[[1, 1, 150.0], [14, 1, 150.0], [1, 14, 150.0]]], dtype=F64)
    rgb, alpha = soft_rasterize(screen, ONE, torch.tensor([[5.0]], dtype=F64), s, background=2.0)
    assert alpha[0, 4, 4].item() > 1 - 1e-12
    assert rgb[0, 0, 4, 4].item() == pytest.approx(2.0)


def test_each_pixel_reads_its_own_faces_texture():
    """Just outside face 0 near its first two vertices (where the legacy kernel reads face 1's texture),
    the colour mixes face 0's texture with the background only."""
    s = SoftRasterSettings(image_size=32, sigma=2e-3)  # wide soft edges: outside pixels get D well above 0
    screen = torch.tensor([[[4, 10, 5.0], [14, 10, 5.0], [4, 20, 5.0],
                            [20, 2, 5.0], [28, 2, 5.0], [20, 8, 5.0]]], dtype=F64)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    rgb, alpha = soft_rasterize(screen, faces, torch.tensor([[1.0], [100.0]], dtype=F64), s, background=0.0)
    a, c = alpha[0, 9, 9].item(), rgb[0, 0, 9, 9].item()  # half a pixel above face 0's first edge
    assert 0.01 < a < 0.5 and 0 < c <= 1.0


def test_textures_of_any_channel_count_render_in_one_pass_as_in_nine():
    torch.manual_seed(0)
    s = SoftRasterSettings(image_size=24, sigma=1e-4)
    verts = torch.rand(2, 12, 3, dtype=F64) * torch.tensor([20.0, 20.0, 3.0], dtype=F64) + torch.tensor([2.0, 2.0, 4.0], dtype=F64)
    faces = torch.randint(0, 12, (10, 3))
    tex = torch.rand(2, 10, 9, dtype=F64)
    rgb, alpha = soft_rasterize(verts, faces, tex, s)
    for k in range(9):
        one, a1 = soft_rasterize(verts, faces, tex[..., k:k + 1], s)
        torch.testing.assert_close(one[:, 0], rgb[:, k], rtol=0, atol=1e-12)
        torch.testing.assert_close(a1, alpha, rtol=0, atol=0)


def random_mesh(seed, n_vertices=14, n_faces=12, size=20, batch=2):
    g = torch.Generator().manual_seed(seed)
    verts = torch.rand(batch, n_vertices, 3, generator=g, dtype=F64)
    verts = verts * torch.tensor([size * 0.8, size * 0.8, 3.0], dtype=F64) + torch.tensor([size * 0.1, size * 0.1, 4.0], dtype=F64)
    faces = torch.stack([torch.randperm(n_vertices, generator=g)[:3] for _ in range(n_faces)])
    return verts, faces


def test_culling_and_chunking_change_nothing_against_the_dense_computation():
    """Per-face box culling and chunks (with checkpointing) against every pixel x every face in one piece."""
    verts, faces = random_mesh(1, n_vertices=30, n_faces=40, size=32)
    tex = torch.rand(2, 40, 3, dtype=F64)
    for s in (SoftRasterSettings(image_size=32), SoftRasterSettings(image_size=32, sigma=3e-4, gamma=0.02)):
        dense = soft_rasterize(verts, faces, tex, s, dense=True)
        culled = soft_rasterize(verts, faces, tex, s)
        tiny_chunks = soft_rasterize(verts, faces, tex, SoftRasterSettings(**{**s.__dict__, "max_pairs": 97}))
        for out in (culled, tiny_chunks):
            torch.testing.assert_close(out[0], dense[0], rtol=0, atol=1e-6)
            torch.testing.assert_close(out[1], dense[1], rtol=0, atol=1e-6)
    # gradients through the checkpointed chunks equal those of one chunk
    grads = []
    for max_pairs in (10**9, 97):
        v = verts.clone().requires_grad_(True)
        t = tex.clone().requires_grad_(True)
        rgb, alpha = soft_rasterize(v, faces, t, SoftRasterSettings(image_size=32, sigma=3e-4, max_pairs=max_pairs))
        (rgb.square().sum() + alpha.sum()).backward()
        grads.append((v.grad, t.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])


def test_gradcheck_vertices_and_textures():
    """Analytic (autograd) against finite-difference gradients in float64, on a mesh whose soft edges
    cover many pixel centres (sigma large for its 12-pixel image)."""
    verts, faces = random_mesh(2, n_vertices=8, n_faces=5, size=12, batch=1)
    tex = torch.rand(1, 5, 2, dtype=F64)
    s = SoftRasterSettings(image_size=12, sigma=2e-2, gamma=0.3, cutoff=1e-12)

    def render(v, t):
        rgb, alpha = soft_rasterize(v, faces, t, s)
        return rgb, alpha

    assert torch.autograd.gradcheck(render, (verts.requires_grad_(True), tex.requires_grad_(True)),
                                    eps=1e-6, atol=1e-5, rtol=1e-4)


def test_hard_limit_owns_pixels_like_the_exact_rasteriser(demo_body):
    """With sigma and gamma -> 0, the soft render of face ids is the nearest face's id: equal to the
    exact z-buffer rasteriser (pipeline.raster) on >= 99.5% of the pixels either covers."""
    from pipeline.body.model import BodyModel

    body = BodyModel(demo_body).double()
    res = 128
    out = body(global_orient=torch.tensor([[math.pi, 0.0, 0.0]], dtype=F64),
               body_pose=0.2 * torch.randn(1, 69, generator=torch.Generator().manual_seed(0), dtype=F64))
    verts = out.vertices
    cam_t = torch.tensor([[0.05, 0.1, 2 * 5000 / (224 * 0.9)]], dtype=F64)
    faces = torch.as_tensor(body.faces)
    ids = torch.arange(len(faces), dtype=F64)[None, :, None]
    # The body's faces are sub-pixel at this size, so a pixel centre often lies within 1e-4 px of an
    # edge; sigma must make that band far narrower (1e-16 NDC^2: ~1e-7 px) and gamma must separate
    # depths a micrometre apart, for the limit to be reached.
    s = SoftRasterSettings(image_size=res, sigma=1e-16, gamma=1e-10)
    rgb, alpha = soft_rasterize(project_vertices(verts, cam_t, res), faces, ids, s)
    exact = rasterize(verts[0] + cam_t[0], faces, torch.as_tensor(intrinsics(crop_focal_length(res), res)), res, res)
    covered = (alpha[0] > 0.5) | exact.mask
    soft_ids = torch.where(alpha[0] > 0.5, rgb[0, 0].round().long(), torch.full_like(exact.face_id, -1))
    agree = (soft_ids == exact.face_id)[covered].double().mean().item()
    assert covered.sum() > 500
    assert agree >= 0.995, agree


def test_pytorch3d_backend_agrees_when_installed():
    pytest.importorskip("pytorch3d", reason="pytorch3d is optional and not installed here (not on PyPI)")
    from models.soft_render import pytorch3d_soft_rasterize

    verts, faces = random_mesh(3, n_vertices=30, n_faces=40, size=64, batch=2)
    tex = torch.rand(2, 40, 3, dtype=torch.float32)
    s = SoftRasterSettings(image_size=64, sigma=1e-4)
    ours = soft_rasterize(verts.float(), faces, tex, s)
    theirs = pytorch3d_soft_rasterize(verts.float(), faces, tex, s)
    assert ((ours[1] - theirs[1]).abs() < 1e-2).float().mean() > 0.99


def test_analytic_backward_equals_autograd_through_the_same_terms():
    """The hand-derived backward (the default) against autograd through the per-pair terms, in float64,
    for soft edges wide and narrow, with chunks."""
    from dataclasses import replace

    verts, faces = random_mesh(4, n_vertices=30, n_faces=40, size=32)
    tex = torch.rand(2, 40, 3, dtype=F64)
    weights = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5), dtype=F64)
    for s in (SoftRasterSettings(image_size=32, sigma=3e-4, gamma=0.05, max_pairs=500), SoftRasterSettings(image_size=32)):
        grads = []
        for mode in ("analytic", "autograd"):
            v, t = verts.clone().requires_grad_(True), tex.clone().requires_grad_(True)
            rgb, alpha = soft_rasterize(v, faces, t, replace(s, backward=mode))
            ((rgb * weights).sum() + (alpha * weights[:, 0]).sum()).backward()
            grads.append((v.grad, t.grad))
        assert grads[0][0].abs().max() > 0
        torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-9, atol=1e-10)


@pytest.mark.slow
def test_compiled_kernels_give_the_eager_results():
    """torch.compile'd per-pair kernels (about a minute of one-time compilation) against eager ones."""
    from dataclasses import replace

    verts, faces = random_mesh(6, n_vertices=40, n_faces=60, size=48)
    verts, tex = verts.float(), torch.rand(2, 60, 4)
    s = SoftRasterSettings(image_size=48, sigma=2e-4)
    outs = []
    for compiled in (False, True):
        v = verts.clone().requires_grad_(True)
        rgb, alpha = soft_rasterize(v, faces, tex, replace(s, compile=compiled))
        (rgb.sum() + alpha.sum()).backward()
        outs.append((rgb.detach(), alpha.detach(), v.grad))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_renders_and_gradients_equal_the_cpus():
    verts, faces = random_mesh(7, n_vertices=30, n_faces=40, size=32)
    tex = torch.rand(2, 40, 3, dtype=F64)
    s = SoftRasterSettings(image_size=32, sigma=3e-4)
    results = []
    for device in ("cpu", "cuda"):
        v = verts.to(device).requires_grad_(True)
        t = tex.to(device).requires_grad_(True)
        rgb, alpha = soft_rasterize(v, faces.to(device), t, s)
        (rgb.square().sum() + alpha.sum()).backward()
        results.append([x.detach().cpu() for x in (rgb, alpha, v.grad, t.grad)])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)
