"""Every published checkpoint layout of PARE, SPIN, DSR and the backbones' initialisations loads strictly
into our classes. The files are absent (licensed or large), so each test writes one in the real layout:
the key and shape lists in tests/data were derived from the official model code independently of
models/, and the containers are those of the official trainers (Lightning 1.x / 0.8.4 with pickled
config classes, SPIN's saver, DataParallel prefixes)."""

from __future__ import annotations

import os
import shlex
import sys
import types
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from models import checkpoint, hmr, pare
from models.backbones import build_backbone, load_pretrained_backbone

DATA = Path(__file__).parent / "data"


def fixture(name: str) -> dict[str, tuple[int, ...]]:
    keys = {}
    for line in (DATA / name).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, *dims = line.split()
            keys[key] = tuple(int(d) for d in dims)
    return keys


def tensors(keys: dict[str, tuple[int, ...]], seed: int = 0) -> OrderedDict:
    """Distinct values per tensor (so a swapped or misrouted tensor shows), int64 counters for BN."""
    g = torch.Generator().manual_seed(seed)
    out = OrderedDict()
    for k, shape in keys.items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(7)
        elif k.endswith(("faces_tensor", "parents")):
            out[k] = torch.zeros(shape, dtype=torch.long)
        else:
            out[k] = torch.randn(shape, generator=g) if len(shape) else torch.tensor(1.0)
    return out


class _FakeModules:
    """Registers stand-in modules so that test files pickle classes under their real names
    (yacs.config.CfgNode, Lightning's AttributeDict and ModelCheckpoint), then removes them before
    loading, as on a machine without yacs or Lightning."""

    NAMES = {"yacs.config": ("CfgNode", dict), "pytorch_lightning.utilities.parsing": ("AttributeDict", dict),
             "pytorch_lightning.callbacks.model_checkpoint": ("ModelCheckpoint", object)}

    def __enter__(self):
        self.classes, self.added = {}, []
        for module, (name, base) in self.NAMES.items():
            parts = module.split(".")
            for i in range(1, len(parts) + 1):
                sub = ".".join(parts[:i])
                if sub not in sys.modules:
                    sys.modules[sub] = types.ModuleType(sub)
                    self.added.append(sub)
            cls = type(name, (base,), {"__module__": module})
            setattr(sys.modules[module], name, cls)
            self.classes[name] = cls
        return self.classes

    def __exit__(self, *exc):
        for sub in self.added:
            sys.modules.pop(sub, None)


def cfg_node(cls, items: dict):
    """A yacs-like CfgNode: a dict subclass with attributes in its __dict__ (pickled as NEWOBJ + SETITEMS + BUILD)."""
    node = cls(items)
    node.__dict__.update({"__immutable__": True, "__deprecated_keys__": set(), "__new_allowed__": False})
    return node


def write_lightning(path: Path, state: dict, *, legacy: bool) -> None:
    """A PyTorch Lightning checkpoint with the official trainers' metadata: a CfgNode config inside an
    AttributeDict, the ModelCheckpoint class as a callbacks key, optimizer states. `legacy`: the pre-1.6
    pickle format DSR's PyTorch 1.5 wrote."""
    with _FakeModules() as cls:
        config = cfg_node(cls["CfgNode"], {"PARE": cfg_node(cls["CfgNode"], {"BACKBONE": "hrnet_w32-conv"}),
                                           "OPTIMIZER": cfg_node(cls["CfgNode"], {"LR": 5e-5})})
        ckpt = {"epoch": 14, "global_step": 123456, "pytorch-lightning_version": "1.1.8" if not legacy else "0.8.4",
                "state_dict": state, "hparams_name": "hparams",
                "hyper_parameters": cls["AttributeDict"]({"hparams": config}),
                "callbacks": {cls["ModelCheckpoint"]: {"best_model_score": torch.tensor(61.2), "best_model_path": "x"}},
                "optimizer_states": [{"state": {}, "param_groups": [{"lr": 5e-5, "params": [0, 1]}]}],
                "lr_schedulers": []}
        torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy)


def assert_holds(model, state: dict, prefix: str = "") -> None:
    own = model.state_dict()
    for key in list(own)[:: max(1, len(own) // 40)] + [k for k in own if "init_pose" in k or "pose_mlp" in k]:
        torch.testing.assert_close(own[key], state[prefix + key].to(own[key].dtype), msg=key)


# ---------------------------------------------------------------------------------------------------
# PARE


def test_pare_released_checkpoint_loads_strictly(tmp_path):
    """pare_checkpoint.ckpt: PARETrainer's whole state (network under model., SMPL copies, renderer
    buffers) with a yacs config and a callback class pickled beside it."""
    keys = fixture("pare_checkpoint_keys.txt")
    state = tensors(keys)
    path = tmp_path / "pare_checkpoint.ckpt"
    write_lightning(path, state, legacy=False)
    model = pare.from_pretrained(path)
    assert pare.config_of(model.state_dict())["iterative"] is False
    assert_holds(model, state, "model.")
    network, aside = pare.read_pare_state(path)
    assert len(network) == len(model.state_dict())
    assert "model.head.temperature" in aside and "smpl_native.posedirs" in aside and "K" in aside
    assert not any(k.startswith("model.smpl.") for k in network) and "head.temperature" not in network
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224))
    assert out.part_logits.shape == (1, 25, 56, 56) and out.attention.shape == (1, 24, 56, 56)


