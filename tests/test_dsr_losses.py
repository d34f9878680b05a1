"""DSR's losses, vectorised over the batch, against a per-sample reference with the official structure
(a loop over the batch, one render per texture, the cross-entropy criterion's weight set per sample,
scipy's distance transform), and the rules for invalid samples, options and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.soft_render import SoftRasterSettings, project_vertices, soft_rasterize
from pipeline.camera import crop_focal_length, intrinsics
from pipeline.labelsets import CIHP, DSR_MERGED_LABELS, IGNORE, MIN_CLOTHING_LABELS, dsr_merge_lut
from pipeline.raster import rasterize
from trainers.dsr_losses import (DSRLossSettings, class_ratio_weights, distance_to_mask, dsr_losses,
                                 load_face_prior, merge_matrix)

F64 = torch.float64
RES = 64


@pytest.fixture(scope="module")
def scene(demo_body):
    """Two demo bodies (ground truth and a perturbed 'prediction'), a random face prior, and parser-like
    labels: the ground-truth body rasterised, each pixel labelled with its face's most likely label,
    pixels outside a keypoint-like box set to 255."""
    from pipeline.body.model import BodyModel

    body = BodyModel(demo_body).double()
    g = torch.Generator().manual_seed(0)
    B = 3
    orient = torch.tensor([[math.pi, 0.0, 0.0]], dtype=F64).expand(B, 3)
    pose = 0.15 * torch.randn(B, 69, generator=g, dtype=F64)
    gt = body(global_orient=orient, body_pose=pose).vertices
    pred = body(global_orient=orient + 0.05 * torch.randn(B, 3, generator=g, dtype=F64),
                body_pose=pose + 0.05 * torch.randn(B, 69, generator=g, dtype=F64)).vertices
    cam_t = torch.tensor([[0.0, 0.1, 46.0], [0.05, 0.05, 50.0], [-0.05, 0.15, 44.0]], dtype=F64)
    faces = torch.as_tensor(body.faces)
    rng = np.random.default_rng(0)
    prior = rng.gamma(0.3, size=(len(faces), 20)).astype(np.float32)
    prior /= prior.sum(1, keepdims=True)
    face_label = torch.as_tensor(prior.argmax(1))
    K = torch.as_tensor(intrinsics(crop_focal_length(RES), RES))
    labels = torch.zeros(B, RES, RES, dtype=torch.uint8)
    for b in range(B):
        r = rasterize(gt[b] + cam_t[b], faces, K, RES, RES)
        labels[b][r.mask] = face_label[r.face_id[r.mask]].to(torch.uint8)
    labels[:, :, :6] = IGNORE  # outside the keypoint box
    labels[2, 40:] = IGNORE
    return {"pred": pred, "cam_t": cam_t, "faces": faces, "prior": torch.as_tensor(prior), "labels": labels,
            "has_parser": torch.tensor([True, True, True])}


def reference_losses(scene, s: DSRLossSettings):
    """The official structure: per sample, textures built, each of the nine textures rendered alone, the
    loss computed with a criterion whose weight is set for that sample."""
    from scipy.ndimage import distance_transform_edt

    pred, cam_t, faces, prior, labels = (scene[k] for k in ("pred", "cam_t", "faces", "prior", "labels"))
    B = len(pred)
    raster = SoftRasterSettings(image_size=RES, sigma=s.sigma, gamma=s.gamma)
    lut = dsr_merge_lut()
    min_pixels = s.min_pixels_at_224 * (RES / 224) ** 2
    criterion = torch.nn.CrossEntropyLoss()
    mc_out, c_out = [], []
    for b in range(B):
        lab = labels[b].numpy().astype(np.int64)
        if s.outside_box == "background":
            lab = np.where(lab == IGNORE, 0, lab)
        known = lab != IGNORE
        valid = [lab_id for lab_id in MIN_CLOTHING_LABELS if (lab == lab_id).sum() > min_pixels]
        screen = project_vertices(pred[b:b + 1], cam_t[b:b + 1], RES)
        renders = []
        textures = [prior[:, valid].sum(1)] + [prior[:, lut[:20] == k].sum(1) for k in range(8)]
        for tex in textures:
            rgb, _ = soft_rasterize(screen, faces, tex[:, None].to(F64), raster)
            renders.append(rgb[0, 0])
        if not valid:
            mc_out.append(None)
        else:
            target = torch.as_tensor(np.isin(lab, valid), dtype=F64)
            p, k = renders[0], torch.as_tensor(known, dtype=F64)
            if s.mc_loss == "distm":
                dist = torch.as_tensor(distance_transform_edt(~np.isin(lab, valid)), dtype=F64)
                mc_out.append((p * k * dist).sum() / ((p * k).sum() ** 1.5 + 1e-6))
            elif s.iou == "image":
                mc_out.append(1 - (p * target * k).sum() / (((p + target - p * target) * k).sum() + 1e-6))
            else:
                rows = (p * target * k).sum(1) / (((p + target - p * target) * k).sum(1) + 1e-6)
                mc_out.append(1 - rows.mean())
        merged = np.where(known, lut[np.where(known, lab, 0)], 0).astype(np.int64)
        counts = np.array([((merged == k) & known).sum() for k in range(8)], dtype=np.float64)
        big = counts[counts >= min_pixels]
        w = np.where(counts > min_pixels, big.min() / np.maximum(counts, 1), 0.0) if len(big) else np.zeros(8)
        logits = torch.stack(renders[1:])[None]  # (1, 8, H, W)
        target_c = torch.as_tensor(np.where(known, merged, -100).astype(np.int64))[None]
        if not w.any():
            c_out.append(None)
            continue
        if s.c_loss == "official":
            criterion = torch.nn.CrossEntropyLoss(weight=torch.as_tensor(w, dtype=F64), ignore_index=-100)
            c_out.append(criterion(logits, target_c))
        else:
            logp = (logits.clamp(min=1e-8) / logits.clamp(min=1e-8).sum(1, keepdim=True)).log()
            c_out.append(F.nll_loss(logp, target_c, weight=torch.as_tensor(w, dtype=F64), ignore_index=-100))
    return mc_out, c_out


@pytest.mark.parametrize("options", [
    {},
    {"iou": "rows", "outside_box": "background", "invalid_samples": "average_zeros"},
    {"mc_loss": "distm", "c_loss": "log_prob"},
])
def test_vectorised_losses_equal_the_per_sample_official_structure(scene, options):
    s = DSRLossSettings(**options)
    out = dsr_losses(scene["pred"], scene["cam_t"], scene["faces"], scene["prior"], scene["labels"],
                     scene["has_parser"], s)
    mc_ref, c_ref = reference_losses(scene, s)
    for b in range(3):
        if mc_ref[b] is not None:
            torch.testing.assert_close(out.mc_per_sample[b], mc_ref[b], rtol=1e-6, atol=1e-9)
        if c_ref[b] is not None and bool(out.c_included[b]):
            torch.testing.assert_close(out.c_per_sample[b], c_ref[b], rtol=1e-6, atol=1e-9)
    assert out.render.shape == (3, 9, RES, RES)
    assert bool(out.mc_included.any()) and bool(out.c_included.any())


def test_gradients_reach_the_vertices_and_the_camera(scene):
    verts = scene["pred"].clone().requires_grad_(True)
    cam_t = scene["cam_t"].clone().requires_grad_(True)
    out = dsr_losses(verts, cam_t, scene["faces"], scene["prior"], scene["labels"], scene["has_parser"])
    (out.mc + out.c).backward()
    assert verts.grad.abs().sum() > 0 and cam_t.grad.abs().sum() > 0
    assert torch.isfinite(verts.grad).all() and torch.isfinite(cam_t.grad).all()


def test_samples_without_labels_are_excluded_or_averaged_in_as_zeros(scene):
    has = torch.tensor([True, False, True])
    out = dsr_losses(scene["pred"], scene["cam_t"], scene["faces"], scene["prior"], scene["labels"], has)
    assert not out.mc_included[1] and not out.c_included[1] and out.mc_per_sample[1] == 0
    included = out.mc_included
    torch.testing.assert_close(out.mc, out.mc_per_sample[included].mean())
    official = dsr_losses(scene["pred"], scene["cam_t"], scene["faces"], scene["prior"], scene["labels"], has,
                          DSRLossSettings(invalid_samples="average_zeros"))
    torch.testing.assert_close(official.mc, official.mc_per_sample.sum() / 3)
    assert official.mc < out.mc  # the zero dilutes the official mean


def test_non_finite_predictions_raise_naming_the_samples(scene):
    cam_t = scene["cam_t"].clone()
    cam_t[1, 2] = float("nan")
    with pytest.raises(FloatingPointError, match=r"\[1\]"):
        dsr_losses(scene["pred"], cam_t, scene["faces"], scene["prior"], scene["labels"], scene["has_parser"])


def test_official_flip_keeps_the_mirrored_labels_sides(scene):
    """With flip_swaps_sides=False a flipped sample's left arm pixels count as the right arm, as in the
    official loader (which mirrors the label image without swapping sides)."""
    labels = torch.zeros(1, RES, RES, dtype=torch.uint8)
    labels[0, 10:40, 10:30] = CIHP["Left-arm"]
    args = (scene["pred"][:1], scene["cam_t"][:1], scene["faces"], scene["prior"], labels, torch.tensor([True]))
    ours = dsr_losses(*args, flipped=torch.tensor([True]))
    official = dsr_losses(*args, DSRLossSettings(flip_swaps_sides=False), flipped=torch.tensor([True]))
    assert not torch.equal(ours.c_per_sample, official.c_per_sample)
    # the minimal-clothing texture is the left arm's prior column in ours, the right arm's in the official
    screen = project_vertices(scene["pred"][:1], scene["cam_t"][:1], RES)
    for out, label in ((ours, "Left-arm"), (official, "Right-arm")):
        expected, _ = soft_rasterize(screen, scene["faces"], scene["prior"][:, [CIHP[label]]].to(F64),
                                     SoftRasterSettings(image_size=RES))
        torch.testing.assert_close(out.render[:, 0], expected[:, 0])


def test_class_ratio_weights_follow_the_official_rule():
    counts = torch.tensor([[1000, 100, 60, 59, 0, 200, 61, 80]])
    w = class_ratio_weights(counts, 60)
    expected = torch.tensor([[60 / 1000, 60 / 100, 0, 0, 0, 60 / 200, 60 / 61, 60 / 80]])
    torch.testing.assert_close(w, expected)
    assert class_ratio_weights(torch.tensor([[10, 20, 0, 0, 0, 0, 0, 0]]), 60).abs().sum() == 0


def test_distance_to_mask_equals_scipy():
    from scipy.ndimage import distance_transform_edt

    g = torch.Generator().manual_seed(1)
    mask = torch.rand(3, 23, 31, generator=g) > 0.97
    ours = distance_to_mask(mask)
    for b in range(3):
        np.testing.assert_allclose(ours[b].numpy(), distance_transform_edt(~mask[b].numpy()), rtol=1e-6, atol=1e-5)


def test_merge_matrix_is_the_official_table():
    M = merge_matrix()
    assert M.sum(1).tolist() == [1.0] * 20
    assert M[CIHP["Face"], DSR_MERGED_LABELS.index("head")] == 1
    assert M[CIHP["Left-shoe"], DSR_MERGED_LABELS.index("leftLeg")] == 1
    assert M[CIHP["Torso-skin"], DSR_MERGED_LABELS.index("upperclothes")] == 1


def test_face_prior_files_are_checked(tmp_path):
    prior = np.full((10, 20), 0.05, np.float32)
    np.savez(tmp_path / "prior.npz", face_prior=prior, vertex_prior=prior)
    np.save(tmp_path / "semantic_prior.npy", prior[None])  # the official file squeezes a leading axis
    for name in ("prior.npz", "semantic_prior.npy"):
        np.testing.assert_array_equal(load_face_prior(tmp_path / name, num_faces=10), prior)
    with pytest.raises(ValueError, match="another body model"):
        load_face_prior(tmp_path / "prior.npz", num_faces=13776)
    np.save(tmp_path / "bad.npy", prior[:, :8])
    with pytest.raises(ValueError, match=r"bad\.npy.*\(10, 8\)"):
        load_face_prior(tmp_path / "bad.npy")
    with pytest.raises(FileNotFoundError, match="semantic_prior"):
        load_face_prior(tmp_path / "missing.npy")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_losses_equal_the_cpus(scene):
    outs = []
    for device in ("cpu", "cuda"):
        v = scene["pred"].to(device).requires_grad_(True)
        out = dsr_losses(v, scene["cam_t"].to(device), scene["faces"].to(device), scene["prior"].to(device),
                         scene["labels"].to(device), scene["has_parser"].to(device))
        (out.mc + out.c).backward()
        outs.append((out.mc.item(), out.c.item(), v.grad.cpu()))
    assert outs[0][0] == pytest.approx(outs[1][0], rel=1e-6) and outs[0][1] == pytest.approx(outs[1][1], rel=1e-6)
    torch.testing.assert_close(outs[0][2], outs[1][2], rtol=1e-5, atol=1e-8)
