"""YAML files of ``GenerateConfig`` values: a run's saved config.yaml, and a user's own preset (``--config``).

A file names only what it changes; every value is checked against its field's declared type (one ``UserError``
naming the setting), then by the component's own checks. Nested configs marked ``flat`` (the update rule) are
written at the top level, as their command-line flags are (``method: esd``, ``--method esd``). The prior and the
estimator are mappings whose ``name`` says which one (``prior: {name: sd, model: sd2.1-base}``,
``psi: {name: particle, bank_size: 32}``).

Files written before the prior and the estimator had configs of their own (esd-gs 0.1: ``prior: sd`` with ``model``
and ``precision`` at the top, ``synthetic:`` and ``synthetic_unet:`` sections, ``psi: {estimator: learned, ...}``)
still load: ``upgrade_layout`` rewrites them into this layout first, with the same meaning. So do files with
``densify.grad_threshold`` (the absolute growth threshold that the relative ``densify.grow_ratio`` replaced): a null
one (the default rule) is dropped, a number is refused in one line (``upgrade_densify``).
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
from ..estimators import ESTIMATORS, EstimatorConfig
from ..files import read_text_file
from ..initial import InitConfig
from ..priors import PRIORS, PriorConfig
from ..training.densify import DensifyConfig
from .generate import GenerateConfig

NAMED_CONFIGS = (PriorConfig, EstimatorConfig, InitConfig)
"""The configs a union chooses by name: the prior, psi and the start (``name:`` under ``prior:``, ``psi:``,
``init:``)."""


def _is_flat(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("flat"))


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        plain = {"name": value.name} if isinstance(value, NAMED_CONFIGS) else {}
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


def settings_of(plain: dict) -> dict:
    """What makes two runs the same run: a plain config (``config_to_dict``) but where it is written, on which
    device, whether compiled (``--compile``: the same updates to float rounding), which preset it started from, and the
    options that only steer one invocation. An SDS run has no psi, so its psi settings do not tell two SDS runs
    apart."""
    steering = ("out", "device", "compile", "resume", "overwrite", "config", "preset", "viewer", "viewer_port")
    settings = {k: v for k, v in plain.items() if k not in steering}
    if settings.get("method") == "sds":
        settings.pop("psi", None)
    return settings


def run_settings(config: GenerateConfig) -> dict:
    return settings_of(config_to_dict(with_synthetic_object(config)))


def with_synthetic_object(config: GenerateConfig, name: str | None = None) -> GenerateConfig:
    """``config`` with its synthetic prior's built-in object written out (``synthetic.with_object``: the one the
    prompt names; ``name``: that one instead), for a synthetic or synthetic-unet prior without reference files; any
    other config as it is. A run records it, and two configs compare with it (``run_settings``)."""
    from ..priors import SyntheticPriorConfig, SyntheticUNetConfig
    from ..priors.synthetic import with_object

    if isinstance(config.prior, SyntheticUNetConfig):
        images = with_object(config.prior.images, config.prompt, name)
        return dataclasses.replace(config, prior=dataclasses.replace(config.prior, images=images))
    if isinstance(config.prior, SyntheticPriorConfig):
        return dataclasses.replace(config, prior=with_object(config.prior, config.prompt, name))
    return config


def load_run_config(path: Path) -> GenerateConfig:
    """A run's saved config.yaml (``--resume``, ``evaluate``, a batch's finished job). A synthetic run saved before
    the synthetic prior's objects had names records none, and it showed the head whatever its prompt said: so it is
    read as the head, not as the object its prompt would name today."""
    return with_synthetic_object(load_yaml_config(path), name="head")


_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxlist, _SHOWN.maxdict, _SHOWN.maxstring, _SHOWN.maxother = 2, 4, 4, 80, 80


def shown_value(value: Any) -> str:
    """A value in an error message: its repr, cut short (a YAML value may be nested deep, or share one huge list
    many times over through anchors)."""
    text = _SHOWN.repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _checked(value: Any, annotation: Any, where: str, base: Any = None) -> Any:
    """``value`` from YAML as the field's declared type, or one UserError naming the setting and what it takes. A
    nested config's missing settings come from ``base`` (the value it replaces), else from its defaults."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        if value not in args or isinstance(value, bool) != isinstance(args[0], bool):
            raise UserError(f"{where}: {shown_value(value)} is not one of {', '.join(repr(a) for a in args)}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        chosen = _named_option(value, options, where, base)
        if chosen is not None:
            return chosen
        errors = []
        for option in options:
            try:
                return _checked(value, option, where, base)
            except UserError as exc:
                errors.append(str(exc))
        raise errors[-1] if len(errors) == 1 else UserError(f"{where}: {shown_value(value)} is not a valid value")
    if origin is tyro.conf.Positional or (origin is typing.Annotated):
        return _checked(value, args[0], where, base)
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
        return _from_plain(annotation, value, where, base if isinstance(base, annotation) else None)
    raise TypeError(f"{where}: no YAML check for the type {annotation!r}")  # a field type this reader must learn


def _named_option(value: Any, options: list, where: str, base: Any = None) -> Any:
    """A union of named configs (the prior, psi, the start): the option whose ``name`` the mapping gives (default:
    ``base``'s, else the first), read from the rest of it (over ``base`` when it is the same option); a name alone
    (``init: shap-e``) is that option with its defaults. None when ``options`` are not named configs."""
    classes = [typing.get_args(o)[0] if typing.get_origin(o) is typing.Annotated else o for o in options]
    if not all(isinstance(c, type) and issubclass(c, NAMED_CONFIGS) for c in classes):
        return None
    names = {c.name: c for c in classes}
    if isinstance(value, str) and value in names:
        value = {"name": value}
    if not isinstance(value, dict):
        raise UserError(f"{where}: expected a mapping with a name ({', '.join(names)}), got {shown_value(value)}")
    name = value.get("name", base.name if base is not None else classes[0].name)
    if name not in names:
        raise UserError(f"{where}.name: {shown_value(name)} is not one of {', '.join(repr(n) for n in names)}")
    same = base if base is not None and base.name == name else None
    return _from_plain(names[name], value, where, same)  # which checks and drops the name


def _from_plain(cls, data: dict, where: str, base: Any = None):
    """A config dataclass from a YAML mapping: unknown keys and wrong types are one ``UserError`` each. Settings the
    mapping does not give come from ``base`` (an instance of ``cls``) when there is one, else from the defaults."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping, got {type(data).__name__}")
    if issubclass(cls, NAMED_CONFIGS) and "name" in data:  # a named config written on its own
        if data["name"] != cls.name:
            raise UserError(f"{where}.name: expected {cls.name!r}, got {shown_value(data['name'])}")
        data = {k: v for k, v in data.items() if k != "name"}
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
            nested_base = getattr(base, f.name) if base is not None else None
            kwargs[f.name] = _from_plain(nested, {k: v for k, v in data.items() if k in names}, where, nested_base)
    unknown = sorted(set(map(str, data)) - known)
    if unknown:
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise UserError(f"{where}: unknown setting(s) {', '.join(shown_value(k)[1:-1] for k in unknown[:5])}{more}")
    for name in fields:
        if name in data:
            kwargs[name] = _checked(data[name], hints[name], f"{where}.{name}", getattr(base, name, None))
        elif base is not None:
            kwargs[name] = getattr(base, name)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{where}: {exc}") from None


OLD_SD_SETTINGS = ("model", "precision", "resize_to_native", "encoder", "negative_prompt", "view_dependent_prompt")
"""Top-level settings of esd-gs 0.1 files that are now Stable Diffusion's own (under ``prior:``)."""
OLD_PSI_DEFAULTS = {"lr": 1e-4, "loss_weighting": "prediction"}
"""What 0.1's one psi config meant where a file did not say (its defaults for every estimator; the residual psi's
own defaults differ now), so that a 0.1 mapping keeps its meaning."""


def upgrade_densify(data: dict, where: str = "config") -> dict:
    """Before issue 31 ``densify.grad_threshold`` was an absolute threshold on the screen-space gradient (null: by
    method, 0.1 for VSD/ESD and 1.0 for SDS); growth is now relative to the run's own gradients
    (``densify.grow_ratio``, a multiple of their median). A null threshold meant the default rule and is dropped, as
    is a number in a mapping that turns densification off (it had no effect). Any other number has no equivalent
    ratio (that depends on the model's gradients): one ``UserError`` saying what to do."""
    densify = data.get("densify")
    if not isinstance(densify, dict) or "grad_threshold" not in densify:
        return data
    value = densify["grad_threshold"]
    if value is not None and densify.get("enabled") is not False:
        raise UserError(
            f"{where}: densify.grad_threshold {shown_value(value)} is an absolute gradient threshold, which esd-gs no "
            "longer has: delete it (growth is now densify.grow_ratio, a multiple of the run's median gradient, "
            f"default {DensifyConfig.grow_ratio:g})"
        )
    return {**data, "densify": {k: v for k, v in densify.items() if k != "grad_threshold"}}


def upgrade_layout(data: Any, where: str = "config") -> Any:
    """A config mapping in esd-gs 0.1's layout -> the same settings in this one (anything else is returned as it
    is, for ``_from_plain`` to check); an old ``densify.grad_threshold`` goes through ``upgrade_densify`` (its
    ``UserError`` starts with ``where``). 0.1 had ``prior: NAME`` (default sd) with Stable Diffusion's settings at the
    top, the synthetic priors' settings in ``synthetic:`` / ``synthetic_unet:``, and one ``psi:`` mapping whose
    ``estimator`` was ``learned`` (the prior's learned psi) or ``particle``; settings the chosen part does not read
    were ignored then and are dropped here."""
    if not isinstance(data, dict):
        return data
    data = upgrade_densify(data, where)
    old_keys = {"synthetic", "synthetic_unet", *OLD_SD_SETTINGS}
    old_prior = not isinstance(data.get("prior"), dict) and (isinstance(data.get("prior"), str) or old_keys & set(data))
    psi = data.get("psi")
    old_psi = isinstance(psi, dict) and "estimator" in psi and "name" not in psi
    if not old_prior and not old_psi:
        return data
    data = dict(data)
    if old_prior:
        sd = {k: data.pop(k) for k in OLD_SD_SETTINGS if k in data}
        synthetic, fit = data.pop("synthetic", None), data.pop("synthetic_unet", None)
        # A file without ``prior`` (a 0.1 preset used with --prior on the command line) names it by its sections.
        name = data.pop(
            "prior", "synthetic-unet" if fit is not None else "synthetic" if synthetic is not None else "sd"
        )
        synthetic = synthetic if isinstance(synthetic, dict) else {}
        fit = fit if isinstance(fit, dict) else {}
        if name == "sd":
            data["prior"] = {"name": "sd", **sd}
        elif name == "synthetic":
            data["prior"] = {"name": "synthetic", **synthetic}
        elif name == "synthetic-unet":
            data["prior"] = {"name": "synthetic-unet", "images": synthetic, **fit}
        else:
            data["prior"] = {"name": name}  # refused by the reader, naming the priors it knows
    if old_psi:
        prior = data.get("prior")
        prior_class = PRIORS.get(prior.get("name", "sd")) if isinstance(prior, dict) else None
        estimator = psi.get("estimator", "learned")
        if estimator == "learned" and prior_class is not None:
            estimator = prior_class.learned_estimator
        known = ESTIMATORS.get(estimator)
        kept = {f.name for f in dataclasses.fields(known)} if known is not None else set()
        settings = {**OLD_PSI_DEFAULTS, **psi}
        data["psi"] = {"name": estimator, **{k: v for k, v in settings.items() if k in kept}}
        diagnose = data.get("diagnose")
        if estimator != "particle" and "bank_size" in psi and (diagnose is None or isinstance(diagnose, dict)):
            # 0.1's bank size also sized the particle baseline a learned psi's diagnostic compares with
            data["diagnose"] = {**(diagnose or {}), "baseline_bank": psi["bank_size"]}
    return data


def config_from_dict(data: dict, where: str = "config", base: GenerateConfig | None = None) -> GenerateConfig:
    """A ``GenerateConfig`` from a plain mapping (either layout), over ``base`` (default: the defaults)."""
    return _from_plain(GenerateConfig, upgrade_layout(data, where), where, base)


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


def load_yaml_config(path: Path, what: str = "config", base: GenerateConfig | None = None) -> GenerateConfig:
    """Read a YAML preset or a run's saved config.yaml (``what`` names it in errors); settings it does not give come
    from ``base`` (default: ``GenerateConfig``'s defaults)."""
    data = parse_text(read_text_file(path, what), "yaml", f"{what} {path}")
    return config_from_dict(data or {}, where=str(path), base=base)


def dump_yaml_config(config: GenerateConfig) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)


def run_config_text(config: GenerateConfig) -> str:
    """A run's config.yaml: its resolved config without the options that only steer one invocation (what
    ``--resume`` reads back)."""
    saved = dataclasses.replace(
        with_synthetic_object(config),
        resume=None,
        overwrite=False,
        config=None,
        out=None,
        viewer=False,
        viewer_port=GenerateConfig.viewer_port,
    )
    return dump_yaml_config(saved)
