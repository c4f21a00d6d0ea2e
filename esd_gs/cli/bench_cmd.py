"""``esd-gs bench janus``: parses the benchmark's options and runs ``bench/janus.py``."""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

from ..bench.janus import RESULTS, BenchRun, bench_base_config, run_janus_benchmark
from ..diffusion import LossWeighting
from ..distillation import METHODS
from ..distillation.timesteps import ScheduleName
from ..environment import output_folder
from ..errors import UserError
from .common import pick_device


@dataclass
class BenchArgs:
    """Measure the Janus problem: SDS vs VSD vs ESD on the offline synthetic prior.

    The prior is made of renders of a known object, so each run has a ground truth.

    For example:
      esd-gs bench janus --seeds 3
      esd-gs bench janus --methods sds,esd --lambdas 0.5,1.0 --timesteps uniform
    """

    which: tyro.conf.Positional[Literal["janus"]]
    """The benchmark to run (janus)."""
    methods: Annotated[
        tuple[str, ...], tyro.conf.arg(help=f"Methods to compare (space- or comma-separated): {', '.join(METHODS)}.")
    ] = METHODS
    lambdas: tuple[str, ...] = ("1.0",)
    """ESD lambda values to run (space- or comma-separated, each in [0, 1]); 1.0 is the synthetic presets'."""
    estimators: tuple[str, ...] = ("learned", "particle")
    """psi estimators for ESD (VSD always uses the learned one): learned, particle."""
    seeds: int = 3
    """Number of seeds (0 .. seeds-1) per configuration."""
    steps: int | None = None
    """Steps per run; None = generate's default for the synthetic prior."""
    reference: Path | None = None
    """Reference 3DGS .ply (-Y up, front +X: the true-back test mirrors its front onto its back); None = the head."""
    p_front: float | None = None
    """Share of frontal images in the prior; None = the default of generate's --prior.p-front."""
    # synthetic-unet's learned psi is the LoRA + camera MLP of Stable Diffusion runs.
    prior: Literal["synthetic", "synthetic-unet"] = "synthetic"
    """phi: the exact prior, or a UNet fitted to its images (cached); every run is scored against the exact one."""
    unet_steps: int | None = None
    """Fit steps of the UNet of --prior synthetic-unet (a new value fits and caches its own); None = generate's."""
    # uniform: t ~ U[t_min, t_max], t_max lowered after a fifth of the run; dreamtime: DreamTime's deterministic,
    # decreasing t (the paper's Fig. 3).
    timesteps: ScheduleName | None = None
    """Timestep schedule: uniform, linear (t_max lowered linearly) or dreamtime; None = the prior's preset's."""
    # generate's: x0 with the exact prior, prediction with the fitted UNet (configs.generate.synthetic_defaults).
    psi_loss_weighting: LossWeighting | None = None
    """omega(t) of the learned psi's loss (as generate's --psi.loss-weighting); None = generate's for the prior."""
    psi_lr: float | None = None
    """AdamW learning rate of the learned psi (as generate's --psi.lr); None = generate's, 1e-3 with either prior."""
    psi_steps: int | None = None
    """Learned psi updates per 3D step (as generate's --psi.train-steps-per-iter); None = the preset's (4; UNet: 1)."""
    psi_t_window: int | None = None
    """Train the learned psi within this many timesteps of each distillation t; None = generate's, t ~ U[0, T)."""
    psi_steps_until: float | None = None
    """Share of each run with --psi-steps updates a step, one after (--psi.train-steps-until); None = the whole run."""
    out: Path = Path("runs/bench-janus")
    """Output directory: results.json, results.md, janus.png and one run directory per configuration and seed."""
    device: str = "auto"
    """auto, cpu or cuda."""
    # Without it, an interrupted benchmark continues: the runs it finished with the same settings are kept.
    overwrite: bool = False
    """Replace the results and runs of an earlier benchmark in --out (else an interrupted one continues)."""
    diagnose: bool = False
    """Measure each run's psi against the exact scores (psi_error.png in each run that has a psi; slower)."""


