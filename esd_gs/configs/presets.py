"""YAML presets and saved run configs: ``GenerateConfig`` values written as nested YAML mappings.

A preset names only what it changes; every value is checked against its field's declared type (one ``UserError``
naming the setting), then by the component's own checks. Nested configs marked ``flat`` (the update rule) are
written at the top level, as their command-line flags are (``method: esd``, ``--method esd``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, Literal

import tyro
import yaml

from ..errors import UserError
from ..files import read_text_file
from .generate import GenerateConfig


def _is_flat(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("flat"))


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        plain = {}
        for f in dataclasses.fields(value):
            item = _to_plain(getattr(value, f.name))
            if _is_flat(f):
                plain.update(item)
            else:
                plain[f.name] = item
        return plain
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_to_plain(v) for v in value]
    return value


def config_to_dict(config: GenerateConfig) -> dict:
    """Plain nested dict (YAML-safe) of a config."""
    return _to_plain(config)


LEARNED_PSI_SETTINGS = (
    "lora_rank",
    "lora_alpha",
    "target_modules",
    "lr",
    "betas",
    "weight_decay",
    "p_null_camera",
    "train_steps_per_iter",
    "timestep_window",
    "loss_weighting",
    "shared_unet",
    "base_model",
)
"""``--psi.*`` fields that only a learned psi reads (the particle estimator reads ``bank_size`` and
``bank_refresh_every``)."""


def settings_of(plain: dict) -> dict:
    """What makes two runs the same run: a plain config (``config_to_dict``) but where it is written, on which
    device, and the options that only steer one invocation. A run without a learned psi (SDS, or the particle
    estimator) ignores how a learned psi is built and trained (``LEARNED_PSI_SETTINGS``), so those settings do not
    tell two such runs apart (runs made before one existed, or under another default, are still the same run)."""
    steering = ("out", "device", "resume", "overwrite", "config", "viewer", "viewer_port")
    settings = {k: v for k, v in plain.items() if k not in steering}
    psi = settings.get("psi")
    if isinstance(psi, dict) and (settings.get("method") == "sds" or psi.get("estimator") == "particle"):
        settings["psi"] = {k: v for k, v in psi.items() if k not in LEARNED_PSI_SETTINGS}
    return settings


def run_settings(config: GenerateConfig) -> dict:
    return settings_of(config_to_dict(config))


_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxlist, _SHOWN.maxdict, _SHOWN.maxstring, _SHOWN.maxother = 2, 4, 4, 80, 80


def shown_value(value: Any) -> str:
    """A value in an error message: its repr, cut short (a YAML value may be nested deep, or share one huge list
    many times over through anchors)."""
    text = _SHOWN.repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _checked(value: Any, annotation: Any, where: str) -> Any:
    """``value`` from YAML as the field's declared type, or one UserError naming the setting and what it takes."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        if value not in args or isinstance(value, bool) != isinstance(args[0], bool):
            raise UserError(f"{where}: {shown_value(value)} is not one of {', '.join(repr(a) for a in args)}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _checked(value, option, where)
            except UserError as exc:
                errors.append(str(exc))
        raise errors[-1] if len(errors) == 1 else UserError(f"{where}: {shown_value(value)} is not a valid value")
    if origin is tyro.conf.Positional or (origin is typing.Annotated):
        return _checked(value, args[0], where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {shown_value(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_checked(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise UserError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_checked(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if annotation is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where}: expected true or false, got {shown_value(value)}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where}: expected a whole number, got {shown_value(value)}")
        return value
    if annotation is float:
        if isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as text
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where}: expected a number, got {shown_value(value)}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise UserError(f"{where}: expected text, got {shown_value(value)}")
        return value
    if annotation is Path:
        if not isinstance(value, str):
            raise UserError(f"{where}: expected a path, got {shown_value(value)}")
        return Path(value)
    if dataclasses.is_dataclass(annotation):
        return _from_plain(annotation, value, where)
    raise TypeError(f"{where}: no YAML check for the type {annotation!r}")  # a field type this reader must learn


def _from_plain(cls, data: dict, where: str):
    """A config dataclass from a YAML mapping: unknown keys and wrong types are one ``UserError`` each."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls) if not _is_flat(f)}
    kwargs, known = {}, set(fields)
    for f in dataclasses.fields(cls):
        if _is_flat(f):  # its settings sit in this same mapping
            nested = (
                typing.get_args(hints[f.name])[0]
                if typing.get_origin(hints[f.name]) is typing.Annotated
                else hints[f.name]
            )
            names = {g.name for g in dataclasses.fields(nested)}
            known |= names
            kwargs[f.name] = _from_plain(nested, {k: v for k, v in data.items() if k in names}, where)
    unknown = sorted(set(map(str, data)) - known)
    if unknown:
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise UserError(f"{where}: unknown setting(s) {', '.join(shown_value(k)[1:-1] for k in unknown[:5])}{more}")
    kwargs.update(
        {name: _checked(value, hints[name], f"{where}.{name}") for name, value in data.items() if name in fields}
    )
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{where}: {exc}") from None


def config_from_dict(data: dict, where: str = "config") -> GenerateConfig:
    return _from_plain(GenerateConfig, data, where)


MAX_NESTING = 32
"""Deepest nesting of lists and mappings a config or job file may have (a preset needs 3, a job file 4)."""


def parse_text(text: str, syntax: Literal["yaml", "json"], label: str) -> Any:
    """YAML or JSON text -> plain data, or one ``UserError`` starting with ``label`` (which file): invalid, or nested
    deeper than ``MAX_NESTING`` (the parsers recurse: far deeper text would end in a RecursionError)."""
    try:
        data = json.loads(text) if syntax == "json" else yaml.safe_load(text)
    except RecursionError:
        raise UserError(f"{label} is nested too deeply (more than {MAX_NESTING} levels of lists or mappings)") from None
    except (ValueError, yaml.YAMLError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"{label} is not valid {syntax.upper()}: {first}") from None
    check_nesting(data, label)
    return data


def check_nesting(data: Any, label: str, limit: int = MAX_NESTING) -> None:
    """One ``UserError`` when ``data`` nests lists / mappings more than ``limit`` deep, counted along the longest
    path (YAML anchors can share a node, or make it contain itself: a cycle is too deep too). Iterative: a depth
    the interpreter could not recurse into is reported, not hit."""
    deepest: dict[int, int] = {}
    stack = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, (dict, list, tuple)):
            continue
        if depth > limit:
            raise UserError(f"{label} is nested too deeply (more than {limit} levels of lists or mappings)")
        if deepest.get(id(node), 0) >= depth:
            continue  # a shared node already seen at least this deep
        deepest[id(node)] = depth
        children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children)


def load_yaml_config(path: Path, what: str = "config") -> GenerateConfig:
    """Read a preset or a run's saved config.yaml (``what`` names it in errors)."""
    data = parse_text(read_text_file(path, what), "yaml", f"{what} {path}")
    return config_from_dict(data or {}, where=str(path))


def dump_yaml_config(config: GenerateConfig) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)
