"""PARE, Part Attention REgressor (Kocabas et al., ICCV 2021), the architecture of the released model.

    image (B, 3, 224, 224)
      -> backbone: HRNet-W32 "-conv" (B, 480, 56, 56), or ResNet-50 (B, 2048, 7, 7) for the paper's ablation
      -> part branch: 2 conv layers of 128 (HRNet; ResNet: 3 deconvolutions of 256 up to 56 x 56)
           -> keypoint_final_layer: part logits (B, 25, 56, 56), background first
      -> SMPL branch: the same layers, separate weights -> smpl_feats (B, 128, 56, 56)
           -> smpl_final_layer: cam_shape_feats (B, 64, 56, 56)
      -> part attention: softmax over the pixels of each part's logits (B, 24, 56 x 56); each part's
         features are the attention-weighted sum of smpl_feats (B, 128, 24) and cam_shape_feats (B, 64, 24)
      -> pose: per joint its own linear layer (a locally connected layer) -> 6D rotation;
         shape and camera: linear layers on the flattened (B, 64 x 24) part features.

The released model regresses in one step (iterative_regression false: pose_mlp reads the joint's 128
features, shape_mlp and cam_mlp the 1536 flattened ones), which is the default here. The official code's
iterative option is supported too (`iterative=True`: 3 residual iterations from the mean parameters, the
joint's layer reading [its features, its current 6D rotation, shape, cam], "feats.self_pose.shape.cam",
and the shape/cam layers [flattened features, shape, cam], "feats.shape.cam"); `from_pretrained` tells
the two apart by the layers' input sizes. Module and parameter names are those of the official code, so
`pare_checkpoint.ckpt` and `pare_w_3dpw_checkpoint.ckpt` load strictly.

Where the official code and the paper differ, both are here:
- Mean pose layout (iterative mode only). The official head reshapes the (1, 144) mean pose, stored
  joint by joint, to (6, 24) channels x joints, so joint j starts from a scrambled 6D vector.
  `mean_pose_layout="official"` (default, so that an iterative official checkpoint behaves as it was
  trained) reproduces it; "per_joint" starts each joint from its own mean rotation.
- Ground-truth attention (`part_labels` in forward, PARE's gt_segm). The official code one-hot encodes
  the labels and then applies the attention softmax to those 0/1 maps, so a part's pixels weigh only
  e times more than every other pixel of the image; the paper's intent is attention on the part's
  pixels alone. `gt_attention="mask"` (default) averages over the part's pixels (a part with no pixel
  gets zero features); "official" reproduces the softmax of the one-hot maps.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from models import checkpoint
from models.backbones import build_backbone
from models.rotations import rot6d_to_rotmat
from models.smpl_head import MeanParams, Prediction
from pipeline.skeleton import NUM_BETAS, NUM_SMPL_JOINTS

MEAN_POSE_LAYOUTS = ("official", "per_joint")
GT_ATTENTION_MODES = ("mask", "official")


class LocallyConnected(nn.Module):
    """One linear map per joint (no weight sharing, no bias): (B, C, J, 1) -> (B, out, J, 1).
    The weight keeps the official LocallyConnected2d layout (1, out, C, J, 1, 1) with kernel size 1."""

    def __init__(self, in_channels: int, out_channels: int, joints: int, gain: float = 0.01):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(1, out_channels, in_channels, joints, 1, 1))
        # small, fan-in-scaled start (the official code draws N(0, 1)), so that the first iterations
        # stay near the mean pose
        nn.init.normal_(self.weight, std=gain / in_channels ** 0.5)

    def forward(self, x):  # (B, C, J, 1)
        return torch.einsum("bcj,ocj->boj", x[..., 0], self.weight[0, ..., 0, 0])[..., None]


def _conv_layers(cin: int, filters: int, layers: int, deconv: bool) -> nn.Sequential:
    """HRNet: `layers` x (3x3 conv, BN, ReLU) at the same resolution. ResNet: `layers` x (4x4
    transposed conv of stride 2, BN, ReLU), each doubling the resolution. No biases (BN follows)."""
    mods = []
    for _ in range(layers):
        conv = (nn.ConvTranspose2d(cin, filters, 4, 2, 1, output_padding=0, bias=False) if deconv
                else nn.Conv2d(cin, filters, 3, 1, 1, bias=False))
        mods += [conv, nn.BatchNorm2d(filters), nn.ReLU(inplace=True)]
        cin = filters
    return nn.Sequential(*mods)


class PAREHead(nn.Module):
    def __init__(self, in_channels: int, mean: MeanParams, *, deconv: bool, num_deconv_layers: int = 2,
                 num_deconv_filters: int = 128, num_features_smpl: int = 64, iterative: bool = False,
                 iter_residual: bool = True, num_iterations: int = 3, mean_pose_layout: str = "official",
                 gt_attention: str = "mask", num_joints: int = NUM_SMPL_JOINTS):
        super().__init__()
        if mean_pose_layout not in MEAN_POSE_LAYOUTS:
            raise ValueError(f"mean_pose_layout must be one of {MEAN_POSE_LAYOUTS}, got {mean_pose_layout!r}")
        if gt_attention not in GT_ATTENTION_MODES:
            raise ValueError(f"gt_attention must be one of {GT_ATTENTION_MODES}, got {gt_attention!r}")
        self.num_joints = num_joints
        self.iterative, self.iter_residual, self.num_iterations = iterative, iter_residual, num_iterations
        self.mean_pose_layout, self.gt_attention = mean_pose_layout, gt_attention
        self.keypoint_deconv_layers = _conv_layers(in_channels, num_deconv_filters, num_deconv_layers, deconv)
        self.smpl_deconv_layers = _conv_layers(in_channels, num_deconv_filters, num_deconv_layers, deconv)
        self.keypoint_final_layer = nn.Conv2d(num_deconv_filters, num_joints + 1, 1)
        self.smpl_final_layer = nn.Conv2d(num_deconv_filters, num_features_smpl, 1)
        for name, value in mean.buffers().items():
            self.register_buffer(name, value)
        extra = 6 + NUM_BETAS + 3 if iterative else 0  # self_pose, shape, cam
        shape_in = num_joints * num_features_smpl + (NUM_BETAS + 3 if iterative else 0)
        self.pose_mlp = LocallyConnected(num_deconv_filters + extra, 6, num_joints)
        self.shape_mlp = nn.Linear(shape_in, NUM_BETAS)
        self.cam_mlp = nn.Linear(shape_in, 3)

    def attention_from_labels(self, labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Part labels (B, H, W) (0 background, 1..24 parts, anything else ignored) -> pooling weights
        (B, 24, h, w), each part's summing to 1 (or 0 for a part with no pixel). Labels are taken at the
        attention resolution by nearest sampling (every 4th pixel for 224 -> 56, as the official code)."""
        small = F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()  # (B, h, w)
        parts = torch.arange(1, self.num_joints + 1, device=labels.device)
        onehot = (small[:, None] == parts[None, :, None, None]).float()  # (B, 24, h, w)
        flat = onehot.flatten(2)
        if self.gt_attention == "official":
            weights = flat.softmax(dim=-1)
        else:
            weights = flat / flat.sum(-1, keepdim=True).clamp_min(1.0)
        return weights.reshape(onehot.shape)

    def _start_pose(self, batch: int) -> torch.Tensor:  # (B, 6, J)
        if self.mean_pose_layout == "official":
            return self.init_pose.reshape(1, 6, self.num_joints).expand(batch, -1, -1)
        return self.init_pose.reshape(1, self.num_joints, 6).transpose(1, 2).expand(batch, -1, -1)

    def forward(self, features: torch.Tensor, part_labels: torch.Tensor | None = None):
        batch = features.shape[0]
        part_feats = self.keypoint_deconv_layers(features)  # (B, F, h, w)
        part_logits = self.keypoint_final_layer(part_feats)  # (B, 25, h, w)
        smpl_feats = self.smpl_deconv_layers(features)  # (B, F, h, w)
        cam_shape_feats = self.smpl_final_layer(smpl_feats)  # (B, 64, h, w)
        h, w = part_logits.shape[-2:]
        if part_labels is None:
            attention = part_logits[:, 1:].flatten(2).softmax(dim=-1)  # (B, 24, h w)
        else:
            attention = self.attention_from_labels(part_labels, (h, w)).flatten(2)
        pose_feats = torch.einsum("bjp,bcp->bcj", attention, smpl_feats.flatten(2))  # (B, F, 24)
        shape_feats = torch.einsum("bjp,bcp->bcj", attention, cam_shape_feats.flatten(2)).flatten(1)  # (B, 64 x 24)

        if self.iterative:
            pose, shape, cam = self._start_pose(batch), self.init_shape.expand(batch, -1), self.init_cam.expand(batch, -1)
            for _ in range(self.num_iterations):
                per_joint = [pose_feats, pose, shape[..., None].expand(-1, -1, self.num_joints),
                             cam[..., None].expand(-1, -1, self.num_joints)]
                pose_in = torch.cat(per_joint, dim=1)[..., None]  # (B, F + 19, 24, 1)
                shape_in = torch.cat([shape_feats, shape, cam], dim=1)  # (B, 64 x 24 + 13)
                d_pose, d_shape, d_cam = self.pose_mlp(pose_in)[..., 0], self.shape_mlp(shape_in), self.cam_mlp(shape_in)
                if self.iter_residual:
                    pose, shape, cam = pose + d_pose, shape + d_shape, cam + d_cam
                else:
                    pose, shape, cam = d_pose, self.init_shape + d_shape, d_cam
        else:
            pose = self.pose_mlp(pose_feats[..., None])[..., 0]
            shape, cam = self.shape_mlp(shape_feats), self.cam_mlp(shape_feats)
        pose6d = pose.transpose(1, 2)  # (B, 24, 6)
        return pose6d, shape, cam, part_logits, attention.reshape(batch, -1, h, w)


