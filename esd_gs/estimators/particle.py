"""The training-free particle estimator of psi: exact scores of the current rendered-image distribution.

q_t(x | y), the distribution of noised renders over random cameras, is estimated by the empirical distribution of a
bank of M renders of the current scene at cameras drawn from the training camera distribution, re-rendered every
``bank_refresh_every`` steps through the loop's ``render_latents`` callback (``before_step``). Its exact eps
prediction (``diffusion.mixture_eps``) stands in for eps_psi(x_t, t, null, y). The camera-conditional distribution
q(x | c) of a deterministic renderer is a Dirac at g(theta, c), whose eps prediction at
x_t = alpha_t g(theta, c) + sigma_t eps is the injected noise eps itself, so eps_psi(x_t, t, c, y) = eps: with it,
VSD (lambda = 0) reduces to SDS, and ESD becomes SDS plus lambda times the entropy term. Works in any latent space
(SD latents or the synthetic prior's pixels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from ..diffusion import mixture_eps
from ..errors import ConfigError
from ..priors import Prior
from .base import EstimatorConfig, RenderLatents, ScoreEstimator


class ParticleEstimator(ScoreEstimator):
    """psi from a bank of renders (see module docstring)."""

    trains: ClassVar[bool] = False

    def __init__(self, prior: Prior, bank_size: int = 32, refresh_every: int = 10):
        if bank_size < 1 or refresh_every < 1:
            raise ValueError("the particle bank needs bank_size >= 1 and bank_refresh_every >= 1")
        self.prior, self.bank_size, self.refresh_every = prior, bank_size, refresh_every
        self.bank: Tensor | None = None

    def needs_refresh(self, step: int) -> bool:
        return self.bank is None or step % self.refresh_every == 0

    def refresh(self, latents: Tensor) -> None:
        """Replace the bank with these (detached) latents [M, C, h, w] of renders at random training cameras."""
        self.bank = latents.detach().float()

    def before_step(self, step: int, render_latents: RenderLatents) -> None:
        """Re-render the bank on the first step and every ``refresh_every`` steps."""
        if self.needs_refresh(step):
            self.refresh(render_latents(self.bank_size))

    def eps(
        self, x_t: Tensor, timesteps: Tensor, text: Tensor, cameras: Tensor | None, noise: Tensor | None = None
    ) -> Tensor:
        """With cameras: the injected ``noise`` (the Dirac's exact score); null camera: the bank's exact eps."""
        if cameras is not None:
            if noise is None:
                raise ValueError("the particle estimator's camera-conditional score is the injected noise: pass noise")
            return noise.float()
        if self.bank is None:
            raise RuntimeError("the particle bank is empty: call refresh() first")
        return mixture_eps(x_t, self.bank, self.prior.alphas_cumprod, timesteps)

    def checkpoint_state(self) -> tuple[dict[str, Tensor], dict]:
        """The bank (nothing else: it does not train)."""
        return ({"bank": self.bank.detach().cpu()} if self.bank is not None else {}), {}

    def load_checkpoint_state(self, tensors: dict[str, Tensor], meta: dict) -> None:
        if "bank" in tensors:
            self.bank = tensors["bank"].to(self.prior.device)


@dataclass
class ParticlePsiConfig(EstimatorConfig):
    """Training-free psi: the exact score of a bank of renders of the current scene (works with any prior)."""

    name: ClassVar[str] = "particle"
    any_prior: ClassVar[bool] = True

    bank_size: int = 32
    """Number of renders in the bank."""
    bank_refresh_every: int = 10
    """Re-render the bank every this many steps."""

    def __post_init__(self) -> None:
        if self.bank_size < 1 or self.bank_refresh_every < 1:
            raise ConfigError("--psi.bank-size and --psi.bank-refresh-every must be at least 1")

    def build(self, prior: Prior) -> ParticleEstimator:
        return ParticleEstimator(prior, self.bank_size, self.bank_refresh_every)
