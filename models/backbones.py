"""Image backbones of the regressors, with the parameter names of the published checkpoints.

- ResNet-50 with torchvision's names (conv1, bn1, layer1..layer4, fc), so that an ImageNet
  `resnet50-*.pth`, SPIN's and DSR's encoders load without renaming. 2048 channels at 1/32.
- HRNet with the names of the official HRNet pose model (`pose_hrnet_w32_256x192.pth`). Three heads:
  "pose" is the pose network itself (17 COCO heatmaps from the 1/4 branch, the file loads strictly);
  "conv" and "interp" are PARE's feature variants: all four branches of the last stage are kept and
  brought to 1/4 resolution by bilinear upsampling followed by conv-BN-ReLU layers ("conv", the
  released PARE model) or by plain bilinear interpolation ("interp"), then concatenated
  (15 x width channels: 480 for W32, 56 x 56 for a 224 input).

`width_mult` scales every channel count with the key layout unchanged, for small demo variants.
`build_backbone(name, **kw)` is the one factory: it returns the module and its output channels.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from models import checkpoint


def _scaled(channels: int, width_mult: float) -> int:
    return channels if width_mult == 1.0 else max(4, int(round(channels * width_mult)))


# ---------------------------------------------------------------------------------------------------
# Residual blocks (torchvision's names; HRNet uses the same two blocks)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        skip = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + skip)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (carries the stride, as torchvision's ResNet v1.5) -> 1x1 with 4x the channels."""
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        skip = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + skip)


