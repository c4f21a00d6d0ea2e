"""A ``Trainer`` built from a run's ``GenerateConfig``: its parts (``build_parts``: the renderer, phi from the prior's
config, the prompt's text, psi from the estimator's config, the update rule) and the callbacks its config asks for
(``default_callbacks``): the one place that turns a run's config into running objects.

Every run gets, in this order (the order they are called in, ``training.callbacks``):

1. the psi diagnostic (``monitors.psi_error.PsiDiagnosticCallback``), with ``--diagnose.enabled`` on a run that has
   a psi (SDS has none to measure): it adds ``psi_error`` to the rows, so it comes before they are written;
2. metrics.jsonl (``MetricsWriter``);
3. previews on schedule (``PreviewWriter``, ``--output.preview-every``);
4. the live view (``monitors.live_view.LiveViewCallback``), with ``--viewer``: after the previews, whose grids it shows
   (imported only then, like viser);
5. checkpoints on schedule (``CheckpointWriter``, ``--output.checkpoint-every``).

On a synthetic prior the trainer also gets ``find_front`` (``evaluation.front``): where the finished scene's own
front is, for its turntable and contact sheet.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..distillation import ScoreDistillation
from ..estimators import CameraLoRAEstimator, ScoreEstimator
from ..evaluation.front import run_front_finder
from ..initial import InitContext
from ..monitors.psi_error import PsiDiagnostic, PsiDiagnosticCallback
from ..priors import UNetPrior
from ..priors.compile import UNetCompiler
from ..priors.compile import unsupported as compile_unsupported
from ..progress import console, stage
from ..render import resolve_backend
from ..scene import GaussianScene
from ..training.callbacks import CheckpointWriter, MetricsWriter, PreviewWriter, TrainingCallback
from ..training.streams import RandomStreams
from ..training.trainer import RunParts, Trainer

if TYPE_CHECKING:
    from ..configs.generate import GenerateConfig
    from ..priors import Prior


def build_parts(
    config: GenerateConfig, device: torch.device, prior: Prior | None = None, resuming: bool = False
) -> RunParts:
    """The parts of a run of ``config`` on ``device`` (``prior``: an already built phi to reuse). The renderer is
    resolved first (a bad choice fails before any model loads), then the initial Gaussians are made (``--init``;
    not for a run ``resuming`` from its checkpoint): a start that runs a model (Shap-E) runs before phi loads (unless
    phi is given, as in a batch) and gives the GPU back before it does. The random streams are made before psi, whose
    initialisation draws from torch's global generator they seed."""
    backend = resolve_backend(config.backend, device)
    initial = None if resuming else initial_gaussians(config, device)
    if prior is None:
        with stage(f"phi: {config.prior.building}"):
            prior = config.prior.build(device, config.run_context)
    with stage("encoding the prompt"):
        text = config.prior.text_embeddings(prior, config.prompt)
    random = RandomStreams(config.seed, device)
    psi = None
    if config.distill.needs_psi:
        with stage(f"psi: building the {config.psi.name} estimator"):
            psi = config.psi.build(prior)
    if config.compile:
        compile_unet_passes(prior, psi)
    distill = ScoreDistillation(prior, text, config.distill, config.timesteps, psi)
    return RunParts(backend, prior, text, psi, distill, random, initial)


def initial_gaussians(config: GenerateConfig, device: torch.device) -> GaussianScene:
    """theta's start (``--init``: ``initial.INITS``), on the CPU, announced by its start-up line."""
    with stage(f"theta: {config.init.describe()}"):
        return config.init.build(InitContext(config.prompt, config.seed, device, config.cameras))


def compile_unet_passes(prior: Prior, psi: ScoreEstimator | None, announce=None) -> None:
    """``--compile``: phi's and psi's UNet passes through ``torch.compile`` (``priors.compile``), one compiled forward
    per UNet (a shared-UNet psi shares phi's). Priors and estimators without a UNet run as they are. ``announce``
    (default: the console) gets what the run is told: one line now, and one if the compiler fails."""
    announce = announce or console.print
    parts = [part for part in (prior, psi) if isinstance(part, (UNetPrior, CameraLoRAEstimator))]
    if not parts:
        announce(f"--compile: {type(prior).__name__} has no UNet to compile; the run is eager")
        return
    if (why := compile_unsupported()) is not None:
        announce(f"[yellow]--compile: {why}; the run is eager[/yellow]")
        return
    compiler, forwards = UNetCompiler(announce), {}
    for part in parts:
        if id(part.unet) not in forwards:
            forwards[id(part.unet)] = compiler.forward(part.unet)
        part.unet_forward = forwards[id(part.unet)]
    announce("--compile: UNet passes through torch.compile, compiled in the first step")


def build_trainer(
    config: GenerateConfig, run_dir: Path, device: torch.device, prior: Prior | None = None, resuming: bool = False
) -> Trainer:
    """The Trainer of a run of ``config`` in ``run_dir`` on ``device`` (``prior``: an already built phi to reuse), with
    its callbacks (module docstring); ``resuming``: its scene comes from the checkpoint (``Trainer.restore``), so no
    initial Gaussians are made."""
    parts = build_parts(config, device, prior, resuming)
    with stage("theta: the Gaussians' optimisers"):
        trainer = Trainer(config, run_dir, device, parts)
    trainer.callbacks.extend(default_callbacks(config, trainer))
    trainer.find_front = run_front_finder(config, device, trainer.backend)
    return trainer


def default_callbacks(config: GenerateConfig, trainer: Trainer) -> list[TrainingCallback]:
    """The callbacks of a run of ``config`` driven by ``trainer`` (its phi and psi), in the module docstring's order."""
    callbacks: list[TrainingCallback] = []
    if config.diagnose.enabled and trainer.psi is not None:
        lam = config.distill.effective_lambda
        diagnostic = PsiDiagnostic(config.diagnose, trainer.prior, config.diagnose.baseline_bank, lam)
        callbacks.append(PsiDiagnosticCallback(diagnostic, config.diagnose.every, config.steps))
    previews = PreviewWriter(config)
    callbacks += [MetricsWriter(), previews]
    if config.viewer:
        from ..monitors.live_view import LiveViewCallback

        callbacks.append(LiveViewCallback(config.viewer_port, config.prompt, previews))
    callbacks.append(CheckpointWriter(config))
    return callbacks
