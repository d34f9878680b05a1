"""Config validation against the JSON schema, with defaults filled in from the schema.

The workflow calls `validate_config` while the DAG is built, so a wrong type or an unknown key stops
the run before any job starts, with a message that names the key by its dotted path.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """The configuration does not match the schema; the message lists every fault."""


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def _fill_defaults(instance: Any, schema: dict) -> None:
    """Insert schema defaults for absent keys, recursively (objects only)."""
    if not isinstance(instance, dict):
        return
    properties = schema.get("properties", {})
    for key, sub in properties.items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            _fill_defaults(instance[key], sub)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):  # a map of user-named entries (e.g. world.splits.<name>)
        for key in set(instance) - set(properties):
            _fill_defaults(instance[key], extra)


def _describe(error: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        keys = ", ".join(f"{where}.{k}" if error.absolute_path else k for k in unknown)
        return f"unknown key {keys} (allowed under {where}: {', '.join(allowed)})"
    return f"{where}: {error.message}"


def validate_config(config: dict, schema: dict | str | Path = SCHEMA_PATH) -> dict:
    """Validate `config` in place, fill in defaults, and return it.

    Raises ConfigError naming every offending key by its dotted path (e.g. `body.demo.grid_spacing`).
    """
    if not isinstance(schema, dict):
        schema = load_schema(schema)
    if not isinstance(config, dict):
        raise ConfigError(f"the config must be a mapping of keys to values, got {type(config).__name__}")
    _fill_defaults(config, schema)
    validator = jsonschema.Draft202012Validator(schema)
    # one problem per key: a type error says more than the enum or range checks of the same value
    by_key: dict[tuple, jsonschema.ValidationError] = {}
    for e in sorted(validator.iter_errors(config), key=lambda e: e.validator != "type"):
        by_key.setdefault((tuple(str(p) for p in e.absolute_path), e.validator == "additionalProperties"), e)
    errors = [by_key[k] for k in sorted(by_key)]
    if errors:
        lines = "\n".join(f"  - {_describe(e)}" for e in errors)
        raise ConfigError(
            f"invalid configuration ({len(errors)} problem{'s' if len(errors) > 1 else ''}):\n{lines}\n"
            f"Every key, its type and its default: {SCHEMA_PATH.relative_to(SCHEMA_PATH.parents[2])}"
        )
    return config


def schema_defaults(*section: str) -> dict:
    """The defaults of one config section, e.g. `schema_defaults("parsing", "demo")`: tools that run
    outside Snakemake take their defaults from here, so the schema stays the one place they live."""
    values = validate_config({})
    for key in section:
        values = values[key]
    return values


def resolve_device(device: str) -> str:
    """A stage's `device` setting: "auto" is CUDA when this node has it, else the CPU."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
