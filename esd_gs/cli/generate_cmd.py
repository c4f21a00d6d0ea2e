"""``esd-gs generate "prompt"``: the main command. Run-directory rules, presets and resume live here."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import shutil
from dataclasses import replace
from pathlib import Path

from ..configs.generate import GenerateConfig, load_yaml_config, synthetic_defaults
from ..errors import UserError
from ..progress import console
from ..trainer import Trainer, write_config
from .common import ensure_writable_dir, pick_device

REPLACED = "replaced-run"
"""Where ``--overwrite`` keeps the previous run until the new one has finished."""
OUTPUTS = ("scene.ply", "scene.splat", "run.json", "config.yaml", "metrics.jsonl", "turntable.mp4", "turntable.gif",
           "contact_sheet.png", "checkpoint", "previews")


def preset_from_argv(argv: list[str]) -> GenerateConfig:
    """The defaults for this invocation: the ``--config`` preset if one is named, else the synthetic prior's
    defaults with ``--prior synthetic``, else GenerateConfig()."""
    for i, arg in enumerate(argv):
        path = None
        if arg == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        if path is not None:
            if not Path(path).is_file():
                raise UserError(f"config preset {path} does not exist (presets live in configs/, e.g. configs/preview.yaml)")
            return replace(load_yaml_config(Path(path)), config=Path(path))
    if any(a == "--prior=synthetic" or (a == "--prior" and argv[i + 1 : i + 2] == ["synthetic"]) for i, a in enumerate(argv)):
        return synthetic_defaults()
    return GenerateConfig()


def default_run_dir(config: GenerateConfig) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", config.prompt.lower()).strip("-")[:48] or "run"
    return Path("runs") / f"{slug}-{config.method}"


def read_status(run_dir: Path) -> str | None:
    path = run_dir / "run.json"
    if not path.is_file():
        return None
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError):
        return "unknown"
    return status.get("status", "unknown") if isinstance(status, dict) else "unknown"


def run_generate(config: GenerateConfig) -> Path:
    if config.resume is not None:
        run_dir = config.resume
        if not (run_dir / "config.yaml").is_file():
            raise UserError(f"{run_dir} is not an esd-gs run directory (no config.yaml)")
        status = read_status(run_dir)
        if status == "finished":
            raise UserError(f"the run in {run_dir} is already finished: its scene is {run_dir / 'scene.ply'}")
        saved = load_yaml_config(run_dir / "config.yaml")
        saved.validate()
        trainer = Trainer(saved, run_dir, pick_device(config.device if config.device != "auto" else saved.device))
        try:
            trainer.restore()
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as exc:
            # parseable but wrong: missing or mis-shaped tensors, meta.json without its fields, a foreign model
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise UserError(f"the checkpoint in {run_dir / 'checkpoint'} does not fit this run ({type(exc).__name__}: "
                            f"{detail}); start again with --overwrite") from None
        console.print(f"resuming {run_dir} at step {trainer.step} of {saved.steps}")
    else:
        config.validate()
        run_dir = config.out or default_run_dir(config)
        existing = [name for name in OUTPUTS if (run_dir / name).exists()]
        if (run_dir / REPLACED).exists() and not config.overwrite:
            raise UserError(f"{run_dir} keeps a replaced run in {REPLACED}/: pass --overwrite or choose another --out")
        if existing and not config.overwrite:
            status = read_status(run_dir)
            if status == "finished" or (status is None and "scene.ply" in existing):
                raise UserError(f"{run_dir} already holds a finished run: pass --overwrite or choose another --out")
            raise UserError(f"{run_dir} holds an unfinished run: pass --resume {run_dir} to continue it, or --overwrite")
        device = pick_device(config.device)
        ensure_writable_dir(run_dir)
        trainer = Trainer(config, run_dir, device)  # loads the models: fail before touching old outputs
    try:
        if config.resume is None:
            if existing:  # --overwrite: the old run is moved aside, and removed only once the new one has finished
                with signals_held():
                    set_aside(run_dir, existing)
            write_config(config, run_dir)
        trainer.run()
    except BaseException:
        if (run_dir / REPLACED).is_dir():
            console.print(f"[yellow]the run this one replaces is kept in {run_dir / REPLACED}[/yellow]")
        raise
    if (run_dir / REPLACED).is_dir():
        shutil.rmtree(run_dir / REPLACED, ignore_errors=True)
    console.print(f"[green]done[/green]: {run_dir / 'scene.ply'} (open it in SuperSplat or any 3DGS viewer)")
    return run_dir


@contextlib.contextmanager
def signals_held():
    """Hold SIGINT / SIGTERM back for the block (a few renames), so that they cannot leave it half done: a signal
    that arrives is recorded and raised again, to the handler it would have met, once the block is over.

    (A Python handler, not ``pthread_sigmask``: torch's worker threads leave the signals unblocked, so the kernel
    would deliver them there and Python would still run the handler in the main thread mid-block.)"""
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if received:
            signal.raise_signal(received[0])


def set_aside(run_dir: Path, existing: list[str]) -> None:
    """Move the outputs of the run being replaced into ``RUN/replaced-run/`` (renames on the same disk: cheap).

    If an earlier --overwrite left a replaced run there (the new run then failed or was interrupted), that older run
    is kept when the current outputs are unfinished, and replaced when they are a finished run."""
    aside = run_dir / REPLACED
    if aside.is_dir():
        if read_status(run_dir) != "finished" or not (run_dir / "scene.ply").is_file():
            for name in existing:  # an unfinished attempt: drop it, keep the finished run already set aside
                target = run_dir / name
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            return
        shutil.rmtree(aside)
    aside.mkdir()
    for name in existing:
        (run_dir / name).rename(aside / name)
