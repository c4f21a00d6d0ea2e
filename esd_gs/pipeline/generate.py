"""One generate run in its run directory: new, resumed (``resume``) or replacing an earlier one (``overwrite``),
by the rules of ``training/run_dir.py``; the ``Trainer`` with its callbacks (``build.build_trainer``) does the work.
Used by ``esd-gs generate`` and by ``esd-gs batch``'s workers (which pass the prior they keep loaded)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from dataclasses import replace
from pathlib import Path

import torch

from ..configs.generate import GenerateConfig
from ..configs.yaml_io import load_run_config, run_config_text
from ..environment import check_writable_dir, ensure_writable_dir, pick_device
from ..errors import OutOfMemory, UserError, out_of_memory
from ..estimators import LoRAPsiConfig
from ..priors import StableDiffusionConfig
from ..progress import console
from ..training.checkpoint import check_checkpoint, has_checkpoint, load_checkpoint
from ..training.run_dir import REPLACED, RunDir, signals_held
from .build import build_trainer


def default_run_dir(config: GenerateConfig) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", config.prompt.lower()).strip("-")[:48] or "run"
    return Path("runs") / f"{slug}-{config.distill.method}"


def refuse_a_live_run(files: RunDir) -> None:
    """A run directory that a live process is running (its run.json names it) is not touched by another."""
    pid = files.running_process()
    if pid is not None and pid != os.getpid():
        raise UserError(f"{files.path} is being run now by process {pid}: wait for it or stop it (Ctrl-C) first")


@contextlib.contextmanager
def checkpoint_errors(files: RunDir):
    """A parseable but wrong checkpoint as one ``UserError`` line: missing or mis-shaped tensors, meta.json without
    its fields, incomplete optimiser state, a foreign model."""
    try:
        yield
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as exc:
        detail = (str(exc).strip().strip("'\"").splitlines() or [type(exc).__name__])[0][:160]
        raise UserError(
            f"the checkpoint in {files.checkpoint} does not fit this run ({type(exc).__name__}: {detail}); "
            "start again with --overwrite"
        ) from None


@contextlib.contextmanager
def announced_once_ready(config: GenerateConfig, prior):
    """Hold back what loading Stable Diffusion prints (the ``phi: Stable Diffusion from ...`` line, psi's base, the
    renderer's notice) until the run is ready to start, so that an error found on the way (psi's LoRA targets, a
    checkpoint that does not fit psi) is the only line on stderr. Only for Stable Diffusion, whose loading draws no
    progress bars (the fitted synthetic UNet's training does)."""
    if prior is not None or not isinstance(config.prior, StableDiffusionConfig):
        yield
        return
    with console.capture() as held:
        yield  # an error leaves the block here: what was held is dropped
    console.file.write(held.get())
    console.file.flush()


@contextlib.contextmanager
def out_of_memory_in_one_line(config: GenerateConfig, files: RunDir, running: bool = False):
    """A GPU out of memory while loading the models, or while ``running`` the run, as one ``OutOfMemory`` line
    (``out_of_memory_message``) instead of torch's traceback."""
    try:
        yield
    except torch.cuda.OutOfMemoryError as error:
        raise OutOfMemory(out_of_memory_message(config, files, error, running)) from None


def out_of_memory_message(config: GenerateConfig, files: RunDir, error: Exception, running: bool) -> str:
    """What was asked for; once ``running``, the settings that set the memory a step needs (and psi's own UNet, a
    second copy of the model) and where the work done so far was kept; while loading, what sets the weights' memory
    (their precision, psi's own UNet) (``Trainer.run`` saves a checkpoint and the
    scene before it raises)."""
    separate_psi = config.distill.needs_psi and isinstance(config.psi, LoRAPsiConfig) and not config.psi.shared_unet
    if running:  # a step's activations: its batch and its render size
        lower = f"lower --batch-size (now {config.batch_size}) or --resolution (now {config.resolution})"
        if separate_psi:
            lower += ", or let psi share phi's UNet (--psi.shared-unet)"
    else:  # loading: the weights themselves, whatever the batch or the size
        precision = getattr(config.prior, "precision", None)
        lower = "free the GPU memory other processes hold"
        if precision == "fp32":
            lower += ", load the model in half precision (--prior.precision fp16)"
        if separate_psi:
            lower += ", let psi share phi's UNet (--psi.shared-unet)"
    message = f"{out_of_memory(error)}: {lower}"
    if running and has_checkpoint(files.checkpoint) and files.scene_ply.is_file():
        message += (
            f"; the run so far is kept in {files.path} (its scene.ply, and a checkpoint that --resume continues where "
            "more memory is free; start again there with --overwrite)"
        )
    return message


def generate(config: GenerateConfig, prior=None, announce=None) -> Path:
    """Run (or resume, or replace) one generate run; ``prior``: an already built phi for it to reuse (``esd-gs
    batch``); ``announce``: where the closing line goes (default: the console)."""
    existing: list[str] = []
    if config.resume is not None:
        files = RunDir(config.resume)
        if not files.config.is_file():
            raise UserError(f"{files.path} is not an esd-gs run directory (no config.yaml)")
        if files.read_status() == "finished":
            raise UserError(f"the run in {files.path} is already finished: its scene is {files.scene_ply}")
        refuse_a_live_run(files)
        # what only steers this invocation comes from the command line (yaml_io.settings_of), the rest from the run
        saved = replace(
            load_run_config(files.config), viewer=config.viewer, viewer_port=config.viewer_port, compile=config.compile
        )
        saved.validate(resuming=True)
        # The checkpoint is read and checked before any model loads: a bad one costs nothing and prints one line.
        checkpoint = load_checkpoint(files.checkpoint)
        with checkpoint_errors(files):
            check_checkpoint(*checkpoint, saved.steps)
        device = pick_device(config.device if config.device != "auto" else saved.device)
        run_config = saved
        with announced_once_ready(saved, prior), out_of_memory_in_one_line(saved, files):
            trainer = build_trainer(saved, files.path, device, prior=prior, resuming=True)
            with checkpoint_errors(files):
                trainer.restore(checkpoint)
        del checkpoint
        console.print(f"resuming {files.path} at step {trainer.step} of {saved.steps}")
    else:
        config.validate()
        files = RunDir(config.out or default_run_dir(config))
        existing = files.existing_outputs()
        if files.replaced.exists() and not config.overwrite:
            raise UserError(
                f"{files.path} keeps a replaced run in {REPLACED}/: pass --overwrite or choose another --out"
            )
        if existing:
            refuse_a_live_run(files)
        if existing and not config.overwrite:
            status = files.read_status()
            if status == "finished" or (status is None and files.scene_ply.name in existing):
                raise UserError(f"{files.path} already holds a finished run: pass --overwrite or choose another --out")
            raise UserError(
                f"{files.path} holds an unfinished run: pass --resume {files.path} to continue it, or --overwrite"
            )
        device = pick_device(config.device)
        check_writable_dir(files.path)  # fails fast, and creates nothing
        run_config = config
        # Loads the models: fail before touching old outputs.
        with announced_once_ready(config, prior), out_of_memory_in_one_line(config, files):
            trainer = build_trainer(config, files.path, device, prior=prior)
        ensure_writable_dir(files.path)  # only once the models have loaded: a failed load leaves no empty folder
    try:
        if config.resume is None:
            if existing:  # --overwrite: the old run is moved aside, and removed only once the new one has finished
                with signals_held():
                    files.set_aside(existing)
            files.write_config(run_config_text(config))
        with out_of_memory_in_one_line(run_config, files, running=True):
            trainer.run()
    except BaseException:
        if files.replaced.is_dir():
            console.print(f"[yellow]the run this one replaces is kept in {files.replaced}[/yellow]")
        raise
    if files.replaced.is_dir():
        shutil.rmtree(files.replaced, ignore_errors=True)
    (announce or console.print)(f"[green]done[/green]: {files.scene_ply} (open it in SuperSplat or any 3DGS viewer)")
    return files.path
