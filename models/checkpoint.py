"""Reading published checkpoints (Graphonomy, PARE, SPIN/HMR, DSR) into our modules, one way for all.

Files come from release pages, cloud drives and old PyTorch versions, so reading is where things go wrong:
a download that saved the host's web page, a truncated file, a Lightning checkpoint whose extras are
pickled Python objects. Everything here loads with `weights_only=True`, so no file can execute code, and
every error names the file and what to do about it.

The usual chain: `read_state_dict` -> `strip_prefix` (or `submodule`) -> `detect_family` -> build the
model -> `load_strict`.
"""

from __future__ import annotations

import pickle
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from pipeline.io import failed_download

# Where the weights sit inside the usual containers, tried in this order after a plain state dict:
# PyTorch Lightning (PARE's pare_checkpoint.ckpt) and many research repositories: "state_dict";
# trainers that save {"model_state_dict", "optimizer_state_dict", ...}; SPIN's model_checkpoint.pt
# ({"model", "optimizer", "epoch", ...}); "net" in some older repositories.
CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "net")

# Classes that published checkpoints pickle beside their tensors, as training metadata: the config of
# PARE's and DSR's Lightning modules (yacs CfgNode sections, in DSR's inside Lightning's AttributeDict) and
# Lightning callback classes used as dictionary keys. They are admitted by name only and rebuilt as inert
# stand-ins: mappings become plain OrderedDicts (their attributes land in the dict's __dict__), classes
# become a marker. No code of the named class runs, and no other class is admitted.
ADMITTED_MAPPINGS = (
    "yacs.config.CfgNode",
    "pytorch_lightning.utilities.parsing.AttributeDict",
)
ADMITTED_MARKERS = (
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
    "pytorch_lightning.callbacks.early_stopping.EarlyStopping",
    "pytorch_lightning.callbacks.lr_monitor.LearningRateMonitor",
    "pytorch_lightning.callbacks.progress.ProgressBar",
)


class _PickledMapping:
    """Stand-in for an admitted mapping class: unpickling "creates" one and gets an empty OrderedDict,
    which the pickle's own items and attributes then fill, as data."""

    def __new__(cls, *args, **kwargs):
        return OrderedDict()


class PickledClass:
    """Stand-in for an admitted class that a checkpoint names without instantiating (a dict key)."""


def _admitted_globals() -> list:
    made = [(type(name.rsplit(".", 1)[1], (_PickledMapping,), {"__new__": _PickledMapping.__new__}), name)
            for name in ADMITTED_MAPPINGS]
    return made + [(type(name.rsplit(".", 1)[1], (PickledClass,), {}), name) for name in ADMITTED_MARKERS]


# Globals from these modules run programs or code when unpickled: a file naming them is hostile, not old.
_HOSTILE_MODULES = {"os", "posix", "nt", "subprocess", "builtins", "sys", "shutil", "runpy", "importlib", "socket"}


def read_state_dict(path: str | Path, *, what: str = "checkpoint", source_hint: str = "") -> dict[str, torch.Tensor]:
    """The tensors of the checkpoint at `path` as {name: tensor}, read without executing any code.
    `what` names the file in messages ("parser weights"); `source_hint` says where to get it and is
    appended when the file is missing or looks like a failed download."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}. {source_hint}".rstrip())
    with open(path, "rb") as f:
        head = f.read(64)
    again = f"download it again. {source_hint}".rstrip()
    problem = failed_download(head)
    if problem is not None:
        raise ValueError(f"{path}: the {what} file {problem}, not a PyTorch checkpoint: the download probably failed; "
                         f"{again}")
    # torch.save writes a zip archive ("PK") or, before PyTorch 1.6, a pickle (protocol 2+: 0x80)
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):
        raise ValueError(f"{path}: the {what} file is not a PyTorch checkpoint (it starts with {head[:16]!r}; "
                         f"torch.save writes a zip archive or a pickle); {again}")
    try:
        with torch.serialization.safe_globals(_admitted_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        names = re.findall(r"GLOBAL ([\w.]+)", str(e))
        if not names:  # a pickle the weights-only reader cannot parse at all
            raise ValueError(f"{path}: the {what} file is not a readable PyTorch checkpoint (damaged, truncated "
                             f"or not written by torch.save); {again}") from None
        raise ValueError(_refusal(path, what, names[0])) from None
    except (RuntimeError, EOFError, KeyError, IndexError, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else type(e).__name__  # torch's gist
        raise ValueError(f"{path}: the {what} file is not a readable PyTorch checkpoint, probably truncated or "
                         f"damaged (torch: {first}); {again}") from None
    return unwrap(obj, source=path)


def _refusal(path: Path, what: str, name: str) -> str:
    if name.split(".")[0] in _HOSTILE_MODULES:
        return (f"{path}: refused: the {what} file would call {name} when unpickled, i.e. execute code; "
                "it was not loaded. Do not load it; get the file again from its official source.")
    return (f"{path}: refused: besides tensors the {what} file holds a pickled Python object ({name}, e.g. "
            "training settings of a Lightning checkpoint); unpickling it would execute that class's code, so "
            "weights-only loading refuses it. If the file comes from a source you trust, extract the weights "
            "once on a trusted machine and point the config at the new file: python -c \"import torch; "
            f"c = torch.load('{path}', map_location='cpu', weights_only=False); "
            f"torch.save(c.get('state_dict', c.get('model', c)), '{path.with_suffix('.weights.pth')}')\"")


def _is_state_dict(obj) -> bool:
    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def unwrap(obj, *, source: str | Path = "checkpoint") -> dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint: `obj` itself when it maps names to tensors, else the
    first of CONTAINER_KEYS that holds one, searched up to two containers deep ({"model": {"state_dict"}})."""
    inner = obj
    for _ in range(3):
        if _is_state_dict(inner):
            return dict(inner)
        if not isinstance(inner, Mapping):
            break
        inner = next((inner[k] for k in CONTAINER_KEYS if isinstance(inner.get(k), Mapping)), None)
    held = f"keys {_capped([str(k) for k in obj])}" if isinstance(obj, Mapping) else f"a {type(obj).__name__}"
    raise ValueError(f"{source}: no state dict found (names -> tensors, at the top level or under one of "
                     f"{', '.join(CONTAINER_KEYS)}); the file holds {held}")


