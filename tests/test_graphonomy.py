"""Our Graphonomy classes against the official checkpoints' layout, and their inference on CPU."""

from pathlib import Path

import numpy as np
import pytest
import torch

from models.graphonomy import build, detect_variant, from_pretrained, graph_tables, normalized_graph
from pipeline.human_parser import ParserRunner, ParsingSettings, multiscale_logits

DATA = Path(__file__).parent / "data"


def official_layout(variant: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the official checkpoint (listed from the official code, not from our classes)."""
    layout = {}
    for line in (DATA / f"graphonomy_{variant}_keys.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            key, *shape = line.split()
            layout[key] = tuple(int(n) for n in shape)
    return layout


@pytest.mark.parametrize("variant, count", [("transfer", 750), ("universal", 781)])
def test_official_state_dict_loads_strictly(tmp_path, variant, count):
    """A state dict with the official names and shapes (as PyTorch 0.4 saved it: no num_batches_tracked,
    no module. prefix) loads with strict=True, and every value lands where its name says."""
    layout = official_layout(variant)
    assert len(layout) == count
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(shape, generator=gen) for k, shape in layout.items()}
    for k in state:
        if k.endswith("running_var"):
            state[k] = state[k].abs() + 0.5
    path = tmp_path / ("inference.pth" if variant == "transfer" else "universal_trained.pth")
    torch.save(state, path)
    model = from_pretrained(path, variant=variant)
    loaded = model.state_dict()
    for key in ("xception_features.block2.block2_lastconv.1.pointwise.weight", "target_featuremap_2_graph.pre_fea", "semantic.bias"):
        torch.testing.assert_close(loaded[key], state[key])
    assert not any(k.startswith("module.") for k in loaded)
    with pytest.raises(ValueError, match="variant"):
        from_pretrained(path, variant="universal" if variant == "transfer" else "transfer")


def test_module_prefix_and_wrong_files_are_handled(tmp_path):
    layout = official_layout("transfer")
    state = {f"module.{k}": torch.zeros(s) for k, s in layout.items()}
    torch.save(state, tmp_path / "wrapped.pth")
    assert detect_variant({k.removeprefix("module."): v for k, v in state.items()}) == "transfer"
    from_pretrained(tmp_path / "wrapped.pth")
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a Graphonomy checkpoint"):
        from_pretrained(tmp_path / "other.pth")
    with pytest.raises(FileNotFoundError, match="inference.pth"):
        from_pretrained(tmp_path / "absent.pth")


def test_adjacency_normalisation():
    tables = graph_tables()
    assert tables["pascal"].shape == (7, 7) and tables["cihp"].shape == (20, 20) and tables["atr"].shape == (18, 18)
    assert tables["cihp2pascal"].shape == (7, 20) and tables["cihp2atr"].shape == (20, 18)
    for name in ("pascal", "cihp", "atr"):
        np.testing.assert_allclose(tables[name], tables[name].T)
    # background has no edges: its row is the unit vector
    np.testing.assert_allclose(tables["cihp"][0], np.eye(20)[0])
    # a listed self loop counts on top of +I (diagonal 2 before normalisation), as networkx does
    np.testing.assert_allclose(normalized_graph({"0": [0, 1], "1": [0, 1]}), [[2 / 3, 1 / 3], [1 / 3, 2 / 3]])
    # values of the official preprocess_adj(pascal_graph)
    np.testing.assert_allclose(tables["pascal"][1, 1:3], [0.66666667, 0.25819889], atol=1e-8)
    np.testing.assert_allclose(tables["pascal"][2, 2:6], [0.4, 0.2236068, 0.0, 0.2236068], atol=1e-7)


def test_reprojection_variants_agree_with_the_official_expansion():
    """The closed form of the graph -> feature reprojection equals the official (B, HW, N, C) computation."""
    from models.graphonomy import GraphToFeature

    gen = torch.Generator().manual_seed(1)
    g, x = torch.randn(2, 20, 16, generator=gen), torch.randn(2, 8, 5, 6, generator=gen)
    for softmax in (True, False):
        layer = GraphToFeature(8, 12, 16, softmax)
        b, c, h, w = x.shape
        pixels = x.flatten(2).transpose(1, 2).unsqueeze(2).expand(b, h * w, 20, c)
        nodes = g.unsqueeze(1).expand(b, h * w, 20, 16)
        score = (pixels @ layer.node_fea_for_res + nodes @ layer.node_fea_for_hidden).squeeze(-1)
        score = torch.softmax(score, dim=-1) if softmax else score
        expected = torch.relu((score @ (g @ layer.weight)).transpose(1, 2).reshape(b, 12, h, w))
        torch.testing.assert_close(layer(g, x), expected)


@pytest.mark.parametrize("variant", ["transfer", "universal"])
def test_full_size_model_parses_a_512_image_on_cpu(variant):
    torch.manual_seed(0)
    model = build(variant).eval()
    image = torch.randint(0, 256, (1, 512, 512, 3), dtype=torch.uint8)
    with torch.inference_mode():
        logits = multiscale_logits(model, image, (1.0,), flip=True)
    assert logits.shape == (1, 20, 512, 512) and torch.isfinite(logits).all()


def test_runner_stores_flags_and_skips_missing_images(split, tmp_path):
    ann, _ = split
    torch.manual_seed(0)
    model = build("transfer", width=0.0625)
    out = ParserRunner(model, ParsingSettings(scales=(1.0,), input_resolution=96, label_resolution=64)).run(ann, range(len(ann)))
    assert out["labels"].shape == (len(ann), 64, 64) and out["labels"].max() < 20
    assert not out["skipped"].any() and (~np.isnan(out["box"]).any(axis=1) == ~out["no_keypoints"]).all()
    # an image that went missing is recorded with its reason, not parsed
    missing = ann.image_path(1)
    moved = tmp_path / "moved.jpg"
    missing.rename(moved)
    try:
        out = ParserRunner(model, ParsingSettings(scales=(1.0,), input_resolution=96, label_resolution=64)).run(ann, range(3))
    finally:
        moved.rename(missing)
    assert out["skipped"].tolist() == [False, True, False] and "missing image file" in out["reason"][1]


def test_full_image_mode_maps_labels_into_the_crop_frame(split):
    """Parsing the whole photo and parsing the person crop store labels in the same crop frame."""
    ann, _ = split

    class RedIsFace(torch.nn.Module):
        """Label 13 (face) where the input is reddish, background elsewhere: a position-free stub."""

        def __init__(self):
            super().__init__()
            self.dummy = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):  # x: BGR in [-1, 1]
            red = (x[:, 2:3] - x[:, 1:2]) > 0.2
            logits = torch.zeros(x.shape[0], 20, *x.shape[-2:])
            logits[:, 13:14] = red.float()
            return logits

    common = dict(scales=(1.0,), flip=False, label_resolution=64, optimize=False)
    crop = ParserRunner(RedIsFace(), ParsingSettings(mode="crop", input_resolution=128, **common)).run(ann, range(2))
    full = ParserRunner(RedIsFace(), ParsingSettings(mode="full", **common)).run(ann, range(2))
    agree = (crop["labels"] == full["labels"]).mean()
    assert agree > 0.95 and (full["labels"] == 13).any()


def test_runner_takes_sides_from_the_keypoints(split):
    """A stub parser that calls every pixel "Left-arm": with sides from keypoints, the pixels at the
    person's right wrist become "Right-arm" and those at the left wrist stay "Left-arm"; with the
    parser's sides nothing changes."""
    from pipeline.crop import crop_matrix, transform_points
    from pipeline.labelsets import CIHP
    from pipeline.human_parser import sample_keypoints

    ann, _ = split

    class AllLeftArm(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dummy = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            logits = torch.zeros(x.shape[0], 20, *x.shape[-2:])
            logits[:, CIHP["Left-arm"]] = 1.0
            return logits

    common = dict(scales=(1.0,), flip=False, label_resolution=64, input_resolution=64, optimize=False)
    rows = range(4)
    kept = ParserRunner(AllLeftArm(), ParsingSettings(sides_from_keypoints=False, **common)).run(ann, rows)
    sided = ParserRunner(AllLeftArm(), ParsingSettings(**common)).run(ann, rows)
    assert (kept["labels"] == CIHP["Left-arm"]).all() and (kept["sides_changed"] == 0).all()
    checked = 0
    for j, i in enumerate(rows):
        kp = sample_keypoints(ann, i, 0.3).copy()
        kp[:, :2] = transform_points(kp[:, :2], crop_matrix(ann["center"][i], ann["scale"][i], 64))
        assert len(kp) == 25  # OpenPose BODY_25
        labels = sided["labels"][j]
        assert set(np.unique(labels)) <= {CIHP["Left-arm"], CIHP["Right-arm"]}
        assert sided["sides_changed"][j] == (labels == CIHP["Right-arm"]).sum()
        (lx, ly), (rx, ry) = np.round(kp[7, :2]).astype(int), np.round(kp[4, :2]).astype(int)  # OP LWrist, RWrist
        if kp[4, 2] > 0.3 and kp[7, 2] > 0.3 and np.hypot(lx - rx, ly - ry) > 6 and all(0 <= v < 64 for v in (lx, ly, rx, ry)):
            assert labels[ly, lx] == CIHP["Left-arm"] and labels[ry, rx] == CIHP["Right-arm"]
            checked += 1
    assert checked >= 2
