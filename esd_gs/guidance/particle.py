"""The training-free particle estimator of psi: exact scores of the current rendered-image distribution.

q_t(x | y), the distribution of noised renders over random cameras, is estimated by the empirical distribution of a
bank of M renders of the current scene at cameras drawn from the training camera distribution, re-rendered every
``bank_refresh_every`` steps. Its exact eps prediction (``mixture_score.mixture_eps``) stands in for
eps_psi(x_t, t, null, y). The camera-conditional distribution q(x | c) of a deterministic renderer is a Dirac at
g(theta, c), whose eps prediction at x_t = alpha_t g(theta, c) + sigma_t eps is the injected noise eps itself, so
eps_psi(x_t, t, c, y) = eps (``dirac_camera_score``): with it, VSD (lambda = 0) reduces to SDS, and ESD becomes
SDS plus lambda times the entropy term. Works in any latent space (SD latents or the synthetic prior's pixels).
"""

from __future__ import annotations

from torch import Tensor

from .mixture_score import mixture_eps


class ParticleEstimator:
    dirac_camera_score = True
    optimizer = None

    def __init__(self, prior, bank_size: int = 32, refresh_every: int = 10):
        if bank_size < 1 or refresh_every < 1:
            raise ValueError("the particle bank needs bank_size >= 1 and bank_refresh_every >= 1")
        self.prior, self.bank_size, self.refresh_every = prior, bank_size, refresh_every
        self.bank: Tensor | None = None

    def needs_refresh(self, step: int) -> bool:
        return self.bank is None or step % self.refresh_every == 0

    def refresh(self, latents: Tensor) -> None:
        """Replace the bank with these (detached) latents of renders at random training cameras."""
        self.bank = latents.detach().float()

    def eps(self, x_t: Tensor, timesteps: Tensor, text: Tensor, cameras: Tensor | None) -> Tensor:
        """eps of the bank's noised empirical distribution (cameras must be None: the bank marginalises them)."""
        if cameras is not None:
            raise ValueError("the particle estimator's camera-conditional score is the injected noise")
        if self.bank is None:
            raise RuntimeError("the particle bank is empty: call refresh() first")
        return mixture_eps(x_t, self.bank, self.prior.alphas_cumprod, timesteps)

    def train_step(self, latents: Tensor, text: Tensor, cameras: Tensor, generator=None) -> None:
        return None  # nothing to train

    def state_dict(self) -> dict[str, Tensor]:
        return {"bank": self.bank.detach().cpu()} if self.bank is not None else {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if "bank" in state:
            self.bank = state["bank"].to(self.prior.device)
