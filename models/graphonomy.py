"""Graphonomy (Gong et al., CVPR 2019): DeepLab v3+ on an aligned Xception, with graph reasoning over
the parsing labels. Written for this project; module and parameter names follow the official
checkpoints so that `inference.pth` (CIHP transfer model) and `universal_trained.pth` (universal
model) load with `strict=True` and without renaming.

Shapes below are for a 512 x 512 input at output stride 16 and width 1 (the official model).
`width` scales every channel count, for the tiny demo parser on the same code path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models import checkpoint

GRAPHS_PATH = Path(__file__).resolve().parents[1] / "resources" / "graphonomy_graphs.json"


@dataclass(frozen=True)
class GraphonomyConfig:
    variant: str = "transfer"  # "transfer" (inference.pth) or "universal" (universal_trained.pth)
    width: float = 1.0
    num_classes: int = 20  # CIHP
    graph2fea_softmax: bool = True  # the node softmax of the reprojection (official code from July 2019 on)
    source_third_layer: str = "conv2"  # transfer model: weights of the 3rd PASCAL GCN layer ("conv2" or "conv3")

    def ch(self, n: int) -> int:
        return n if self.width == 1.0 else max(4, int(round(n * self.width)))


# ---------------------------------------------------------------------------------------------------
# Backbone: aligned Xception (os 16)


class SeparableConv(nn.Module):
    """Depthwise 3x3 + BN, pointwise 1x1 + BN. `relu=True` adds a ReLU after each BN (the ASPP variant)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1, relu: bool = False):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, stride, padding=dilation, dilation=dilation, groups=cin, bias=False)
        self.depthwise_bn = nn.BatchNorm2d(cin)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)
        self.pointwise_bn = nn.BatchNorm2d(cout)
        self.relu = relu

    def forward(self, x):
        x = self.depthwise_bn(self.depthwise(x))
        x = F.relu(x) if self.relu else x
        x = self.pointwise_bn(self.pointwise(x))
        return F.relu(x) if self.relu else x


def _rep(layers: list[tuple[int, int, int]], start_with_relu: bool, dilation: int = 1) -> nn.Sequential:
    """[ReLU, SeparableConv] pairs for (cin, cout, stride) triples; the first ReLU dropped if asked."""
    modules: list[nn.Module] = []
    for cin, cout, stride in layers:
        modules += [nn.ReLU(), SeparableConv(cin, cout, stride, dilation)]
    return nn.Sequential(*(modules if start_with_relu else modules[1:]))


class Block(nn.Module):
    """Xception residual unit. Official quirk reproduced: with `start_with_relu`, the leading in-place
    ReLU also rewrites the block input, so the residual path sees relu(x)."""

    def __init__(self, layers, start_with_relu: bool, skip: tuple[int, int, int] | None):
        super().__init__()
        self.start_with_relu = start_with_relu
        if skip is not None:
            cin, cout, stride = skip
            self.skip = nn.Conv2d(cin, cout, 1, stride, bias=False)
            self.skipbn = nn.BatchNorm2d(cout)
        else:
            self.skip = None
        self.rep = _rep(layers, start_with_relu)

    def forward(self, x):
        if self.start_with_relu:
            x = F.relu(x)
        out = self.rep(x)
        return out + (self.skipbn(self.skip(x)) if self.skip is not None else x)


