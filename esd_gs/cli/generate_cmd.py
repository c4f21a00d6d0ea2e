"""``esd-gs generate "prompt"``: the main command. Picks the run directory (new, resumed or replaced) and runs the
``Trainer`` in it; the directory's layout and rules live in ``training/run_dir.py``."""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path

from ..configs.generate import SYNTHETIC_PRIORS, GenerateConfig, synthetic_defaults
from ..configs.presets import load_yaml_config
from ..errors import UserError
from ..pipeline.generate import default_run_dir, generate


def generate_defaults(argv: list[str]) -> GenerateConfig:
    """The defaults that generate's flags override: the ``--config`` preset if one is named, else the synthetic
    prior's defaults with ``--prior synthetic``, else ``GenerateConfig()``. (Only these two options are read here,
    by argparse; tyro then parses the whole command line against the chosen defaults.)"""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--prior")
    try:
        known, _ = parser.parse_known_args(argv)
    except argparse.ArgumentError:  # e.g. --config without a value: tyro reports it, with the usage
        return GenerateConfig()
    if known.config is not None:
        if not os.path.lexists(known.config):
            raise UserError(
                f"config preset {known.config} does not exist (presets live in configs/, e.g. configs/preview.yaml)"
            )
        # a folder, a FIFO, a device or an unreadable file: refused by the reader, in its own words
        return replace(load_yaml_config(known.config, "config preset"), config=known.config)
    return synthetic_defaults(known.prior) if known.prior in SYNTHETIC_PRIORS else GenerateConfig()


def run_generate(config: GenerateConfig) -> Path:
    """``esd-gs generate``: one run (``pipeline.generate``)."""
    return generate(config)


__all__ = ["default_run_dir", "generate_defaults", "run_generate"]
