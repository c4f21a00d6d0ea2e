"""The interface of psi, the estimator of the rendered-image distribution q_t(x_t | c, y) (ESD Alg. 1, eq. 9).

VSD needs psi's camera-conditional noise prediction eps_psi(x_t, t, c, y); ESD also needs the camera-free one
eps_psi(x_t, t, null, y) (eq. 9), and mixes them by lambda. An estimator provides both, may train online on the
renders of each step, may refresh itself before a step, and saves its state into the run's checkpoints. A new
estimator implements ``ScoreEstimator`` and its ``EstimatorConfig``, and adds the config to ``ESTIMATORS``
(``estimators/__init__.py``).

Shapes and conventions (as in ``priors.base``):

- x_t [B, C, h, w] float32 latents at integer timesteps [B], noised by the prior's forward process from renders z
  with the noise ``noise`` [B, C, h, w]: x_t = alpha_t z + sigma_t noise.
- ``text`` is the prompt's plain condition (``TextEmbeddings.plain``, one row for the whole batch): psi never sees
  classifier-free guidance or view suffixes.
- ``cameras`` are camera embeddings [B, 16] (``Cameras.embedding``); None means the null camera
  (``cameras.null_embedding``).
- Predictions are float32, shaped like x_t, without gradient.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor

from ..priors import Prior

RenderLatents = Callable[[int], Tensor]
"""``render_latents(count)``: latents [count, C, h, w] of ``count`` fresh renders of the current scene at cameras
drawn from the training distribution (what the loop hands ``ScoreEstimator.before_step``)."""


class ScoreEstimator(ABC):
    """psi (see the module docstring for shapes and conventions)."""

    trains: ClassVar[bool]
    """Whether ``update`` trains it (a learned estimator) or it has nothing to learn."""
    scaler_skipped: int | None = None
    """The training steps its loss scaler skipped so far (inf/nan in the scaled gradients: an fp16 learned psi's
    ``GradScaler``), 0 when it has no scaler to skip; None for an estimator that does not train."""

    @abstractmethod
    def eps(
        self, x_t: Tensor, timesteps: Tensor, text: Tensor, cameras: Tensor | None, noise: Tensor | None = None
    ) -> Tensor:
        """eps_psi(x_t, t, c, y), or eps_psi(x_t, t, null, y) with ``cameras=None``.

        ``noise`` is the noise that made x_t from this step's renders: an estimator whose camera-conditional score
        is exact for a deterministic renderer (q(x | c) a Dirac at g(theta, c)) returns it; others ignore it."""

    def eps_camera_and_null(
        self, x_t: Tensor, timesteps: Tensor, text: Tensor, cameras: Tensor, noise: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Both psi terms of eq. 9: (eps_psi(x_t, t, c, y), eps_psi(x_t, t, null, y)). Estimators override this
        when one batched pass is cheaper than two."""
        return self.eps(x_t, timesteps, text, cameras, noise), self.eps(x_t, timesteps, text, None, noise)

    def before_step(self, step: int, render_latents: RenderLatents) -> None:  # noqa: B027 (an optional hook)
        """Called by the loop before each 3D step's render, with a way to render fresh latents of the scene."""

    def update(
        self,
        latents: Tensor,
        text: Tensor,
        cameras: Tensor,
        generator: torch.Generator | None = None,
        distill_t: Tensor | None = None,
        progress: float = 0.0,
    ) -> float | None:
        """psi's training on this step's detached latents [B, C, h, w] and camera embeddings [B, 16], after theta's
        update (Alg. 1), told the step's distillation timesteps ``distill_t`` [B]
        (``OnlineTrainingConfig.timestep_window``) and the share of the run done, ``progress`` in [0, 1]
        (``OnlineTrainingConfig.train_steps_until``); returns the last loss, or None when it does not train."""
        return None

    @abstractmethod
    def checkpoint_state(self) -> tuple[dict[str, Tensor], dict]:
        """(tensors, JSON-able settings) that let ``load_checkpoint_state`` continue exactly where it was."""

    @abstractmethod
    def load_checkpoint_state(self, tensors: dict[str, Tensor], meta: dict) -> None:
        """Restore what ``checkpoint_state`` returned (tensors on the CPU; moved here)."""


class EstimatorConfig(ABC):
    """The settings of one estimator psi, and its builder: the unit ``--psi`` selects (``psi:NAME`` on the command
    line, ``estimator: NAME`` in a YAML config). Each config checks its own values (``__post_init__``)."""

    name: ClassVar[str]
    """The estimator's name on the command line and in saved configs."""
    any_prior: ClassVar[bool] = False
    """Works with every prior (a training-free estimator); otherwise a prior lists it in ``PriorConfig.estimators``."""

    def check_run(self) -> None:
        """Checks of settings that only mean something together, once the preset and every flag are in (a
        ``UserError``); ``__post_init__`` checks each value on its own, before a preset's values are applied."""
        return None  # nothing to check unless an estimator says otherwise

    @abstractmethod
    def build(self, prior: Prior) -> ScoreEstimator:
        """psi for a run with the prior phi ``prior`` (a ``UserError`` when this estimator cannot work with it)."""