class EntryBlock2(nn.Module):
    """The second entry block: its stride-2 convolution is kept apart, so the stride-4 low-level
    feature (before that convolution, after the block's last BN) can be taken for the decoder."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.block2_lastconv = nn.Sequential(nn.ReLU(), SeparableConv(cout, cout, stride=2))
        self.skip = nn.Conv2d(cin, cout, 1, 2, bias=False)
        self.skipbn = nn.BatchNorm2d(cout)
        self.rep = _rep([(cin, cout, 1), (cout, cout, 1)], start_with_relu=True)

    def forward(self, x):
        x = F.relu(x)
        low = self.rep(x)
        return self.block2_lastconv(low) + self.skipbn(self.skip(x)), low


class Xception(nn.Module):
    def __init__(self, cfg: GraphonomyConfig):
        super().__init__()
        c = cfg.ch
        self.conv1 = nn.Conv2d(3, c(32), 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c(32))
        self.conv2 = nn.Conv2d(c(32), c(64), 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c(64))
        self.block1 = Block([(c(64), c(128), 1), (c(128), c(128), 1), (c(128), c(128), 2)], False, (c(64), c(128), 2))
        self.block2 = EntryBlock2(c(128), c(256))
        self.block3 = Block([(c(256), c(728), 1), (c(728), c(728), 1), (c(728), c(728), 2)], True, (c(256), c(728), 2))
        for i in range(4, 20):  # middle flow: 16 identity blocks
            setattr(self, f"block{i}", Block([(c(728), c(728), 1)] * 3, True, None))
        self.block20 = Block([(c(728), c(728), 1), (c(728), c(1024), 1), (c(1024), c(1024), 1)], True, (c(728), c(1024), 1))
        self.conv3 = SeparableConv(c(1024), c(1536), dilation=2, relu=True)
        self.conv4 = SeparableConv(c(1536), c(1536), dilation=2, relu=True)
        self.conv5 = SeparableConv(c(1536), c(2048), dilation=2, relu=True)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))  # (B, 32, 256, 256)
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.block1(x)  # (B, 128, 128, 128)
        x, low = self.block2(x)  # (B, 256, 64, 64), low (B, 256, 128, 128)
        for i in range(3, 21):
            x = getattr(self, f"block{i}")(x)  # (B, 728 .. 1024, 32, 32)
        x = self.conv5(self.conv4(self.conv3(x)))  # (B, 2048, 32, 32)
        return x, low


# ---------------------------------------------------------------------------------------------------
# DeepLab v3+ head


class ASPPPointwise(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.atrous_convolution = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.atrous_convolution(x)))


class ASPPSeparable(nn.Module):
    def __init__(self, cin: int, cout: int, rate: int):
        super().__init__()
        self.atrous_convolution = SeparableConv(cin, cout, dilation=rate, relu=True)

    def forward(self, x):
        return self.atrous_convolution(x)


def _upsample(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class DeepLabFeatures(nn.Module):
    """Xception + ASPP + decoder -> the stride-4 feature map every graph module reads."""

    def __init__(self, cfg: GraphonomyConfig):
        super().__init__()
        c = cfg.ch
        self.xception_features = Xception(cfg)
        self.aspp1 = ASPPPointwise(c(2048), c(256))
        self.aspp2 = ASPPSeparable(c(2048), c(256), 6)
        self.aspp3 = ASPPSeparable(c(2048), c(256), 12)
        self.aspp4 = ASPPSeparable(c(2048), c(256), 18)
        self.global_avg_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c(2048), c(256), 1, bias=False),
                                             nn.BatchNorm2d(c(256)), nn.ReLU())
        self.concat_projection_conv1 = nn.Conv2d(5 * c(256), c(256), 1, bias=False)
        self.concat_projection_bn1 = nn.BatchNorm2d(c(256))
        self.feature_projection_conv1 = nn.Conv2d(c(256), c(48), 1, bias=False)
        self.feature_projection_bn1 = nn.BatchNorm2d(c(48))
        self.decoder = nn.Sequential(ASPPSeparable(c(256) + c(48), c(256), 1), ASPPSeparable(c(256), c(256), 1))

    def features(self, image):
        x, low = self.xception_features(image)
        pooled = _upsample(self.global_avg_pool(x), x.shape[-2:])
        x = torch.cat([self.aspp1(x), self.aspp2(x), self.aspp3(x), self.aspp4(x), pooled], dim=1)
        x = F.relu(self.concat_projection_bn1(self.concat_projection_conv1(x)))  # (B, 256, 32, 32)
        low = F.relu(self.feature_projection_bn1(self.feature_projection_conv1(low)))  # (B, 48, 128, 128)
        x = torch.cat([_upsample(x, low.shape[-2:]), low], dim=1)
        return self.decoder(x)  # (B, 256, 128, 128)


# ---------------------------------------------------------------------------------------------------
# Graph reasoning


class FeatureToGraph(nn.Module):
    """Soft-assign pixels to N nodes (softmax over nodes) and sum projected features per node."""

    def __init__(self, channels: int, hidden: int, nodes: int):
        super().__init__()
        self.pre_fea = nn.Parameter(torch.empty(channels, nodes))
        self.weight = nn.Parameter(torch.empty(channels, hidden))
        nn.init.xavier_uniform_(self.pre_fea)
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x):
        pixels = x.flatten(2).transpose(1, 2)  # (B, HW, C)
        assign = torch.softmax(pixels @ self.pre_fea, dim=-1)  # (B, HW, N)
        return F.relu(assign.transpose(1, 2) @ (pixels @ self.weight))  # (B, N, h): a sum over pixels


class GraphConv(nn.Module):
    """relu(adj @ H @ W); without adj, relu(H @ W)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cin, cout))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, h, adj=None):
        out = h @ self.weight
        return F.relu(adj @ out if adj is not None else out)