class PARE(nn.Module):
    """images (B, 3, H, W), ImageNet-normalised RGB [, part_labels (B, H, W)] -> Prediction with the part
    logits and the attention maps."""

    def __init__(self, mean: MeanParams | None = None, backbone: str = "hrnet_w32-conv", width_mult: float = 1.0,
                 num_deconv_layers: int | None = None, num_deconv_filters: int | None = None, **head_kwargs):
        super().__init__()
        if backbone.endswith("-encoder"):
            raise ValueError(f"PARE needs stride-4 features or ResNet's (deconvolved to stride 4), not {backbone}: "
                             f"use deeplab_xception")
        resnet = backbone.startswith("resnet")
        kwargs = {} if resnet else {"num_joints": NUM_SMPL_JOINTS}  # the unused final_layer of the released file
        self.backbone, channels = build_backbone(backbone, width_mult=width_mult, **kwargs)
        # released HRNet model: 2 conv layers of 128; the ResNet ablation: 3 deconvolutions of 256 (7 -> 56)
        layers = num_deconv_layers or (3 if resnet else 2)
        filters = num_deconv_filters or max(4, int(round((256 if resnet else 128) * width_mult)))
        self.head = PAREHead(channels, mean or MeanParams.identity(), deconv=resnet, num_deconv_layers=layers,
                             num_deconv_filters=filters, **head_kwargs)

    def forward(self, images: torch.Tensor, part_labels: torch.Tensor | None = None) -> Prediction:
        pose6d, shape, cam, part_logits, attention = self.head(self.backbone(images), part_labels)
        return Prediction(rotmat=rot6d_to_rotmat(pose6d), betas=shape, cam=cam, pose6d=pose6d,
                          part_logits=part_logits, attention=attention)