def strip_prefix(state: Mapping[str, torch.Tensor], prefixes: tuple[str, ...] = ("module.", "model.")) -> dict[str, torch.Tensor]:
    """A copy of `state` without wrapper prefixes: DataParallel's "module.", a Lightning module's
    "model.". A prefix is removed only when every key has it (a lone "model.x" among other names is a
    real submodule), and again while one applies ("model.module.x" -> "x")."""
    state = dict(state)
    while state:
        prefix = next((p for p in prefixes if all(k.startswith(p) for k in state)), None)
        if prefix is None:
            break
        state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def submodule(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under `prefix` with the prefix removed; the rest dropped. For a Lightning checkpoint
    that also stores other modules (losses, SMPL buffers) next to the network: submodule(state, "model.")."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _matches(key: str, names: tuple[str, ...]) -> bool:
    """`names` holds exact keys and prefixes (those ending in ".")."""
    return any(key.startswith(n) if n.endswith(".") else key == n for n in names)


def network_state(state: Mapping[str, torch.Tensor], *, trainer_extras: tuple[str, ...] = (),
                  network_extras: tuple[str, ...] = (), source: str | Path = "checkpoint"
                  ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(the network's entries, the keys set aside, as named in the file) of a state dict that may be a whole training module's.

    A Lightning checkpoint stores its LightningModule: the network under "model." beside the module's
    other buffers (a copy of the SMPL body model, a renderer's camera, a loss's class weights). Those
    are `trainer_extras` (exact keys, or prefixes ending in "."); entries inside the network that are
    not weights either (its own copy of the body model, an unused constant) are `network_extras`.
    Every other key is kept, and anything outside "model." that is not a known extra is an error
    naming it, so nothing unknown is dropped silently.
    """
    state = strip_prefix(state)
    aside, inside = [], ""
    if any(k.startswith("model.") for k in state) and not all(k.startswith("model.") for k in state):
        outside = [k for k in state if not k.startswith("model.")]
        unknown = [k for k in outside if not _matches(k, trainer_extras)]
        if unknown:
            raise ValueError(f"{source}: besides the network (model.*) the state dict holds {len(unknown)} entries "
                             f"this project does not know: {_capped(unknown)}")
        aside += outside
        state, inside = submodule(state, "model."), "model."
    aside += [inside + k for k in state if _matches(k, network_extras)]
    return {k: v for k, v in state.items() if not _matches(k, network_extras)}, aside


# family name -> detects(state): the variant the state dict holds, or None when it is not that family's
_FAMILIES: dict[str, Callable[[Mapping[str, torch.Tensor]], str | None]] = {}


def register_family(name: str, detects: Callable[[Mapping[str, torch.Tensor]], str | None]) -> None:
    """Make a model family known to `detect_family`. Each family's module registers itself on import,
    so a family is known once its module (e.g. models.graphonomy) has been imported."""
    _FAMILIES[name] = detects


def detect_family(state: Mapping[str, torch.Tensor]) -> tuple[str, str]:
    """(family, variant) of a (prefix-stripped) state dict, e.g. ("graphonomy", "universal"), so that a
    file given for the wrong model is named for what it is instead of failing on a thousand keys."""
    import models.graphonomy, models.hmr, models.pare  # noqa: F401,E401  each registers its family on import
    found = [(name, variant) for name, detects in _FAMILIES.items() if (variant := detects(state)) is not None]
    if len(found) == 1:
        return found[0]
    if found:
        raise ValueError(f"the checkpoint matches several model families: {found}")
    raise ValueError(f"not a checkpoint of a known model family ({', '.join(sorted(_FAMILIES)) or 'none registered'}); "
                     f"its keys: {_capped(list(state))}")


def add_missing_bn_counters(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` with a zero BatchNorm `num_batches_tracked` for each the model has and the file lacks
    (files of PyTorch < 0.4.1, torchvision's ImageNet weights): counters, not weights."""
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    return state


def load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str | Path = "checkpoint") -> nn.Module:
    """`model.load_state_dict(state, strict=True)`, with every disagreement found before anything is
    copied and reported as one ValueError: counts, then the first names of each kind."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k}: file {tuple(state[k].shape)}, model {tuple(v.shape)}" for k, v in expected.items()
              if k in state and isinstance(v, torch.Tensor) and isinstance(state[k], torch.Tensor) and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        lines = [f"{source} does not fit {type(model).__name__}: {len(missing)} missing, {len(unexpected)} unexpected, "
                 f"{len(shapes)} with another shape"]
        for title, items in (("missing from the file", missing), ("unexpected in the file", unexpected),
                             ("shape mismatch", shapes)):
            if items:
                lines.append(f"  {title} ({len(items)}): {_capped(items)}")
        raise ValueError("\n".join(lines))
    model.load_state_dict(state, strict=True)
    return model


def _capped(items: list[str], cap: int = 10) -> str:
    """The first `cap` items, and how many more there are."""
    more = f", ... ({len(items) - cap} more)" if len(items) > cap else ""
    return ", ".join(items[:cap]) + more