class GraphTransfer(nn.Module):
    """Moves node features between label sets: relu(softmax(relu(adj)) @ H @ W). The stored `adj`
    parameter exists in the checkpoints but, as in the official code, the passed matrix is used."""

    def __init__(self, hidden: int, begin_nodes: int, end_nodes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(hidden, hidden))
        self.adj = nn.Parameter(torch.empty(end_nodes, begin_nodes))
        nn.init.xavier_uniform_(self.weight)
        nn.init.xavier_uniform_(self.adj)

    def forward(self, h, adj):
        return F.relu(torch.softmax(F.relu(adj), dim=-1) @ (h @ self.weight))


class GraphToFeature(nn.Module):
    """Reprojects node features to pixels. The official code builds a (B, HW, N, C) tensor; the same
    result is computed here in closed form: the pixel-node affinity is a_p + b_n with a_p = x_p . w_res
    and b_n = g_n . w_hid, so with the node softmax the affinity is softmax(b) for every pixel."""

    def __init__(self, channels: int, out_channels: int, hidden: int, softmax: bool):
        super().__init__()
        self.node_fea_for_res = nn.Parameter(torch.empty(channels, 1))
        self.node_fea_for_hidden = nn.Parameter(torch.empty(hidden, 1))
        self.weight = nn.Parameter(torch.empty(hidden, out_channels))
        for p in (self.node_fea_for_res, self.node_fea_for_hidden, self.weight):
            nn.init.xavier_uniform_(p)
        self.softmax = softmax

    def forward(self, g, x):
        b, _, h, w = x.shape
        nodes = g @ self.weight  # (B, N, C_out)
        node_score = (g @ self.node_fea_for_hidden).squeeze(-1)  # (B, N)
        if self.softmax:
            out = (torch.softmax(node_score, dim=-1).unsqueeze(1) @ nodes).transpose(1, 2)  # (B, C_out, 1)
            return F.relu(out.view(b, -1, 1, 1).expand(-1, -1, h, w))
        pixel_score = (x.flatten(2).transpose(1, 2) @ self.node_fea_for_res)  # (B, HW, 1)
        out = pixel_score * nodes.sum(1, keepdim=True) + (node_score.unsqueeze(1) @ nodes)  # (B, HW, C_out)
        return F.relu(out.transpose(1, 2).reshape(b, -1, h, w))


def similarity_transfer(source, target):
    """Source node features carried to the target's nodes by softmaxed cosine similarity."""
    sim = F.normalize(target, p=2, dim=-1) @ F.normalize(source, p=2, dim=-1).transpose(-1, -2)
    return torch.softmax(sim, dim=-1) @ source


def _skip_conv(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, channels, 1, bias=True), nn.ReLU())


def normalized_graph(neighbours: dict[str, list[int]]) -> np.ndarray:
    """D^-1/2 (A + I) D^-1/2 of the symmetrised graph (a listed self loop counts once in A)."""
    n = len(neighbours)
    a = np.zeros((n, n))
    for i, js in neighbours.items():
        for j in js:
            a[int(i), j] = a[j, int(i)] = 1.0
    a += np.eye(n)
    d = a.sum(1)
    inv_sqrt = np.where(d > 0, d ** -0.5, 0.0)
    return inv_sqrt[:, None] * a * inv_sqrt[None, :]


def graph_tables(path: str | Path = GRAPHS_PATH) -> dict[str, np.ndarray]:
    with open(path) as f:
        data = json.load(f)
    tables = {name: normalized_graph(g) for name, g in data["graphs"].items()}
    tables.update({name: np.asarray(m) for name, m in data["cross"].items()})
    return tables


# ---------------------------------------------------------------------------------------------------
# The two checkpoint families


