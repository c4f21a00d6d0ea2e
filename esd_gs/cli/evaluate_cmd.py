"""``esd-gs evaluate RUN_DIR|SCENE.ply...``: parses the options and runs ``evaluation/evaluate.py`` on each target."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from ..environment import output_folder
from ..errors import UserError
from ..evaluation.evaluate import (
    EVAL_FILE,
    EvalConfig,
    EvalTarget,
    check_dependencies,
    evaluate,
    preload,
    resolve_target,
    write_evaluation,
)
from ..evaluation.models import EvalModels
from ..evaluation.report import summary_lines
from ..progress import make_progress
from ..render import UserBackend, resolve_backend
from .common import pick_device
from .help import PATHS


@dataclass
class EvaluateArgs:
    """Score runs or 3DGS .ply scenes over turntable views.

    Metrics: CLIP similarity, FID, IQ / IV (paper eq. 10) and a Janus measure.

    Writes eval.json and eval.png; synthetic-prior runs get a ground truth too.

    For example:
      esd-gs evaluate runs/a-plush-dragon-toy-esd
      esd-gs evaluate scene.ply --prompt "a head"
    """

    targets: Annotated[tuple[Path, ...], tyro.conf.Positional, PATHS]
    """Run directories (their scene.ply and config.yaml) and/or 3DGS .ply files."""
    prompt: str | None = None
    """What the scenes show: needed for a .ply; when given, it replaces every run's own prompt too."""
    # With several targets, --out gets one sub-folder per target.
    out: Path | None = None
    """Output directory (one sub-folder per target); None = each run directory, or <stem>-eval/ beside a .ply."""
    eval: Annotated[EvalConfig, tyro.conf.OmitArgPrefixes] = field(default_factory=EvalConfig)
    device: str = "auto"
    """auto (CUDA if available), cpu or cuda."""
    backend: UserBackend = "auto"
    """Renderer: auto, gsplat or torch."""
    precision: str = "auto"
    """Stable Diffusion precision for the FID samples: auto (fp16 on CUDA, fp32 on CPU), fp32, fp16, bf16."""
    overwrite: bool = False
    """Replace an eval.json already in the output directory."""


def targets_of(paths: tuple[Path, ...], prompt: str | None, out: Path | None) -> list[EvalTarget]:
    """Resolve every path (all checked before any work); several targets under --out get one folder each."""
    if not paths:
        raise UserError("name at least one run directory or .ply file to evaluate")
    if out is not None and len(paths) == 1:
        return [resolve_target(paths[0], prompt, out)]
    targets = [resolve_target(path, prompt) for path in paths]
    if out is not None:
        seen: dict[str, int] = {}
        for target in targets:
            seen[target.name] = seen.get(target.name, 0) + 1
            suffix = "" if seen[target.name] == 1 else f"-{seen[target.name]}"
            target.out = out / f"{target.name}{suffix}"
    return targets


def run_evaluate(args: EvaluateArgs) -> list[dict]:
    targets = targets_of(args.targets, args.prompt, args.out)
    check_dependencies(args.eval)
    for target in targets:
        if (target.out / EVAL_FILE).exists() and not args.overwrite:
            raise UserError(f"{target.out / EVAL_FILE} exists: pass --overwrite to replace it")
    device = pick_device(args.device)
    backend = resolve_backend(args.backend, device)
    with contextlib.ExitStack() as folders:  # a failure (a model that does not load) leaves no empty folder
        for target in targets:
            folders.enter_context(output_folder(target.out))
        models = EvalModels(device, args.precision)
        preload(targets, args.eval, models)
        results = []
        with make_progress() as progress:
            for target in targets:
                result, views = evaluate(target, args.eval, models, backend, progress)
                written = write_evaluation(target, result, views)
                progress.console.print(f"[bold]{target.name}[/bold]: " + "; ".join(summary_lines(result)))
                progress.console.print(f"wrote {', '.join(str(p) for p in written)}")
                results.append(result)
    return results