def _split(values: tuple[str, ...]) -> list[str]:
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def bench_configs(args: BenchArgs) -> list[BenchRun]:
    """The configurations to run, in display order."""
    methods, estimators = _split(args.methods), _split(args.estimators)
    if not methods:
        raise UserError(f"--methods is empty: name at least one of {', '.join(METHODS)}")
    if "esd" in methods and (not estimators or not _split(args.lambdas)):
        raise UserError("ESD needs at least one --estimators value and one --lambdas value")
    for m in methods:
        if m not in METHODS:
            raise UserError(f"unknown method '{m}' in --methods: use {', '.join(METHODS)}")
    for e in estimators:
        if e not in ("learned", "particle"):
            raise UserError(f"unknown estimator '{e}' in --estimators: use learned, particle")
    lambdas = []
    for text in _split(args.lambdas):
        try:
            lam = float(text)
        except ValueError:
            raise UserError(f"--lambdas values must be numbers, got '{text}'") from None
        if not 0.0 <= lam <= 1.0:
            raise UserError(f"--lambdas values must be in [0, 1], got {lam}")
        lambdas.append(lam)
    runs = []
    for method in methods:
        if method == "sds":
            runs.append(BenchRun("sds"))
        elif method == "vsd":
            runs.append(BenchRun("vsd", 0.0, "learned"))
        else:
            runs += [BenchRun("esd", lam, est) for est in estimators for lam in lambdas]
    return runs


def run_bench(args: BenchArgs) -> Path:
    if args.seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {args.seeds}")
    if args.psi_lr is not None and not (math.isfinite(args.psi_lr) and args.psi_lr > 0):
        raise UserError(f"--psi-lr must be a number > 0, got {args.psi_lr:g}")
    if args.psi_steps is not None and args.psi_steps < 1:
        raise UserError(f"--psi-steps must be at least 1, got {args.psi_steps}")
    if args.psi_t_window is not None and args.psi_t_window < 0:
        raise UserError(f"--psi-t-window must be at least 0, got {args.psi_t_window}")
    if args.unet_steps is not None and args.unet_steps < 1:
        raise UserError(f"--unet-steps must be at least 1, got {args.unet_steps}")
    if args.psi_steps_until is not None and not 0.0 < args.psi_steps_until <= 1.0:
        raise UserError(f"--psi-steps-until must be in (0, 1], got {args.psi_steps_until:g}")
    runs = bench_configs(args)
    device = pick_device(args.device)
    if (args.out / RESULTS).exists() and not args.overwrite:
        raise UserError(
            f"{args.out} already holds a benchmark, finished ({RESULTS}): pass --overwrite or choose another --out"
        )
    if args.reference is not None and not args.reference.is_file():
        raise UserError(f"reference {args.reference} does not exist")
    try:
        base = bench_base_config(
            args.steps,
            args.reference,
            args.p_front,
            args.diagnose,
            args.prior,
            args.timesteps,
            args.psi_loss_weighting,
            args.psi_lr,
            args.psi_steps,
            args.psi_t_window,
            args.psi_steps_until,
            args.unet_steps,
        )
    except ValueError as exc:  # a component refused a value (e.g. --p-front outside [0, 1])
        raise UserError(str(exc)) from None
    if args.psi_steps_until is not None and base.psi.train_steps_per_iter == 1:  # bench's spelling of psi's check
        raise UserError(
            f"--psi-steps-until {args.psi_steps_until:g} limits the extra updates of --psi-steps, which is 1 with "
            f"--prior {args.prior}: give --psi-steps a value above 1"
        )
    base.validate()
    with output_folder(args.out):  # a benchmark that fails before any run is saved leaves no empty folder
        if args.overwrite:  # the old results first: a half-done replacement never pairs them with new runs
            for name in (RESULTS, "results.md", "janus.png"):
                (args.out / name).unlink(missing_ok=True)
            shutil.rmtree(args.out / "runs", ignore_errors=True)
        return run_janus_benchmark(runs, args.seeds, base, args.out, device)