class _GraphonomyBase(DeepLabFeatures):
    def __init__(self, cfg: GraphonomyConfig):
        super().__init__(cfg)
        self.cfg = cfg
        c = cfg.ch
        self.semantic = nn.Conv2d(c(256), cfg.num_classes, 1)
        tables = graph_tables()
        for name, table in tables.items():
            self.register_buffer(f"adj_{name}", torch.as_tensor(table, dtype=torch.float32), persistent=False)

    def forward(self, image):
        """image (B, 3, H, W), BGR in [-1, 1] -> CIHP logits (B, 20, H, W)."""
        x = self.features(image)
        g = self.target_graph(x)
        y = self.semantic(self.target_skip_conv(x) + self.target_graph_2_fea(g, x))
        return _upsample(y, image.shape[-2:])


class GraphonomyTransfer(_GraphonomyBase):
    """`deeplab_xception_transfer_projection_savemem` of the official code: a 7-node PASCAL graph
    transferred into the 20-node CIHP graph. Checkpoint: inference.pth."""

    def __init__(self, cfg: GraphonomyConfig = GraphonomyConfig()):
        super().__init__(cfg)
        c, h = cfg.ch(256), cfg.ch(128)
        self.target_featuremap_2_graph = FeatureToGraph(c, h, 20)
        self.target_graph_conv1, self.target_graph_conv2, self.target_graph_conv3 = GraphConv(h, h), GraphConv(h, h), GraphConv(h, h)
        self.target_graph_2_fea = GraphToFeature(c, c, h, cfg.graph2fea_softmax)
        self.target_skip_conv = _skip_conv(c)
        self.source_featuremap_2_graph = FeatureToGraph(c, h, 7)
        self.source_graph_conv1, self.source_graph_conv2, self.source_graph_conv3 = GraphConv(h, h), GraphConv(h, h), GraphConv(h, h)
        self.transpose_graph = GraphTransfer(h, 7, 20)
        self.fc_graph = GraphConv(3 * h, h)

    def target_graph(self, x):
        pascal, cihp, transfer = self.adj_pascal, self.adj_cihp, self.adj_cihp2pascal.T  # (7, 7), (20, 20), (20, 7)
        third = self.source_graph_conv2 if self.cfg.source_third_layer == "conv2" else self.source_graph_conv3
        s1 = self.source_graph_conv1(self.source_featuremap_2_graph(x), pascal)  # (B, 7, h)
        s2 = self.source_graph_conv2(s1, pascal)
        s3 = third(s2, pascal)
        g = self.target_featuremap_2_graph(x)  # (B, 20, h)
        for s, conv in ((s1, self.target_graph_conv1), (s2, self.target_graph_conv2), (s3, self.target_graph_conv3)):
            fused = torch.cat([g, similarity_transfer(s, g), self.transpose_graph(s, transfer)], dim=-1)  # (B, 20, 3h)
            g = conv(self.fc_graph(fused), cihp)
        return g


