"""Report figure of DSR's semantic rendering: for a few packed samples, the crop, its cleaned parser
labels merged into DSR's 8 classes, and the clothing prior rendered by the soft rasteriser on the
sample's body (ground truth, or a model's prediction when given), as the DSR losses see them: the most
likely merged class per pixel, and the minimal-clothing render that DSR-MC compares with its target.

    python -m trainers.dsr_figure PACKED.h5 PRIOR.npz BODY OUT.png [--samples 4] [--predictions P.npz]
                                  [--settings-json '{"sigma": 1e-5, ...}']

The ground-truth body's camera is the translation that best projects its 49 joints onto the sample's
2D keypoints (pipeline.camera.estimate_translation); predictions give (rotmat, betas, cam) per row.
"""

from __future__ import annotations

import argparse
import json
import logging

import numpy as np
import torch
from PIL import Image, ImageDraw

from models.rotations import axis_angle_to_rotmat
from models.smpl_head import SMPLHead
from pipeline.body.model import BodyModel, load_body_model
from pipeline.camera import crop_focal_length, estimate_translation, translation_to_weak_perspective
from pipeline.cli import start_logging
from pipeline.figures import save_grid
from pipeline.labelsets import DSR_MERGED_LABELS, IGNORE, dsr_merge_lut, palette
from trainers.dsr_losses import DSRLossSettings, dsr_losses, load_face_prior
from trainers.packed import PackedDataset

log = logging.getLogger(__name__)


def _coloured(classes: np.ndarray, known: np.ndarray | None = None) -> np.ndarray:
    colours = palette(len(DSR_MERGED_LABELS))[np.clip(classes, 0, len(DSR_MERGED_LABELS) - 1)]
    if known is not None:
        colours[~known] = (128, 128, 128)  # ignored: outside the keypoint box
    return colours


def _caption(tile: np.ndarray, text: str) -> np.ndarray:
    im = Image.fromarray(np.ascontiguousarray(tile))
    ImageDraw.Draw(im).text((4, 4), text, fill=(255, 255, 255))
    return np.asarray(im)


def place_ground_truth(sample: dict, head: SMPLHead, resolution: int):
    """(rotmat (1, 24, 3, 3), betas (1, 10), cam (1, 3)) of a packed sample's ground-truth body in its crop
    of `resolution` pixels: the weak-perspective camera of the translation that best projects the body's
    49 joints onto the sample's 2D keypoints; None with too few keypoints."""
    pose = torch.as_tensor(np.asarray(sample["pose"]), dtype=torch.float32).reshape(1, 24, 3)
    betas = torch.as_tensor(np.asarray(sample["betas"]), dtype=torch.float32)[None]
    rotmat = axis_angle_to_rotmat(pose)
    with torch.no_grad():
        joints = head(rotmat, betas, torch.tensor([[1.0, 0.0, 0.0]])).joints[0].numpy()
    kp = np.asarray(sample["keypoints"], dtype=np.float64).copy()
    kp[:, :2] = (kp[:, :2] + 1.0) * resolution / 2.0 - 0.5  # normalised -> crop pixels (pipeline.camera)
    f = crop_focal_length(resolution)
    t = estimate_translation(joints.astype(np.float64), kp, f, ((resolution - 1) / 2.0, (resolution - 1) / 2.0))
    if t is None:
        return None
    return rotmat, betas, translation_to_weak_perspective(torch.as_tensor(t, dtype=torch.float32)[None], f, resolution)


def dsr_figure(packed: str, prior_file: str, body_file: str, out: str, samples: int = 4,
               predictions: str | None = None, settings: DSRLossSettings = DSRLossSettings()) -> None:
    data = PackedDataset([packed])
    rows = []
    for i in range(len(data)):
        sample = data[i]
        if bool(sample["has_parser"]) and bool(sample["has_smpl"]):
            rows.append((i, sample))
        if len(rows) == samples:
            break
    if not rows:
        raise ValueError(f"{packed}: no row has both parser labels and SMPL parameters to render")
    body = BodyModel(load_body_model(body_file))
    head = SMPLHead(body)
    faces = torch.as_tensor(body.faces)
    prior = torch.as_tensor(load_face_prior(prior_file, num_faces=len(faces)))
    O = int(rows[0][1]["parser_labels"].shape[-1])
    lut = dsr_merge_lut()
    tiles = []
    for i, sample in rows:
        if predictions is None:
            placed = place_ground_truth(sample, head, O)
            if placed is None:
                log.info("row %d: too few keypoints to place the body; skipped", i)
                continue
            rotmat, betas, cam = placed
            source = "ground truth"
        else:
            with np.load(predictions, allow_pickle=False) as z:
                rotmat = torch.as_tensor(z["rotmat"][i])[None]
                betas = torch.as_tensor(z["betas"][i])[None]
                cam = torch.as_tensor(z["cam"][i])[None]
            source = "prediction"
        with torch.no_grad():
            body_out = head(rotmat, betas, cam)
            losses = dsr_losses(body_out.vertices, body_out.cam_t, faces, prior,
                                torch.as_tensor(sample["parser_labels"])[None], torch.tensor([True]), settings)
        labels = np.asarray(sample["parser_labels"])
        known = labels != IGNORE
        image = np.asarray(sample["image"]).transpose(1, 2, 0)
        if image.shape[0] != O:
            image = np.asarray(Image.fromarray(image).resize((O, O), Image.BILINEAR))
        render = losses.render[0].numpy()  # (9, O, O)
        classes = render[1:].argmax(0)
        covered = render[1:].sum(0) > 0.5
        prior_tile = np.where(covered[..., None], _coloured(classes), 0).astype(np.uint8)
        mc = (255 * np.clip(render[0], 0, 1)).astype(np.uint8)
        tiles += [_caption(image, f"row {i}"), _caption(_coloured(lut[labels].astype(np.int64), known), "parser (merged)"),
                  _caption(prior_tile, f"prior on {source}"),
                  _caption(np.repeat(mc[..., None], 3, axis=2), f"MC render, loss {float(losses.mc):.2f}")]
    if not tiles:
        raise ValueError(f"{packed}: none of the first rows could be placed in its crop (too few keypoints)")
    legend = Image.new("RGB", (tiles[0].shape[1], tiles[0].shape[0]), (255, 255, 255))
    draw = ImageDraw.Draw(legend)
    for k, name in enumerate(DSR_MERGED_LABELS):
        draw.rectangle((8, 8 + 16 * k, 20, 20 + 16 * k), fill=tuple(int(c) for c in palette(len(DSR_MERGED_LABELS))[k]))
        draw.text((26, 9 + 16 * k), name, fill=(0, 0, 0))
    save_grid(tiles, out, per_row=4,
              banner="DSR semantic rendering: crop | cleaned parser labels (8 merged classes; grey: ignored) | "
                     "prior rendered, most likely class | minimal-clothing render")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("packed")
    parser.add_argument("prior")
    parser.add_argument("body")
    parser.add_argument("out")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--predictions", help="npz with rotmat (N, 24, 3, 3), betas (N, 10), cam (N, 3) per row")
    parser.add_argument("--settings-json", default="{}", help="the config's dsr_losses section (JSON)")
    args = parser.parse_args(argv)
    start_logging()
    dsr_figure(args.packed, args.prior, args.body, args.out, args.samples, args.predictions,
               DSRLossSettings(**json.loads(args.settings_json)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
