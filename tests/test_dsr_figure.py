"""The DSR rendering figure: ground-truth bodies placed in their crops from the 2D keypoints land on the
person (the soft render covers the sample's body-part labels), and the figure is written."""

import numpy as np
import pytest
import torch
from PIL import Image

from test_pack import make_pack, packed_inputs  # noqa: F401 - the packed-inputs fixture


@pytest.fixture(scope="module")
def packed(tmp_path_factory, split, body_file, packed_inputs):  # noqa: F811
    out, _ = make_pack(tmp_path_factory.mktemp("dsr_fig"), split, body_file, packed_inputs)
    return out


def test_placed_ground_truth_bodies_cover_their_part_labels(packed, body_file):
    from models.smpl_head import SMPLHead
    from models.soft_render import SoftRasterSettings, project_vertices, soft_rasterize
    from pipeline.body.model import BodyModel, load_body_model
    from trainers.dsr_figure import place_ground_truth
    from trainers.packed import PackedDataset

    data = PackedDataset([str(packed)])
    head = SMPLHead(BodyModel(load_body_model(body_file)))
    faces = torch.as_tensor(head.body.faces)
    checked = 0
    for i in range(len(data)):
        s = data[i]
        if not (bool(s["has_smpl"]) and bool(s["has_parts"])):
            continue
        O = s["part_labels"].shape[-1]
        placed = place_ground_truth(s, head, O)
        assert placed is not None
        with torch.no_grad():
            out = head(*placed)
            _, alpha = soft_rasterize(project_vertices(out.vertices, out.cam_t, O), faces,
                                      torch.ones(len(faces), 1), SoftRasterSettings(image_size=O))
        parts = np.asarray(s["part_labels"])
        body = (parts > 0) & (parts <= 24)
        covered = alpha[0].numpy() > 0.5
        iou = (body & covered).sum() / max((body | covered).sum(), 1)
        assert iou > 0.8, (i, iou)  # the part labels were rendered from the same body with the exact camera
        checked += 1
    assert checked >= 2


def test_figure_is_written(packed, body_file, tmp_path):
    from trainers.dsr_figure import main

    faces = len(__import__("pipeline.body.model", fromlist=["load_body_model"]).load_body_model(body_file).f)
    rng = np.random.default_rng(0)
    prior = rng.dirichlet(np.full(20, 0.3), size=faces).astype(np.float32)
    np.savez(tmp_path / "prior.npz", face_prior=prior)
    out = tmp_path / "dsr.png"
    assert main([str(packed), str(tmp_path / "prior.npz"), str(body_file), str(out), "--samples", "2"]) == 0
    im = np.asarray(Image.open(out))
    assert im.shape[1] == 4 * 224 and im.shape[0] >= 224