class GraphonomyUniversal(_GraphonomyBase):
    """`deeplab_xception_end2end_3d` of the official code: PASCAL (7), CIHP (20) and ATR (18) graphs
    reasoned over jointly; the CIHP head is used. Checkpoint: universal_trained.pth. As in the
    official forward, every round reuses each branch's first GCN layer, and the ATR graph the CIHP one."""

    def __init__(self, cfg: GraphonomyConfig = GraphonomyConfig(variant="universal")):
        super().__init__(cfg)
        c, h = cfg.ch(256), cfg.ch(128)
        for name, nodes in (("source", 7), ("target", 20), ("middle", 18)):
            setattr(self, f"{name}_featuremap_2_graph", FeatureToGraph(c, h, nodes))
            for k in (1, 2, 3):
                setattr(self, f"{name}_graph_conv{k}", GraphConv(h, h))
            setattr(self, f"{name}_graph_2_fea", GraphToFeature(c, c, h, cfg.graph2fea_softmax))
            setattr(self, f"{name}_skip_conv", _skip_conv(c))
            setattr(self, f"fc_graph_{name}", GraphConv(5 * h, h))
        self.source_semantic = nn.Conv2d(c, 7, 1)
        self.middle_semantic = nn.Conv2d(c, 18, 1)
        # (begin, end) node counts; middle2target's stored matrix is 7 x 18 in the official checkpoint
        for name, begin, end in (("source2target", 7, 20), ("target2source", 20, 7), ("middle2source", 18, 7),
                                 ("middle2target", 18, 7), ("source2middle", 7, 18), ("target2middle", 20, 18)):
            setattr(self, f"transpose_graph_{name}", GraphTransfer(h, begin, end))

    def target_graph(self, x):
        pascal, cihp, atr = self.adj_pascal, self.adj_cihp, self.adj_atr
        c2p, p2a, c2a = self.adj_cihp2pascal, self.adj_pascal2atr, self.adj_cihp2atr  # (7, 20), (7, 18), (20, 18)
        s, t, m = self.source_featuremap_2_graph(x), self.target_featuremap_2_graph(x), self.middle_featuremap_2_graph(x)
        for _ in range(3):
            s = self.source_graph_conv1(s, pascal)
            t = self.target_graph_conv1(t, cihp)
            m = self.target_graph_conv1(m, atr)
            s_next = self.fc_graph_source(torch.cat([
                s, similarity_transfer(t, s), self.transpose_graph_target2source(t, c2p),
                similarity_transfer(m, s), self.transpose_graph_middle2source(m, p2a)], dim=-1))
            t_next = self.fc_graph_target(torch.cat([
                t, similarity_transfer(s, t), self.transpose_graph_source2target(s, c2p.T),
                similarity_transfer(m, t), self.transpose_graph_middle2target(m, c2a)], dim=-1))
            m = self.fc_graph_middle(torch.cat([
                m, similarity_transfer(s, m), self.transpose_graph_source2middle(s, p2a.T),
                similarity_transfer(t, m), self.transpose_graph_target2middle(t, c2a.T)], dim=-1))
            s, t = s_next, t_next
        return t


VARIANTS = {"transfer": GraphonomyTransfer, "universal": GraphonomyUniversal}

def build(variant: str = "transfer", **kwargs) -> _GraphonomyBase:
    if variant not in VARIANTS:
        raise ValueError(f"unknown Graphonomy variant {variant!r}: {sorted(VARIANTS)}")
    return VARIANTS[variant](GraphonomyConfig(variant=variant, **kwargs))


def _variant_of(state) -> str | None:
    """The Graphonomy variant of a state dict, from graph layers only that variant has: "universal",
    "transfer", or None for any other model (the check `checkpoint.detect_family` runs)."""
    if "fc_graph_target.weight" in state:
        return "universal"
    if "fc_graph.weight" in state:
        return "transfer"
    return None


checkpoint.register_family("graphonomy", _variant_of)


def detect_variant(state: dict) -> str:
    found = _variant_of(state)
    if found is None:
        raise ValueError("not a Graphonomy checkpoint: neither fc_graph.weight (transfer) nor fc_graph_target.weight (universal) found")
    return found


WEIGHTS_SOURCE = ("Download Graphonomy's inference.pth (CIHP transfer model) or universal_trained.pth from the Graphonomy "
                  "release and set parsing.weights (and parsing.variant), or set parsing.weights: null to train the demo "
                  "parser on the demo world.")


def width_of(state: dict) -> float:
    """The width multiplier of a Graphonomy state dict (prefix stripped). The widest layer's input (2048
    channels at width 1) gives it exactly; narrow layers are clamped to at least 4 channels and cannot
    tell small widths apart."""
    return state["aspp1.atrous_convolution.weight"].shape[1] / 2048.0


def from_pretrained(path: str | Path, variant: str | None = None, graph2fea_softmax: bool = True,
                    source_third_layer: str = "conv2") -> _GraphonomyBase:
    """A Graphonomy model with the weights in `path` loaded strictly. The family is detected from the
    keys (and checked against `variant` when given); the width from the ASPP input channels, so the
    demo parser's checkpoints load the same way. Missing BatchNorm `num_batches_tracked` entries
    (PyTorch 0.4 files) are zero-filled counters, not weights."""
    path = Path(path)
    state = checkpoint.strip_prefix(checkpoint.read_state_dict(path, what="parser weights", source_hint=WEIGHTS_SOURCE))
    found = detect_variant(state)
    if variant is not None and variant != found:
        raise ValueError(f"{path} holds the {found} Graphonomy model, but variant {variant!r} was asked for")
    model = build(found, width=width_of(state), graph2fea_softmax=graph2fea_softmax, source_third_layer=source_third_layer)
    checkpoint.add_missing_bn_counters(model, state)
    return checkpoint.load_strict(model, state, source=path).eval()
