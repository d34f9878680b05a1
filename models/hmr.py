"""HMR with SPIN's iterative regressor (Kolotouros et al., ICCV 2019): the model DSR trains.

ResNet-50 features, average-pooled to 2048 numbers, and three iterations of an MLP that refines the
SMPL parameters from the mean: each iteration reads [features, pose (144, 6D), shape (10), cam (3)]
and adds its output to the estimate. fc1 -> dropout -> fc2 -> dropout, no nonlinearity between
(as SPIN and DSR).

Published layouts, all loaded strictly by `from_pretrained`:
- SPIN `model_checkpoint.pt`: {"model": {conv1.*, layer1..4.*, fc1.*, ..., init_pose, ...}, "optimizer": ...},
  one flat namespace: the ResNet names go to our `backbone.`, the regressor's to `head.`;
- DSR `dsr_w3DPW_checkpoint.pt` / `dsr_wo3DPW_checkpoint.pt`: a Lightning checkpoint whose state dict
  holds the network as model.backbone.* and model.head.* (our names), beside the SMPL body model's
  buffers (set aside: the regressor never carries the licensed body model);
- our own checkpoints (backbone.*, head.*).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from models import checkpoint
from models.backbones import build_backbone
from models.rotations import rot6d_to_rotmat
from models.smpl_head import MeanParams, Prediction
from pipeline.skeleton import NUM_BETAS, NUM_SMPL_JOINTS

NPOSE = 6 * NUM_SMPL_JOINTS  # 144


class HMRHead(nn.Module):
    """Iterative error feedback: (B, C, h, w) features -> (pose6d (B, 144), shape (B, 10), cam (B, 3))."""

    def __init__(self, in_channels: int, mean: MeanParams, hidden: int = 1024):
        super().__init__()
        self.fc1 = nn.Linear(in_channels + NPOSE + NUM_BETAS + 3, hidden)
        self.drop1 = nn.Dropout()
        self.fc2 = nn.Linear(hidden, hidden)
        self.drop2 = nn.Dropout()
        self.decpose = nn.Linear(hidden, NPOSE)
        self.decshape = nn.Linear(hidden, NUM_BETAS)
        self.deccam = nn.Linear(hidden, 3)
        for layer in (self.decpose, self.decshape, self.deccam):  # start at the mean: small updates
            nn.init.xavier_uniform_(layer.weight, gain=0.01)
        for name, value in mean.buffers().items():
            self.register_buffer(name, value)

    def forward(self, features: torch.Tensor, n_iter: int = 3):
        batch = features.shape[0]
        xf = features.mean(dim=(2, 3))  # (B, C): SPIN's AvgPool2d(7) at a 224 input
        pose = self.init_pose.expand(batch, -1)
        shape = self.init_shape.expand(batch, -1)
        cam = self.init_cam.expand(batch, -1)
        for _ in range(n_iter):
            x = self.drop2(self.fc2(self.drop1(self.fc1(torch.cat([xf, pose, shape, cam], dim=1)))))
            pose = self.decpose(x) + pose
            shape = self.decshape(x) + shape
            cam = self.deccam(x) + cam
        return pose, shape, cam


class HMR(nn.Module):
    """images (B, 3, H, W), ImageNet-normalised RGB -> Prediction (no part outputs)."""

    def __init__(self, mean: MeanParams | None = None, backbone: str = "resnet50", width_mult: float = 1.0,
                 n_iter: int = 3):
        super().__init__()
        self.backbone, channels = build_backbone(backbone, width_mult=width_mult)
        self.head = HMRHead(channels, mean or MeanParams.identity())
        self.n_iter = n_iter

    def forward(self, images: torch.Tensor) -> Prediction:
        pose, shape, cam = self.head(self.backbone(images), self.n_iter)
        pose6d = pose.reshape(-1, NUM_SMPL_JOINTS, 6)
        return Prediction(rotmat=rot6d_to_rotmat(pose6d), betas=shape, cam=cam, pose6d=pose6d)


# ---------------------------------------------------------------------------------------------------
# Published checkpoints


WEIGHTS_SOURCE = ("SPIN's data/model_checkpoint.pt (SPIN's fetch_data.sh), DSR's dsr_w3DPW_checkpoint.pt or "
                  "dsr_wo3DPW_checkpoint.pt (DSR's release), or a checkpoint written by this project's training")
_SPIN_BACKBONE = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")
# DSR's Lightning module keeps, beside the network: an H36M regressor, the class weights of its semantic
# loss and two SMPL layers; inside the network, the SMPL layer of its output head. All are the body model's
# data or loss constants, set aside: the regressor never carries the licensed body model.
TRAINER_EXTRAS = ("J_regressor", "loss_fn.", "smpl.", "smpl_native.")
NETWORK_EXTRAS = ("smpl.",)


def _layout(state) -> str | None:
    if "fc1.weight" in state and "decpose.weight" in state and "conv1.weight" in state:
        return "spin"
    if "head.decpose.weight" in state and ("backbone.conv1.weight" in state or DEEPLAB_STEM in state):
        return "ours"  # DSR's file after its "model." prefix, or our own
    return None


checkpoint.register_family("hmr", _layout)

DEEPLAB_STEM = "backbone.xception_features.conv1.weight"  # the demo preset's parser backbone (c(32) channels)


def backbone_of(state) -> tuple[str, float]:
    """(backbone name, width multiplier) of a state dict in our names."""
    if DEEPLAB_STEM in state:
        name = "deeplab_xception" if "backbone.decoder.0.atrous_convolution.depthwise.weight" in state else "deeplab_xception-encoder"
        return name, state[DEEPLAB_STEM].shape[0] / 32.0
    return "resnet50", state["backbone.conv1.weight"].shape[0] / 64.0


def read_hmr_state(path: str | Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(state dict in our names, keys set aside) of a SPIN, DSR or own HMR checkpoint. SPIN's flat
    names are split into backbone.* and head.*."""
    raw = checkpoint.read_state_dict(path, what="HMR/DSR weights", source_hint=WEIGHTS_SOURCE)
    state, aside = checkpoint.network_state(raw, trainer_extras=TRAINER_EXTRAS, network_extras=NETWORK_EXTRAS,
                                            source=path)
    layout = _layout(state)
    if layout is None:
        family, _ = checkpoint.detect_family(state)  # names the family the file belongs to, or lists its keys
        raise ValueError(f"{path} holds a {family} checkpoint, not HMR weights (SPIN, DSR or this project's)")
    if layout == "spin":
        state = {("backbone." if k.startswith(_SPIN_BACKBONE) else "head.") + k: v for k, v in state.items()}
    return state, aside


def from_pretrained(path: str | Path, *, width_mult: float | None = None) -> HMR:
    """An HMR with the weights of `path` (SPIN, DSR or ours) loaded strictly; the mean parameters come
    from the file's init_* buffers; the width from conv1."""
    state, _ = read_hmr_state(path)
    backbone, width = backbone_of(state)
    model = HMR(backbone=backbone, width_mult=width if width_mult is None else width_mult)
    checkpoint.add_missing_bn_counters(model, state)
    return checkpoint.load_strict(model, state, source=path).eval()
