"""The interface of psi, the estimator of the rendered-image distribution q_t(x_t | c, y) (ESD Alg. 1, eq. 9).

VSD needs psi's camera-conditional noise prediction eps_psi(x_t, t, c, y); ESD also needs the camera-free one
eps_psi(x_t, t, null, y) (eq. 9), and mixes them by lambda. An estimator provides both, may train online on the
renders of each step, may refresh itself before a step, and saves its state into the run's checkpoints. A new
estimator implements ``ScoreEstimator`` and adds one entry to ``estimators/__init__.py``.

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

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor

from ..diffusion import LossWeighting
from ..errors import ConfigError


@dataclass
class PsiConfig:
    """The estimator psi: which one, and how the learned one is built and trained."""

    lora_rank: int = 4
    """LoRA rank r."""
    lora_alpha: float = 4.0
    """LoRA scaling numerator (update scaled by alpha / r)."""
    target_modules: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    """UNet attention projections that get LoRA."""
    lr: float = 1e-4
    """AdamW learning rate for LoRA and the camera MLP."""
    betas: tuple[float, float] = (0.9, 0.99)
    """AdamW betas."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    p_null_camera: float = 0.1
    """Probability of training a batch with the null camera (classifier-free camera dropout)."""
    train_steps_per_iter: int = 1
    """psi updates per 3D step."""
    # A window w draws t uniformly from [t_d - w, t_d + w], clipped to [0, T), around each sample's distillation
    # timestep t_d of the step: psi is trained where the update reads it (see research/janus.md).
    timestep_window: int | None = None
    """Which t psi trains at: None = t ~ U[0, T) (Alg. 1); w = within w of each sample's distillation t."""
    # prediction is how ProlificDreamer trains its LoRA (eps or v, the network's own target); x0 weighs every t the
    # same, so the noisy low-t samples do not drown the high-t ones.
    loss_weighting: LossWeighting = "prediction"
    """omega(t) of psi's loss (eq. 3): prediction (MSE to eps or v) or x0 (clean image's MSE; synthetic default)."""
    shared_unet: bool = True
    """Put psi's LoRA into phi's UNet (half the memory); phi's passes switch it off."""
    # A family name such as sd2.1 (ProlificDreamer's SD 2.1, v-prediction), a Hub id or a folder.
    base_model: str | None = None
    """Separate base model for psi (e.g. sd2.1); None = a copy of phi's model. Ignored when shared_unet is on."""
    # learned: the LoRA with SD, a residual network with the synthetic prior. particle: training-free; its
    # camera-conditional score is the noise itself.
    estimator: Literal["learned", "particle"] = "learned"
    """learned: psi trained during the run; particle: the exact score of a bank of renders of the current scene."""
    bank_size: int = 32
    """Particle estimator: number of renders in the bank."""
    bank_refresh_every: int = 10
    """Particle estimator: re-render the bank every this many steps."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.p_null_camera <= 1.0:
            raise ConfigError(f"--psi.p-null-camera must be in [0, 1], got {self.p_null_camera}")
        if self.lora_rank < 1 or not self.lora_alpha > 0:
            raise ConfigError(
                f"--psi.lora-rank must be >= 1 and --psi.lora-alpha > 0, got {self.lora_rank}, {self.lora_alpha}"
            )
        if not (math.isfinite(self.lr) and self.lr > 0) or self.train_steps_per_iter < 1:
            raise ConfigError("--psi.lr must be > 0 and --psi.train-steps-per-iter at least 1")
        if self.timestep_window is not None and self.timestep_window < 0:
            raise ConfigError(f"--psi.timestep-window must be >= 0 (or None), got {self.timestep_window}")
        if not all(0 <= b < 1 for b in self.betas) or self.weight_decay < 0:
            raise ConfigError(
                f"--psi.betas must be in [0, 1) and --psi.weight-decay >= 0, got {self.betas}, {self.weight_decay}"
            )
        if self.bank_size < 1 or self.bank_refresh_every < 1:
            raise ConfigError("--psi.bank-size and --psi.bank-refresh-every must be at least 1")


RenderLatents = Callable[[int], Tensor]
"""``render_latents(count)``: latents [count, C, h, w] of ``count`` fresh renders of the current scene at cameras
drawn from the training distribution (what the loop hands ``ScoreEstimator.before_step``)."""


class ScoreEstimator(ABC):
    """psi (see the module docstring for shapes and conventions)."""

    trains: ClassVar[bool]
    """Whether ``update`` trains it (a learned estimator) or it has nothing to learn."""

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
    ) -> float | None:
        """psi's training on this step's detached latents [B, C, h, w] and camera embeddings [B, 16], after theta's
        update (Alg. 1), told the step's distillation timesteps ``distill_t`` [B] (``PsiConfig.timestep_window``);
        returns the last loss, or None when it does not train."""
        return None

    @abstractmethod
    def checkpoint_state(self) -> tuple[dict[str, Tensor], dict]:
        """(tensors, JSON-able settings) that let ``load_checkpoint_state`` continue exactly where it was."""

    @abstractmethod
    def load_checkpoint_state(self, tensors: dict[str, Tensor], meta: dict) -> None:
        """Restore what ``checkpoint_state`` returned (tensors on the CPU; moved here)."""
