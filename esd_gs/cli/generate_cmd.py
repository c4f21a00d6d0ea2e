"""``esd-gs generate "prompt"``: the main command. Picks the run directory (new, resumed or replaced) and runs the
``Trainer`` in it; the directory's layout and rules live in ``training/run_dir.py``."""

from __future__ import annotations

import argparse
import re
import shutil
from dataclasses import replace
from pathlib import Path

from ..configs.generate import GenerateConfig, synthetic_defaults
from ..configs.presets import load_yaml_config
from ..errors import UserError
from ..progress import console
from ..training.run_dir import REPLACED, RunDir, signals_held
from ..training.trainer import Trainer
from .common import ensure_writable_dir, pick_device


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
        if not known.config.is_file():
            raise UserError(
                f"config preset {known.config} does not exist (presets live in configs/, e.g. configs/preview.yaml)"
            )
        return replace(load_yaml_config(known.config), config=known.config)
    return synthetic_defaults() if known.prior == "synthetic" else GenerateConfig()


def default_run_dir(config: GenerateConfig) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", config.prompt.lower()).strip("-")[:48] or "run"
    return Path("runs") / f"{slug}-{config.distill.method}"


def run_generate(config: GenerateConfig) -> Path:
    existing: list[str] = []
    if config.resume is not None:
        files = RunDir(config.resume)
        if not files.config.is_file():
            raise UserError(f"{files.path} is not an esd-gs run directory (no config.yaml)")
        if files.read_status() == "finished":
            raise UserError(f"the run in {files.path} is already finished: its scene is {files.scene_ply}")
        saved = load_yaml_config(files.config)
        saved.validate()
        trainer = Trainer(saved, files.path, pick_device(config.device if config.device != "auto" else saved.device))
        try:
            trainer.restore()
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as exc:
            # parseable but wrong: missing or mis-shaped tensors, meta.json without its fields, a foreign model
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise UserError(
                f"the checkpoint in {files.checkpoint} does not fit this run ({type(exc).__name__}: "
                f"{detail}); start again with --overwrite"
            ) from None
        console.print(f"resuming {files.path} at step {trainer.step} of {saved.steps}")
    else:
        config.validate()
        files = RunDir(config.out or default_run_dir(config))
        existing = files.existing_outputs()
        if files.replaced.exists() and not config.overwrite:
            raise UserError(
                f"{files.path} keeps a replaced run in {REPLACED}/: pass --overwrite or choose another --out"
            )
        if existing and not config.overwrite:
            status = files.read_status()
            if status == "finished" or (status is None and files.scene_ply.name in existing):
                raise UserError(f"{files.path} already holds a finished run: pass --overwrite or choose another --out")
            raise UserError(
                f"{files.path} holds an unfinished run: pass --resume {files.path} to continue it, or --overwrite"
            )
        device = pick_device(config.device)
        ensure_writable_dir(files.path)
        trainer = Trainer(config, files.path, device)  # loads the models: fail before touching old outputs
    try:
        if config.resume is None:
            if existing:  # --overwrite: the old run is moved aside, and removed only once the new one has finished
                with signals_held():
                    files.set_aside(existing)
            files.write_config(config)
        trainer.run()
    except BaseException:
        if files.replaced.is_dir():
            console.print(f"[yellow]the run this one replaces is kept in {files.replaced}[/yellow]")
        raise
    if files.replaced.is_dir():
        shutil.rmtree(files.replaced, ignore_errors=True)
    console.print(f"[green]done[/green]: {files.scene_ply} (open it in SuperSplat or any 3DGS viewer)")
    return files.path
