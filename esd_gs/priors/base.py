"""The interface of phi, the frozen 2D prior p_t(x_t | y) that score distillation distils from.

A prior turns renders into its latent space, noises them with its forward process and predicts the noise with
text classifier-free guidance. ``ScoreDistillation`` (and the estimators psi built on a prior) use nothing else, so
a new prior implements this class and a ``PriorConfig`` that builds it, and registers the config in ``PRIORS``
(``priors/__init__.py``).

Shapes and conventions:

- Images are [B, 3, H, W] in [0, 1]. Latents z are float32 [B, C, h, w] in the prior's own space (Stable Diffusion:
  4 VAE channels at 1/8 the size; the synthetic prior: the pixels themselves in [-1, 1]).
- Timesteps are integers t in [0, T) [B]; ``alphas_cumprod`` [T] is the prior's noise schedule; the forward process
  is ``diffusion.add_noise``: x_t = alpha_t z + sigma_t eps.
- Text conditions come from ``text_embeddings`` (a ``TextEmbeddings``); ``eps`` returns float32 noise predictions
  shaped like x_t.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor

from ..cameras import OrbitSampler
from ..diffusion import add_noise
from ..errors import UserError
from .perp_neg import PerpNegWeights, view_conditions
from .prompts import view_direction_index


@dataclass
class TextEmbeddings:
    """A prompt's cached text conditions: tensors of the prior's own kind, one row per condition (Stable
    Diffusion: CLIP hidden states [1, 77, D], views [4, 77, D] in ``prompts.DIRECTIONS`` order; the synthetic prior:
    reference indices [1])."""

    plain: Tensor
    """The prompt as given: psi's condition (psi never uses CFG or view suffixes)."""
    negative: Tensor
    """The unconditional / negative prompt for classifier-free guidance."""
    views: Tensor | None = None
    """The view-dependent prompts (front, side, back, overhead), or None when view-dependent prompting is off."""

    def conditional(self, azimuth: Tensor, elevation: Tensor) -> Tensor:
        """phi's text condition for each of B cameras: [B, ...] rows of ``plain`` or of ``views``."""
        batch = azimuth.shape[0]
        if self.views is None:
            return self.plain.expand(batch, *self.plain.shape[1:])
        index = view_direction_index(azimuth.cpu(), elevation.cpu()).to(self.views.device)
        return self.views[index]

    def perp_neg(
        self, azimuth: Tensor, elevation: Tensor, weights: PerpNegWeights | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """phi's Perp-Neg conditions for each of B cameras (``perp_neg.view_conditions``): positive [B, ...],
        negatives [B, 2, ...] and their weights [B, 2] (``weights``: threestudio's defaults when None). Needs the
        view-dependent prompts."""
        if self.views is None:
            raise ValueError("Perp-Neg needs the view-dependent prompts (views is None)")
        return view_conditions(self.views, azimuth, elevation, weights)


class Prior(ABC):
    """phi: a frozen diffusion prior (see the module docstring for shapes and conventions)."""

    device: torch.device
    """Where its networks and schedule live."""
    dtype: torch.dtype
    """The precision its networks compute in (latents and predictions are float32 whatever it is)."""
    alphas_cumprod: Tensor
    """[T] float32 alphabar_t of its noise schedule, on ``device``."""
    approximate_encoder: bool = False
    """Whether renders are made at latent size and encoded approximately (``encode(..., approximate=True)``;
    Stable Diffusion's ``--prior.encoder linear``)."""

    @property
    def num_train_timesteps(self) -> int:
        """T, the number of diffusion timesteps of the schedule."""
        return int(self.alphas_cumprod.shape[0])

    @abstractmethod
    def text_embeddings(self, prompt: str, negative_prompt: str = "", view_dependent: bool = True) -> TextEmbeddings:
        """Encode ``prompt`` once: plain, negative and (if the prior has them) the view-dependent variants."""

    @abstractmethod
    def encode(self, images: Tensor, approximate: bool = False) -> Tensor:
        """Renders [B, 3, H, W] in [0, 1] -> float32 latents, differentiable. ``approximate``: the renders were made
        at latent size, for a prior's cheap approximate encoder (priors without one encode exactly)."""

    def add_noise(self, latents: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """x_t = alpha_t z + sigma_t eps on this prior's schedule."""
        return add_noise(self.alphas_cumprod, latents, noise, timesteps)

    @abstractmethod
    def eps(self, x_t: Tensor, timesteps: Tensor, text: Tensor, negative: Tensor, guidance_scale: float) -> Tensor:
        """eps_phi(x_t, t, y) with text classifier-free guidance (Ho & Salimans 2022), no gradient:
        eps = eps(x_t, t, negative) + s (eps(x_t, t, text) - eps(x_t, t, negative)).

        ``text`` holds one condition per sample ([B, ...], from ``TextEmbeddings.conditional``), ``negative`` one
        for all ([1, ...]); ``guidance_scale`` s = 1 is the plain conditional prediction."""

    def eps_perp_neg(
        self,
        x_t: Tensor,
        timesteps: Tensor,
        positive: Tensor,
        negatives: Tensor,
        weights: Tensor,
        negative: Tensor,
        guidance_scale: float,
    ) -> Tensor:
        """eps_phi(x_t, t, y) with Perp-Neg text guidance (``perp_neg.perp_neg_guidance``), no gradient:
        eps = eps_u + s ((eps_+ - eps_u) + sum_i w_i perp(eps_i - eps_u, eps_+ - eps_u)).

        ``positive`` [B, ...], ``negatives`` [B, K, ...] and ``weights`` [B, K] come from ``TextEmbeddings.perp_neg``;
        ``negative`` [1, ...] is the unconditional text. Priors without view-dependent text conditions have none
        (``PriorConfig.check_perp_neg`` refuses such a run before it starts)."""
        raise NotImplementedError(f"{type(self).__name__} has no Perp-Neg guidance")

    def restore(self) -> None:
        """Undo what an estimator psi sharing this prior's networks put into them (a shared-UNet LoRA and camera
        embedding), so that the next run reusing this prior starts from the pretrained phi (``esd-gs batch`` keeps
        one prior per worker). Priors whose networks psi never touches have nothing to undo."""
        return None


@dataclass(frozen=True)
class RunContext:
    """What a prior may need to know of the run it serves, besides its own config: the synthetic priors render their
    reference images at the run's size, cameras and background; Stable Diffusion needs none of it."""

    prompt: str
    resolution: int
    cameras: OrbitSampler
    background: Literal["random", "white", "black"]


class PriorConfig(ABC):
    """The settings of one prior phi, and its builder: the unit ``--prior`` selects (``prior:NAME`` on the command
    line, ``name: NAME`` under ``prior:`` in a YAML config). Each config checks its own values (``__post_init__``)."""

    name: ClassVar[str]
    """The prior's name on the command line and in saved configs."""
    building: ClassVar[str] = "building the prior"
    """What a run's start-up line says while ``build`` runs (``progress.stage``: "phi: <building>")."""
    learned_estimator: ClassVar[str]
    """The learned psi this prior takes (a name in ``estimators.ESTIMATORS``)."""
    estimators: ClassVar[tuple[str, ...]]
    """The psi made for this prior (names in ``estimators.ESTIMATORS``); those that work with any prior
    (``EstimatorConfig.any_prior``) need no entry here."""
    pixel_space: ClassVar[bool] = False
    """Latents are the pixels themselves (the synthetic priors): one image size, no separate encoder."""
    uses_context: ClassVar[bool] = False
    """Whether ``build`` reads the ``RunContext`` (runs that differ in it cannot share one built prior)."""

    @abstractmethod
    def build(self, device: torch.device, context: RunContext) -> Prior:
        """phi on ``device`` for a run described by ``context``; failures are one ``UserError``."""

    def model_source(self) -> str | None:
        """The model this prior loads (a family, a Hub id or a folder: what ``esd-gs doctor`` checks can be had), or
        None when it loads none."""
        return None

    def text_embeddings(self, prior: Prior, prompt: str) -> TextEmbeddings:
        """The prompt's conditions for this prior, with this config's text settings (if it has any)."""
        return prior.text_embeddings(prompt)

    def check_prompt(self, prompt: str) -> None:
        """Whether this prior can answer ``prompt`` (``GenerateConfig.validate``, before any work): a UserError."""
        return None

    def check_perp_neg(self) -> None:
        """Whether this prior can guide phi with Perp-Neg (``--perp-neg``, ``GenerateConfig.validate``): it needs
        view-dependent text conditions. One ``UserError`` when it cannot."""
        raise UserError(f"--perp-neg needs view-dependent prompts, which prior:{self.name} has not (use prior:sd)")

    def check_run(self, resolution_start: int | None) -> None:
        """How this prior fits the run's own settings (``GenerateConfig.validate``): one ``UserError``."""
        return None