def _res_layer(block, cin: int, planes: int, blocks: int, stride: int = 1) -> tuple[nn.Sequential, int]:
    cout = planes * block.expansion
    downsample = None
    if stride != 1 or cin != cout:
        downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
    layers = [block(cin, planes, stride, downsample)] + [block(cout, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers), cout


# ---------------------------------------------------------------------------------------------------
# ResNet


class ResNet(nn.Module):
    """torchvision's ResNet (v1.5). forward: (B, 3, H, W) -> (B, C, H/32, W/32); with `num_classes`,
    the ImageNet classifier `fc` exists (so an ImageNet file loads strictly) but forward still returns
    the feature map: the regressors pool it themselves."""

    def __init__(self, layers=(3, 4, 6, 3), width_mult: float = 1.0, num_classes: int = 0):
        super().__init__()
        stem = _scaled(64, width_mult)
        self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = stem
        for i, (blocks, stride) in enumerate(zip(layers, (1, 2, 2, 2))):
            layer, cin = _res_layer(Bottleneck, cin, _scaled(64 * 2 ** i, width_mult), blocks, stride)
            self.add_module(f"layer{i + 1}", layer)
        self.out_channels = cin
        self.fc = nn.Linear(cin, num_classes) if num_classes else None
        _init_convs(self)

    def forward(self, x):  # (B, 3, H, W)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, 2048, H/32, W/32)


# ---------------------------------------------------------------------------------------------------
# HRNet


class HighResolutionModule(nn.Module):
    """Parallel branches of BasicBlocks, then every output resolution sums all branches (1x1 conv and
    nearest upsampling from lower resolutions, strided 3x3 convs from higher ones)."""

    def __init__(self, channels: list[int], blocks: int, multi_scale_output: bool = True):
        super().__init__()
        n = len(channels)
        self.branches = nn.ModuleList(
            nn.Sequential(*[BasicBlock(c, c) for _ in range(blocks)]) for c in channels)
        self.fuse_layers = nn.ModuleList() if n > 1 else None
        self.relu = nn.ReLU(inplace=True)
        for i in range(n if multi_scale_output else 1) if n > 1 else ():
            row = nn.ModuleList()
            for j in range(n):
                if j > i:
                    row.append(nn.Sequential(nn.Conv2d(channels[j], channels[i], 1, 1, 0, bias=False),
                                             nn.BatchNorm2d(channels[i]),
                                             nn.Upsample(scale_factor=2 ** (j - i), mode="nearest")))
                elif j == i:
                    row.append(None)
                else:  # i - j stride-2 convs; the last one changes the channels and has no ReLU
                    steps = []
                    for k in range(i - j):
                        last = k == i - j - 1
                        cout = channels[i] if last else channels[j]
                        step = [nn.Conv2d(channels[j], cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout)]
                        steps.append(nn.Sequential(*step) if last else nn.Sequential(*step, nn.ReLU(inplace=True)))
                    row.append(nn.Sequential(*steps))
            self.fuse_layers.append(row)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if self.fuse_layers is None:
            return xs
        out = []
        for i, row in enumerate(self.fuse_layers):
            y = xs[i]
            for j, layer in enumerate(row):
                if j != i:
                    y = y + layer(xs[j])
            out.append(self.relu(y))
        return out


def _transition(cin: list[int], cout: list[int]) -> nn.ModuleList:
    """Branch i of the next stage: the previous branch i (adapted by a 3x3 conv when the channels
    differ), or a new lower resolution made from the previous last branch by stride-2 convs."""
    layers = nn.ModuleList()
    for i, c in enumerate(cout):
        if i < len(cin):
            layers.append(None if c == cin[i] else nn.Sequential(
                nn.Conv2d(cin[i], c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)))
        else:
            steps = []
            for j in range(i + 1 - len(cin)):
                out = c if j == i - len(cin) else cin[-1]
                steps.append(nn.Sequential(nn.Conv2d(cin[-1], out, 3, 2, 1, bias=False), nn.BatchNorm2d(out),
                                           nn.ReLU(inplace=True)))
            layers.append(nn.Sequential(*steps))
    return layers


def _upsample_convs(times: int, channels: int) -> nn.Sequential:
    """PARE's "-conv" upsampling: `times` x (bilinear x2, 3x3 conv, BN, ReLU); the conv keeps the channels."""
    layers = []
    for _ in range(times):
        layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
                   nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


HRNET_HEADS = ("pose", "conv", "interp")
HRNET_MODULES = (1, 4, 3)  # HighResolutionModules in stages 2, 3 and 4 (the official W32/W48 configuration)


class HRNet(nn.Module):
    """HRNet-W`width` with the official pose model's names.

    head "pose": forward gives (B, num_joints, H/4, W/4) heatmaps; stage 4's last module outputs
    only the highest resolution, as in the official pose network.
    head "conv" / "interp": forward gives (B, 15 x width, H/4, W/4) features (PARE). `final_layer`
    exists in these variants too (num_joints=24 in PARE's released checkpoint) and is not used.
    """

    def __init__(self, width: int = 32, head: str = "conv", num_joints: int = 17, width_mult: float = 1.0,
                 blocks: int = 4):
        super().__init__()
        if head not in HRNET_HEADS:
            raise ValueError(f"unknown HRNet head {head!r}: {HRNET_HEADS}")
        self.head = head
        width = _scaled(width, width_mult)
        stem = _scaled(64, width_mult)
        self.conv1 = nn.Conv2d(3, stem, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.conv2 = nn.Conv2d(stem, stem, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.layer1, cin = _res_layer(Bottleneck, stem, stem, blocks)
        channels = [cin]
        for s, modules in enumerate(HRNET_MODULES, start=2):
            new = [width * 2 ** b for b in range(s)]
            self.add_module(f"transition{s - 1}", _transition(channels, new))
            last_single = head == "pose" and s == 4
            self.add_module(f"stage{s}", nn.Sequential(*[
                HighResolutionModule(new, blocks, multi_scale_output=not (last_single and m == modules - 1))
                for m in range(modules)]))
            channels = new
        self.final_layer = nn.Conv2d(width, num_joints, 1, 1, 0)
        if head != "pose":  # kept for the checkpoints' sake, never used: no gradients (DDP insists)
            self.final_layer.requires_grad_(False)
        if head == "conv":
            for b in range(1, 4):
                self.add_module(f"upsample_stage_{b + 1}", _upsample_convs(b, channels[b]))
        self.out_channels = num_joints if head == "pose" else sum(channels)
        _init_convs(self, std=0.001)

    def _stage(self, s: int, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        transition = getattr(self, f"transition{s - 1}")
        inputs = [xs[i] if t is None else t(xs[min(i, len(xs) - 1)]) for i, t in enumerate(transition)]
        return getattr(self, f"stage{s}")(inputs)

    def forward(self, x):  # (B, 3, H, W)
        x = self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))
        xs = [self.layer1(x)]  # (B, 256, H/4, W/4)
        for s in (2, 3, 4):
            xs = self._stage(s, xs)  # branch b: (B, width 2^b, H/4/2^b, W/4/2^b)
        if self.head == "pose":
            return self.final_layer(xs[0])
        if self.head == "conv":
            ups = [getattr(self, f"upsample_stage_{b + 1}")(xs[b]) for b in range(1, 4)]
        else:
            ups = [F.interpolate(xs[b], size=xs[0].shape[-2:], mode="bilinear", align_corners=True) for b in range(1, 4)]
        return torch.cat([xs[0], *ups], dim=1)  # (B, 15 width, H/4, W/4)


def _init_convs(module: nn.Module, std: float | None = None) -> None:
    """He-normal convolutions (ResNet) or N(0, std) (HRNet's own initialisation); BN at identity."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            if std is None:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            else:
                nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# ---------------------------------------------------------------------------------------------------
# The factory


BACKBONES = ("resnet50", "hrnet_w32", "hrnet_w32-conv", "hrnet_w32-interp", "hrnet_w48", "hrnet_w48-conv",
             "hrnet_w48-interp", "deeplab_xception", "deeplab_xception-encoder")


def _deeplab_backbone_class():
    from models.graphonomy import DeepLabFeatures, GraphonomyConfig

    class DeepLabBackbone(DeepLabFeatures):
        """Graphonomy's DeepLab v3+ features (aligned Xception, ASPP, decoder) as a regressor backbone:
        stride-4 maps of c(256) channels, like PARE's HRNet-conv output. Parameter names are Graphonomy's,
        so a parser checkpoint (the demo parser, or the official inference.pth at width 1) initialises it
        (load_pretrained_backbone). It takes the regressors' ImageNet-normalised RGB and converts it to
        the parser's BGR in [-1, 1]. Not a published regressor configuration: the demo preset uses it
        because the demo world has no ImageNet, and its trained parser stands in for pretraining."""

        def __init__(self, width_mult: float = 1.0, encoder_only: bool = False):
            cfg = GraphonomyConfig(width=width_mult)
            super().__init__(cfg)
            self.encoder_only = encoder_only
            if encoder_only:  # the Xception exit flow alone (stride 16, c(2048) channels), for global pooling
                for name in ("aspp1", "aspp2", "aspp3", "aspp4", "global_avg_pool", "concat_projection_conv1",
                             "concat_projection_bn1", "feature_projection_conv1", "feature_projection_bn1", "decoder"):
                    delattr(self, name)
            self.out_channels = cfg.ch(2048) if encoder_only else cfg.ch(256)
            self.register_buffer("rgb_mean", torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("rgb_std", torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1), persistent=False)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            x = (images * self.rgb_std + self.rgb_mean).flip(1) * 2.0 - 1.0  # the parser's BGR in [-1, 1]
            return self.xception_features(x)[0] if self.encoder_only else self.features(x)

    return DeepLabBackbone


def build_backbone(name: str, *, width_mult: float = 1.0, **kwargs) -> tuple[nn.Module, int]:
    """(module, output channels) for a backbone name of BACKBONES: "resnet50" (kwargs: num_classes),
    "hrnet_w32" (the pose network; kwargs: num_joints) and PARE's "hrnet_w32-conv" / "-interp"
    (kwargs: num_joints of the unused final_layer, 24 in PARE's checkpoint)."""
    if name == "resnet50":
        net = ResNet((3, 4, 6, 3), width_mult=width_mult, **kwargs)
        return net, net.out_channels
    if name.startswith("deeplab_xception") and name in BACKBONES:
        net = _deeplab_backbone_class()(width_mult=width_mult, encoder_only=name.endswith("-encoder"))
        return net, net.out_channels
    if name.startswith("hrnet_w") and name in BACKBONES:
        base, _, head = name.partition("-")
        net = HRNet(width=int(base[len("hrnet_w"):]), head=head or "pose", width_mult=width_mult, **kwargs)
        return net, net.out_channels
    raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")


PARSER_SOURCE = "a Graphonomy parser checkpoint (the demo parser results/parsing/weights/demo_parser.pth, or inference.pth)"
IMAGENET_SOURCE = "torchvision's ImageNet ResNet-50 weights: resnet50-0676ba61.pth or resnet50-19c8e357.pth"
HRNET_POSE_SOURCE = ("the official HRNet COCO pose model pose_hrnet_w32_256x192.pth "
                     "(HRNet/HRNet-Human-Pose-Estimation release, as PARE initialises its backbone)")


def load_pretrained_backbone(net: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Initialise a backbone from an ImageNet ResNet-50 or an HRNet pose file, the way the regressors
    start training. Every tensor of the file must fit the backbone except those the backbone does not
    have by design (the ImageNet classifier `fc` when the backbone has none; the pose heatmap layer
    `final_layer` when its joint count differs); the backbone's own extra layers (PARE's upsampling
    convs and the extra fuse layers of stage 4) keep their initialisation. Returns {"loaded", "skipped",
    "initialised"} key lists for the log. A layer whose shape differs, or any other key of the file
    that the backbone lacks, is an error naming it (e.g. a width or depth mismatch)."""
    deeplab = type(net).__name__ == "DeepLabBackbone"
    source = IMAGENET_SOURCE if isinstance(net, ResNet) else PARSER_SOURCE if deeplab else HRNET_POSE_SOURCE
    state = checkpoint.strip_prefix(checkpoint.read_state_dict(path, what="backbone weights", source_hint=source))
    own = net.state_dict()
    # what the backbone lacks by design: the classifier, the heatmap layer, the parser's graph and label layers
    if deeplab:  # every parser module after the shared DeepLab features (graph reasoning, label layers)
        droppable = tuple(sorted({k.split(".")[0] + "." for k in state} - {k.split(".")[0] + "." for k in own}))
    else:
        droppable = ("fc.",) if isinstance(net, ResNet) else ("final_layer.",)
    skipped = [k for k in state if (k not in own or own[k].shape != state[k].shape) and k.startswith(droppable)]
    unknown = [k for k in state if k not in own and k not in skipped]
    shapes = [f"{k}: file {tuple(state[k].shape)}, model {tuple(own[k].shape)}" for k in state
              if k in own and k not in skipped and own[k].shape != state[k].shape]
    if unknown or shapes:
        raise ValueError(f"{path} does not fit {type(net).__name__}: {len(unknown)} unknown keys "
                         f"{unknown[:5]}, {len(shapes)} shape mismatches {shapes[:5]} (another depth or width?)")
    loaded = {k: v for k, v in state.items() if k not in skipped}
    initialised = [k for k in own if k not in loaded and not k.endswith("num_batches_tracked")]
    net.load_state_dict({**own, **loaded}, strict=True)
    return {"loaded": sorted(loaded), "skipped": skipped, "initialised": initialised}

