"""A ``Trainer`` with the callbacks its config asks for: the one place that knows which callbacks a run has.

Every run gets, in this order (the order they are called in, ``training.callbacks``):

1. the psi diagnostic (``evaluation.psi_error.PsiDiagnosticCallback``), with ``--diagnose.enabled`` on a run that has
   a psi (SDS has none to measure): it adds ``psi_error`` to the rows, so it comes before they are written;
2. metrics.jsonl (``MetricsWriter``);
3. previews on schedule (``PreviewWriter``, ``--output.preview-every``);
4. the live view (``viewer.live.LiveViewCallback``), with ``--viewer``: after the previews, whose grids it shows
   (imported only then, like viser);
5. checkpoints on schedule (``CheckpointWriter``, ``--output.checkpoint-every``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..evaluation.psi_error import PsiDiagnostic, PsiDiagnosticCallback
from ..training.callbacks import CheckpointWriter, MetricsWriter, PreviewWriter, TrainingCallback
from ..training.trainer import Trainer

if TYPE_CHECKING:
    from ..configs.generate import GenerateConfig
    from ..priors import Prior


def build_trainer(config: GenerateConfig, run_dir: Path, device: torch.device, prior: Prior | None = None) -> Trainer:
    """The Trainer of a run of ``config`` in ``run_dir`` on ``device`` (``prior``: an already built phi to reuse), with
    its callbacks (module docstring)."""
    trainer = Trainer(config, run_dir, device, prior=prior)
    trainer.callbacks.extend(default_callbacks(config, trainer))
    return trainer


def default_callbacks(config: GenerateConfig, trainer: Trainer) -> list[TrainingCallback]:
    """The callbacks of a run of ``config`` driven by ``trainer`` (its phi and psi), in the module docstring's order."""
    callbacks: list[TrainingCallback] = []
    if config.diagnose.enabled and trainer.psi is not None:
        lam = config.distill.effective_lambda
        diagnostic = PsiDiagnostic(config.diagnose, trainer.prior, config.psi.bank_size, lam)
        callbacks.append(PsiDiagnosticCallback(diagnostic, config.diagnose.every, config.steps))
    previews = PreviewWriter(config)
    callbacks += [MetricsWriter(), previews]
    if config.viewer:
        from ..viewer.live import LiveViewCallback

        callbacks.append(LiveViewCallback(config.viewer_port, config.prompt, previews))
    callbacks.append(CheckpointWriter(config))
    return callbacks
