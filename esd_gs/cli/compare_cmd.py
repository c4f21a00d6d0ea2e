"""``esd-gs compare RUN_DIR... --out DIR``: a table and a figure of several evaluated runs, side by side."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from ..environment import output_folder
from ..errors import UserError
from ..evaluation.compare import compare
from ..evaluation.evaluate import EvalConfig, check_dependencies, preload, saved_evaluation
from ..evaluation.models import EvalModels
from ..render import UserBackend, resolve_backend
from .common import pick_device
from .evaluate_cmd import targets_of
from .help import PATHS


@dataclass
class CompareArgs:
    """Put runs side by side: a table of their metrics and a figure of their views.

    Writes compare.md, compare.png and compare.json to --out.

    Runs not yet evaluated with these settings are evaluated first.

    For example:
      esd-gs compare runs/sds runs/vsd runs/esd --out runs/compare
      esd-gs compare a.ply b.ply --prompt "a head" --out runs/compare-heads
    """

    runs: Annotated[tuple[Path, ...], tyro.conf.Positional, PATHS]
    """Run directories and/or 3DGS .ply files, in the order of the table."""
    out: Path
    """Directory for compare.md, compare.png and compare.json."""
    prompt: str | None = None
    """What the scenes show: needed for .ply files; when given, it replaces every run's own prompt too."""
    eval: Annotated[EvalConfig, tyro.conf.OmitArgPrefixes] = field(default_factory=EvalConfig)
    device: str = "auto"
    """auto (CUDA if available), cpu or cuda."""
    backend: UserBackend = "auto"
    """Renderer: auto, gsplat or torch."""
    precision: str = "auto"
    """Stable Diffusion precision for the FID samples."""
    overwrite: bool = False
    """Replace an earlier comparison in --out, and eval.json files measured with other settings."""


def run_compare(args: CompareArgs) -> Path:
    if len(args.runs) < 1:
        raise UserError("name at least one run to compare")
    targets = targets_of(args.runs, args.prompt, None)
    check_dependencies(args.eval)
    if (args.out / "compare.md").exists() and not args.overwrite:
        raise UserError(f"{args.out} already holds a comparison: pass --overwrite or choose another --out")
    device = pick_device(args.device)
    backend = resolve_backend(args.backend, device)
    with output_folder(args.out):  # a failure (a model that does not load) leaves no empty folder
        models = EvalModels(device, args.precision)
        to_evaluate = [t for t in targets if saved_evaluation(t, args.eval) is None]
        preload(to_evaluate, args.eval, models)
        return compare(targets, args.eval, models, args.out, backend, args.overwrite)
