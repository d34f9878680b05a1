"""The shared checkpoint reader against the files people actually get: Lightning and SPIN containers,
DataParallel prefixes, failed downloads, and pickles that would run code."""

import argparse
import os
import re
import shlex

import pytest
import torch
from torch import nn

from models import checkpoint
from models.checkpoint import detect_family, load_strict, read_state_dict, strip_prefix, submodule


def names(path):
    return re.escape(str(path))


def test_lightning_checkpoint_loads_and_loses_its_model_prefix(tmp_path):
    """PARE's pare_checkpoint.ckpt layout: weights under "state_dict" with "model." keys, next to plain
    Python training state (numbers, strings, lists, optimizer states), all readable weights-only."""
    weights = {"model.backbone.conv1.weight": torch.randn(4, 3, 3, 3), "model.head.fc.bias": torch.randn(7)}
    path = tmp_path / "pare_checkpoint.ckpt"
    torch.save({"state_dict": weights, "hyper_parameters": {"lr": 5e-5, "backbone": "hrnet_w32", "layers": [1, 2]},
                "epoch": 3, "global_step": 1200, "pytorch-lightning_version": "1.1.8",
                "optimizer_states": [{"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 5e-5, "params": [0]}]}],
                "callbacks": {"ModelCheckpoint": {"best_model_score": torch.tensor(0.5)}}}, path)
    state = read_state_dict(path)
    assert sorted(state) == sorted(weights)
    stripped = strip_prefix(state)
    assert sorted(stripped) == ["backbone.conv1.weight", "head.fc.bias"]
    torch.testing.assert_close(stripped["head.fc.bias"], weights["model.head.fc.bias"])
    assert "model.head.fc.bias" in state  # a new dict: the one read is untouched


def test_lightning_extras_that_need_code_are_refused_and_explained(tmp_path):
    """Older Lightning stored hyper-parameters as argparse.Namespace: weights-only loading refuses the
    file, and the error says why and how to extract the weights instead of loading it unsafely."""
    path = tmp_path / "old_lightning.ckpt"
    torch.save({"state_dict": {"model.x": torch.zeros(2)}, "hyper_parameters": argparse.Namespace(lr=1e-4)}, path)
    with pytest.raises(ValueError, match=names(path)) as e:
        read_state_dict(path)
    assert "argparse.Namespace" in str(e.value) and "execute" in str(e.value) and "weights_only=False" in str(e.value)


def test_spin_checkpoint_gives_the_model_not_the_optimizer(tmp_path):
    """SPIN's model_checkpoint.pt: {"model": state dict, "optimizer": optimizer state, counters}."""
    net = nn.Linear(3, 2)
    optimizer = torch.optim.Adam(net.parameters())
    net(torch.randn(4, 3)).sum().backward()
    optimizer.step()  # optimizer state now holds tensors too
    path = tmp_path / "model_checkpoint.pt"
    torch.save({"model": net.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 2, "batch_idx": 10,
                "batch_size": 64, "total_step_count": 3}, path)
    state = read_state_dict(path)
    assert sorted(state) == ["bias", "weight"]
    load_strict(nn.Linear(3, 2), strip_prefix(state))


@pytest.mark.parametrize("zipped", [True, False])
def test_dataparallel_prefix_is_stripped_in_both_file_formats(tmp_path, zipped):
    path = tmp_path / "wrapped.pth"
    torch.save({"module.a.weight": torch.ones(2), "module.b.bias": torch.zeros(1)}, path,
               _use_new_zipfile_serialization=zipped)  # False: the pre-1.6 pickle format of old releases
    assert sorted(strip_prefix(read_state_dict(path))) == ["a.weight", "b.bias"]


def test_prefix_rules():
    t = torch.zeros(1)
    # stripped only when every key has it: a lone "model." key names a real submodule
    assert sorted(strip_prefix({"model.x": t, "head.y": t})) == ["head.y", "model.x"]
    assert sorted(strip_prefix({"model.module.x": t, "model.module.y": t})) == ["x", "y"]
    assert sorted(strip_prefix({"module.x": t}, prefixes=("model.",))) == ["module.x"]
    # Lightning module with losses/SMPL buffers next to the network: take the network only
    assert sorted(submodule({"model.x": t, "model.h.y": t, "smpl.faces": t}, "model.")) == ["h.y", "x"]


@pytest.mark.parametrize("content, says", [
    (b"<!DOCTYPE html>\n<html><head><title>Google Drive - Virus scan warning</title></head></html>", "download probably failed"),
    (b"\xef\xbb\xbf  <html><body>404</body></html>", "download probably failed"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n", "git lfs pull"),
    (b"hello, this is a text file\n", "starts with"),
    (b"", "empty"),
])
def test_non_checkpoints_are_named_as_such(tmp_path, content, says):
    path = tmp_path / "inference.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=names(path)) as e:
        read_state_dict(path, what="parser weights", source_hint="Get it from the release page.")
    assert says in str(e.value) and "not a PyTorch checkpoint" in str(e.value) and "release page" in str(e.value)


@pytest.mark.parametrize("zipped", [True, False])
def test_truncated_checkpoints_are_named_as_such(tmp_path, zipped):
    whole = tmp_path / "whole.pth"
    torch.save({"w": torch.randn(64, 64)}, whole, _use_new_zipfile_serialization=zipped)
    path = tmp_path / "truncated.pth"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ValueError, match=names(path)) as e:
        read_state_dict(path)
    assert "not a readable PyTorch checkpoint" in str(e.value)


def test_missing_file_names_the_path_and_the_file_expected(tmp_path):
    path = tmp_path / "absent.pth"
    with pytest.raises(FileNotFoundError, match=names(path)) as e:
        read_state_dict(path, what="regressor weights", source_hint="Download pare_checkpoint.ckpt.")
    assert str(e.value) == f"regressor weights not found: {path}. Download pare_checkpoint.ckpt."


class RunsACommand:
    """Unpickling this calls os.system: what a hostile checkpoint does."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("zipped", [True, False])
def test_a_pickle_that_runs_code_is_refused_without_running_it(tmp_path, zipped):
    marker = tmp_path / "marker"
    path = tmp_path / "hostile.pth"
    torch.save({"w": torch.zeros(2), "x": RunsACommand(f"touch {shlex.quote(str(marker))}")}, path,
               _use_new_zipfile_serialization=zipped)
    with pytest.raises(ValueError, match=names(path)) as e:
        read_state_dict(path)
    assert f"{os.system.__module__}.system" in str(e.value) and "execute code" in str(e.value)
    assert not marker.exists()
    # the file really is hostile: the unsafe reader runs the command
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_a_file_without_weights_lists_what_it_holds(tmp_path):
    path = tmp_path / "optimizer_only.pt"
    torch.save({"optimizer": {"state": {}, "param_groups": []}, "epoch": 4}, path)
    with pytest.raises(ValueError, match=names(path)) as e:
        read_state_dict(path)
    assert "no state dict" in str(e.value) and "optimizer" in str(e.value) and "epoch" in str(e.value)


def test_strict_loading_names_every_kind_of_mismatch_and_copies_nothing(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = {"0.weight": torch.ones(4, 3), "2.weight": torch.ones(5, 4), "2.bias": torch.ones(2), "head.extra": torch.ones(1)}
    with pytest.raises(ValueError) as e:
        load_strict(model, state, source=tmp_path / "regressor.pth")
    message = str(e.value)
    assert str(tmp_path / "regressor.pth") in message and "Sequential" in message
    assert "1 missing, 1 unexpected, 1 with another shape" in message
    assert "0.bias" in message and "head.extra" in message and "2.weight: file (5, 4), model (2, 4)" in message
    for k, v in model.state_dict().items():  # "0.weight" fitted, yet nothing was copied
        torch.testing.assert_close(v, before[k])
    fitting = {k: torch.full_like(v, 0.5) for k, v in before.items()}
    assert load_strict(model, fitting) is model
    torch.testing.assert_close(model[2].bias, torch.full((2,), 0.5))


def test_strict_loading_caps_long_lists():
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(8)])  # 16 keys
    with pytest.raises(ValueError) as e:
        load_strict(model, {"0.weight": torch.zeros(2, 2)})
    message = str(e.value)
    assert "15 missing" in message and "(5 more)" in message and "7.bias" not in message


def test_families_are_detected_and_unknown_dicts_refused(monkeypatch):
    import models.graphonomy  # noqa: F401 - registers the family

    t = torch.zeros(1)
    assert detect_family({"fc_graph.weight": t, "semantic.bias": t}) == ("graphonomy", "transfer")
    assert detect_family({"fc_graph_target.weight": t, "fc_graph_source.weight": t}) == ("graphonomy", "universal")
    with pytest.raises(ValueError, match="graphonomy") as e:
        detect_family({"backbone.conv1.weight": t})
    assert "backbone.conv1.weight" in str(e.value)
    monkeypatch.setitem(checkpoint._FAMILIES, "toy", lambda s: "v1" if "backbone.conv1.weight" in s else None)
    assert detect_family({"backbone.conv1.weight": t}) == ("toy", "v1")
    monkeypatch.setitem(checkpoint._FAMILIES, "greedy", lambda s: "any")
    with pytest.raises(ValueError, match="several"):
        detect_family({"backbone.conv1.weight": t})


def test_graphonomy_reports_a_wrong_shape_by_name(tmp_path):
    from models.graphonomy import build, from_pretrained

    state = build("transfer", width=0.0625).state_dict()
    state["semantic.weight"] = torch.zeros(21, *state["semantic.weight"].shape[1:])  # 21 classes, not 20
    path = tmp_path / "demo.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=names(path)) as e:
        from_pretrained(path)
    assert "semantic.weight: file (21," in str(e.value) and "0 missing, 0 unexpected, 1 with another shape" in str(e.value)