# ---------------------------------------------------------------------------------------------------
# Published checkpoints


WEIGHTS_SOURCE = ("PARE's data/pare/checkpoints/pare_checkpoint.ckpt or pare_w_3dpw_checkpoint.ckpt (PARE's "
                  "release), or a checkpoint written by this project's training")


def _variant(state) -> str | None:
    if "head.pose_mlp.weight" in state and "head.keypoint_final_layer.weight" in state:
        if "backbone.layer4.0.conv1.weight" in state:
            return "resnet50"
        return "deeplab_xception" if "backbone.xception_features.conv1.weight" in state else "hrnet_w32-conv"
    return None


checkpoint.register_family("pare", _variant)
# The Lightning module of the official trainer (PARETrainer) keeps, beside the network: a camera (K, R),
# a texture and faces for rendering part labels, the part bins, an H36M regressor and two SMPL layers;
# inside the network: the SMPL layer of its output head and the soft-argmax temperature (a constant 1,
# used only by keypoint-heatmap variants, not by part attention). None of it is a weight.
TRAINER_EXTRAS = ("J_regressor", "K", "R", "body_part_texture", "smpl_faces", "part_label_bins", "loss_fn.",
                  "smpl.", "smpl_native.")
NETWORK_EXTRAS = ("smpl.", "head.temperature")