def test_pare_iterative_variant_and_module_prefix_load(tmp_path):
    """The official iterative option (pose_mlp reads 128 + 6 + 10 + 3 channels) is told apart by the layer
    sizes; a DataParallel "module." prefix on a bare network is stripped."""
    model = pare.PARE(iterative=True, width_mult=0.25)
    state = OrderedDict(("module." + k, torch.randn_like(v) if v.is_floating_point() else v)
                        for k, v in model.state_dict().items())
    path = tmp_path / "pare_iterative.pth"
    torch.save(state, path)
    loaded = pare.from_pretrained(path)
    assert loaded.head.iterative and loaded.head.pose_mlp.weight.shape[2] == 32 + 19
    assert_holds(loaded, state, "module.")


def test_pare_unknown_trainer_entry_and_missing_weight_are_named(tmp_path):
    keys = fixture("pare_checkpoint_keys.txt")
    state = tensors(keys)
    state["renderer.light"] = torch.zeros(3)
    path = tmp_path / "extra.ckpt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(ValueError, match=r"renderer\.light") as e:
        pare.from_pretrained(path)
    assert str(path) in str(e.value)
    del state["renderer.light"], state["model.head.cam_mlp.bias"]
    torch.save({"state_dict": state}, path)
    with pytest.raises(ValueError, match=r"(?s)1 missing.*head\.cam_mlp\.bias") as e:
        pare.from_pretrained(path)
    assert str(path) in str(e.value)


# ---------------------------------------------------------------------------------------------------
# SPIN and DSR


@pytest.mark.parametrize("prefix", ["", "module."])
def test_spin_model_checkpoint_loads_strictly(tmp_path, prefix):
    """SPIN's model_checkpoint.pt: {"model": flat HMR names, "optimizer": ..., counters}; also as saved
    from a DataParallel-wrapped model ("module.")."""
    state = tensors(fixture("spin_model_checkpoint_keys.txt"))
    state = OrderedDict((prefix + k, v) for k, v in state.items())
    path = tmp_path / "model_checkpoint.pt"
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": [{"lr": 5e-5, "params": [0]}]},
                "epoch": 1, "batch_idx": 0, "batch_size": 64, "dataset_perm": torch.arange(5),
                "total_step_count": 10000}, path)
    model = hmr.from_pretrained(path)
    torch.testing.assert_close(model.backbone.layer4[2].conv3.weight, state[prefix + "layer4.2.conv3.weight"])
    torch.testing.assert_close(model.head.decpose.bias, state[prefix + "decpose.bias"])
    torch.testing.assert_close(model.head.init_pose, state[prefix + "init_pose"])
    with torch.no_grad():
        out = model(torch.randn(2, 3, 224, 224))
    assert out.rotmat.shape == (2, 24, 3, 3)


@pytest.mark.parametrize("legacy", [True, False])
def test_dsr_checkpoints_load_strictly(tmp_path, legacy):
    """dsr_w3DPW_checkpoint.pt / dsr_wo3DPW_checkpoint.pt: Lightning 0.8.4 (PyTorch 1.5, pre-zip format),
    network under model.backbone / model.head, SMPL copies and a loss weight beside it."""
    state = tensors(fixture("dsr_checkpoint_keys.txt"), seed=1)
    path = tmp_path / "dsr_w3DPW_checkpoint.pt"
    write_lightning(path, state, legacy=legacy)
    model = hmr.from_pretrained(path)
    assert_holds(model, state, "model.")
    _, aside = hmr.read_hmr_state(path)
    assert {"J_regressor", "loss_fn.criterion_srv.weight", "model.smpl.smpl.posedirs"} <= set(aside)


def test_a_pare_file_given_as_hmr_weights_is_named_for_what_it_is(tmp_path):
    model = pare.PARE(width_mult=0.25)
    path = tmp_path / "pare.pth"
    torch.save(model.state_dict(), path)
    with pytest.raises(ValueError, match="holds a pare checkpoint, not HMR"):
        hmr.from_pretrained(path)


# ---------------------------------------------------------------------------------------------------
# Backbone initialisations


