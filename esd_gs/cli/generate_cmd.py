"""``esd-gs generate "prompt"``: the main command. Picks the run directory (new, resumed or replaced) and runs the
``Trainer`` in it; the directory's layout and rules live in ``training/run_dir.py``.

Defaults come from a named preset (``--preset``, ``configs.presets.PRESETS``) and, over it, a YAML file of settings
(``--config``); flags given on the command line override both. tyro parses the command line against the plain
defaults to learn which preset and file it names, then against their defaults (``generate_defaults``), so that the
flags override them and ``--help`` shows them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ..configs.generate import GenerateConfig
from ..configs.presets import preset
from ..configs.yaml_io import load_yaml_config
from ..errors import UserError
from ..estimators import ESTIMATORS
from ..initial import INITS
from ..pipeline.generate import default_run_dir, generate
from ..priors import PRIORS

OLD_SPELLINGS = {
    "--prior": "--preset synthetic (or synthetic-unet) for the synthetic priors' defaults; prior:NAME picks a prior",
    "--model": "--prior.model",
    "--precision": "--prior.precision",
    "--resize-to-native": "--prior.resize-to-native",
    "--no-resize-to-native": "--prior.no-resize-to-native",
    "--encoder": "--prior.encoder",
    "--negative-prompt": "--prior.negative-prompt",
    "--view-dependent-prompt": "--prior.view-dependent-prompt",
    "--no-view-dependent-prompt": "--prior.no-view-dependent-prompt",
    "--synthetic.": "--prior.* (with --preset synthetic)",
    "--synthetic-unet.": "--prior.* (with --preset synthetic-unet; the images' settings are --prior.images.*)",
    "--psi.estimator": "psi:lora, psi:residual or psi:particle",
}
"""Options of esd-gs 0.1 that are spelled differently now, and their new spelling (``old_spelling``)."""


OLD_PRESET_SPELLING = {"--prior": "--preset synthetic (or synthetic-unet; the default esd uses Stable Diffusion)"}
"""``esd-gs batch`` and ``esd-gs doctor`` of esd-gs 0.1 chose the synthetic defaults with ``--prior``."""


def old_spelling(command: str, argv: list[str]) -> str | None:
    """One line for the first option of ``argv`` that esd-gs 0.1's ``command`` spelled this way (called when tyro
    refuses the command line), or None."""
    table = OLD_SPELLINGS if command == "generate" else OLD_PRESET_SPELLING if command in ("batch", "doctor") else {}
    for arg in argv:
        name = arg.split("=", 1)[0]
        for old, new in table.items():
            if name == old or (old.endswith(".") and name.startswith(old)):
                return f"{name} is no longer an option of esd-gs {command}: use {new}"
    return None


def part_option_hint(argv: list[str]) -> str | None:
    """One line for the first ``--prior.X`` / ``--psi.X`` / ``--init.X`` of ``argv`` that only another prior, estimator
    or start has (called when tyro refuses the command line): the part to name first. None when there is none."""
    for arg in argv:
        part, _, option = arg.split("=", 1)[0].removeprefix("--").partition(".")
        if part not in ("prior", "psi", "init") or not option or option.startswith("no-"):
            continue
        field = option.split(".")[0].replace("-", "_")
        table = {"prior": PRIORS, "psi": ESTIMATORS, "init": INITS}[part]
        owners = [name for name, config in table.items() if field in {f.name for f in dataclasses.fields(config)}]
        named = [a.split(":", 1)[1] for a in argv if a.startswith(f"{part}:")]
        if owners and not set(owners) & set(named):
            return f"{arg.split('=', 1)[0]} belongs to {' or '.join(f'{part}:{o}' for o in owners)}: name it first"
    return None


def init_short_form(argv: list[str]) -> list[str]:
    """``argv`` with the short form of the start, ``--init NAME`` (``--init ply PATH``, ``--init shap-e``, ``--init
    ball``, or ``--init=NAME``), written as tyro takes it: ``init:NAME`` (``init:ply --init.path PATH``)."""
    line: list[str] = []
    rest = list(argv)
    while rest:
        arg = rest.pop(0)
        if arg != "--init" and not arg.startswith("--init="):
            line.append(arg)
            continue
        name = arg.partition("=")[2] if "=" in arg else (rest.pop(0) if rest else "")
        if name not in INITS:
            shown = f" {name}" if name else ""
            raise UserError(f"--init{shown}: use --init ball (the default), --init ply PATH or --init shap-e")
        line.append(f"init:{name}")
        if name == "ply":
            if not rest or rest[0].startswith("-"):
                raise UserError("--init ply needs the file to start from: --init ply PATH")
            line += ["--init.path", rest.pop(0)]
    return line


def name_default_parts(argv: list[str], defaults: GenerateConfig) -> list[str]:
    """``argv`` with ``prior:NAME`` / ``psi:NAME`` / ``init:NAME`` (the defaults' own) put before the first negated
    switch of that part (``--psi.no-shared-unet``) when the line names no such part: tyro 1.0 takes a default part's
    options, but not the ``--X.no-*`` form of its switches, unless the part is named; a line with ``--init.*`` options
    gets ``init:NAME`` first, after the command's name."""
    line = list(argv)
    if any(arg.startswith("--init.") for arg in line) and not any(arg.startswith("init:") for arg in line):
        # tyro 1.0 takes a default start's options unnamed, but not when an option of the command's own is given both
        # before and after them: named first, the start is chosen before anything else is parsed
        line.insert(1, f"init:{defaults.init.name}")
    for part in ("prior", "psi"):
        if any(arg.startswith(f"{part}:") for arg in line):
            continue
        first = next((i for i, arg in enumerate(line) if arg.startswith(f"--{part}.no-")), None)
        if first is not None:
            line.insert(first, f"{part}:{getattr(defaults, part).name}")
    return line


def defaults_for(name: str, config: Path | None, psi: str | None = None) -> GenerateConfig:
    """The preset ``name`` (with the estimator ``psi``: the preset's own settings for it, ``Preset.with_psi``) and
    the YAML file ``config`` over it."""
    chosen = preset(name)
    base = chosen.config if psi is None else chosen.with_psi(psi)
    if config is None:
        return base
    if not os.path.lexists(config):
        raise UserError(f"config file {config} does not exist (an example: configs/preview.yaml)")
    # a folder, a FIFO, a device or an unreadable file: refused by the reader, in its own words
    return replace(load_yaml_config(config, "config file", base=base), config=config)


def generate_defaults(parse: Callable[[GenerateConfig | None], GenerateConfig]) -> GenerateConfig:
    """The defaults generate's flags override. ``parse(defaults)`` parses the command line (without --help) against
    ``defaults`` (None: the plain ones): once to learn the preset and the file, once against their defaults to learn
    whether it picks another estimator than theirs (``psi:NAME``), whose defaults the preset may have too."""
    first = parse(None)
    defaults = defaults_for(first.preset, first.config)
    second = first if defaults == GenerateConfig() else parse(defaults)  # the plain defaults: parsed already
    if second.psi.name != defaults.psi.name:
        defaults = defaults_for(first.preset, first.config, psi=second.psi.name)
    return defaults


def run_generate(config: GenerateConfig) -> Path:
    """``esd-gs generate``: one run (``pipeline.generate``)."""
    return generate(config)


__all__ = [
    "OLD_SPELLINGS",
    "default_run_dir",
    "defaults_for",
    "generate_defaults",
    "init_short_form",
    "name_default_parts",
    "part_option_hint",
    "old_spelling",
    "run_generate",
]