def read_pare_state(path: str | Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(the network's state dict, keys set aside) of a released PARE checkpoint or one of ours."""
    raw = checkpoint.read_state_dict(path, what="PARE weights", source_hint=WEIGHTS_SOURCE)
    state, aside = checkpoint.network_state(raw, trainer_extras=TRAINER_EXTRAS, network_extras=NETWORK_EXTRAS,
                                            source=path)
    if _variant(state) is None:
        family, _ = checkpoint.detect_family(state)
        raise ValueError(f"{path} holds a {family} checkpoint, not PARE weights")
    return state, aside


def config_of(state) -> dict:
    """PARE constructor arguments that reproduce the layer sizes of a state dict."""
    backbone = _variant(state)
    filters = state["head.smpl_final_layer.weight"].shape[1]
    features = state["head.smpl_final_layer.weight"].shape[0]
    pose_in = state["head.pose_mlp.weight"].shape[2]
    layers = sum(1 for k in state if k.startswith("head.smpl_deconv_layers.") and k.endswith(".running_var"))
    width = state["backbone.xception_features.conv1.weight"].shape[0] / 32.0 if backbone == "deeplab_xception" \
        else state["backbone.conv1.weight"].shape[0] / 64.0
    return {"backbone": backbone, "width_mult": width, "num_deconv_layers": layers,
            "num_deconv_filters": filters, "num_features_smpl": features, "iterative": pose_in != filters}


def from_pretrained(path: str | Path, mean: MeanParams | None = None, **head_kwargs) -> PARE:
    """A PARE with the weights of `path` loaded strictly: the released HRNet-W32 models, the ResNet-50
    variant or our own checkpoints; sizes and iterative/one-step regression are read from the file.
    `head_kwargs` may set iter_residual, num_iterations, mean_pose_layout and gt_attention.

    Early official checkpoints lack the mean-parameter buffers (the official trainer patches them in);
    the one-step model never reads them, so there they are taken from `mean` (rest pose when None).
    The iterative model starts from them: for it they must be in the file."""
    state, _ = read_pare_state(path)
    config = config_of(state)
    model = PARE(mean, **config, **head_kwargs)
    absent = [k for k in ("head.init_pose", "head.init_shape", "head.init_cam") if k not in state]
    if absent and not config["iterative"]:
        state.update({k: model.state_dict()[k] for k in absent})
    checkpoint.add_missing_bn_counters(model, state)
    return checkpoint.load_strict(model, state, source=path).eval()