def test_imagenet_resnet50_loads_strictly_and_initialises_the_encoders(tmp_path):
    """resnet50-0676ba61.pth (no BN counters): strict into ResNet with its classifier; as an HMR/PARE
    initialisation the classifier is the only thing left out."""
    keys = fixture("resnet50_torchvision_keys.txt")
    state = tensors(keys)
    path = tmp_path / "resnet50-0676ba61.pth"
    torch.save(state, path)
    with_fc, _ = build_backbone("resnet50", num_classes=1000)
    own = with_fc.state_dict()
    checkpoint.load_strict(with_fc, {**{k: v for k, v in own.items() if k.endswith("num_batches_tracked")},
                                     **checkpoint.read_state_dict(path)})
    encoder, _ = build_backbone("resnet50")
    report = load_pretrained_backbone(encoder, path)
    assert report["skipped"] == ["fc.weight", "fc.bias"] and report["initialised"] == []
    torch.testing.assert_close(encoder.layer3[5].bn2.running_var, state["layer3.5.bn2.running_var"])


def test_hrnet_pose_file_loads_strictly_and_initialises_pares_backbone(tmp_path):
    """pose_hrnet_w32_256x192.pth loads strictly into the pose network; into PARE's "-conv" variant it
    fills everything it has, and only the variant's own layers keep their initialisation."""
    keys = fixture("hrnet_w32_pose_keys.txt")
    state = tensors(keys)
    path = tmp_path / "pose_hrnet_w32_256x192.pth"
    torch.save(state, path)
    pose, _ = build_backbone("hrnet_w32")
    checkpoint.load_strict(pose, checkpoint.read_state_dict(path))
    conv, channels = build_backbone("hrnet_w32-conv", num_joints=24)
    report = load_pretrained_backbone(conv, path)
    assert channels == 480 and report["skipped"] == ["final_layer.weight", "final_layer.bias"]
    roots = {k.split(".")[0] + ("." + k.split(".")[2] if k.startswith("stage4") else "") for k in report["initialised"]}
    assert roots == {"upsample_stage_2", "upsample_stage_3", "upsample_stage_4", "stage4.fuse_layers", "final_layer"}
    torch.testing.assert_close(conv.stage3[3].branches[2][3].conv2.weight, state["stage3.3.branches.2.3.conv2.weight"])


def test_backbone_file_of_another_width_is_refused_by_name(tmp_path):
    small, _ = build_backbone("hrnet_w32-conv", width_mult=0.25)
    path = tmp_path / "w8.pth"
    torch.save(small.state_dict(), path)
    net, _ = build_backbone("hrnet_w32-conv")
    with pytest.raises(ValueError, match="shape mismatches.*conv1.weight"):
        load_pretrained_backbone(net, path)


# ---------------------------------------------------------------------------------------------------
# Files that must not be loaded


class RunsACommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("reader", [hmr.from_pretrained, pare.from_pretrained])
def test_a_malicious_checkpoint_is_refused_and_does_not_run(tmp_path, reader):
    marker = tmp_path / "ran"
    path = tmp_path / "model_checkpoint.pt"
    torch.save({"model": {"conv1.weight": torch.zeros(1)}, "x": RunsACommand(f"touch {shlex.quote(str(marker))}")}, path)
    with pytest.raises(ValueError, match="execute code"):
        reader(path)
    assert not marker.exists()


def test_a_checkpoint_naming_a_class_outside_the_admitted_few_is_refused(tmp_path):
    """Only the config and callback classes the published files need are admitted, by exact name."""
    module = types.ModuleType("trainer_states")
    cls = type("TrainerState", (dict,), {"__module__": module.__name__})
    module.TrainerState = cls
    sys.modules[module.__name__] = module
    try:
        path = tmp_path / "other.ckpt"
        torch.save({"state_dict": {"model.x": torch.zeros(1)}, "state": cls(a=1)}, path)
    finally:
        del sys.modules[module.__name__]
    with pytest.raises(ValueError, match=r"refused.*trainer_states\.TrainerState"):
        checkpoint.read_state_dict(path)


def test_each_published_layout_is_recognised_as_its_family():
    """detect_family names every layout (it imports each family's module itself), so a file given to the
    wrong reader is named for what it is."""
    spin = fixture("spin_model_checkpoint_keys.txt")
    dsr, _ = checkpoint.network_state({k: torch.zeros(0) for k in fixture("dsr_checkpoint_keys.txt")},
                                      trainer_extras=hmr.TRAINER_EXTRAS, network_extras=hmr.NETWORK_EXTRAS)
    released, _ = checkpoint.network_state({k: torch.zeros(0) for k in fixture("pare_checkpoint_keys.txt")},
                                           trainer_extras=pare.TRAINER_EXTRAS, network_extras=pare.NETWORK_EXTRAS)
    assert checkpoint.detect_family(spin) == ("hmr", "spin")
    assert checkpoint.detect_family(dsr) == ("hmr", "ours")
    assert checkpoint.detect_family(released) == ("pare", "hrnet_w32-conv")
    assert checkpoint.detect_family(pare.PARE(backbone="resnet50", width_mult=0.25).state_dict()) == ("pare", "resnet50")
