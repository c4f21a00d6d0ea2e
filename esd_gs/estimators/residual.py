"""psi with the synthetic prior: a small camera-conditioned network on top of phi, trained exactly like the LoRA psi.

    v_psi(x_t, t, c, y) = v_phi(x_t, t, y) + r(x_t, eps_phi(x_t, t, y), t, c),    i.e.
    eps_psi(x_t, t, c, y) = eps_phi(x_t, t, y) + alpha_t r(...)

psi is a v-prediction network (``diffusion.process``: v = alpha_t eps - sigma_t x_0, eps = sigma_t x_t + alpha_t v),
trained on the v target, as ProlificDreamer trains its LoRA on SD 2.1 (v-prediction). At large t the difference
between psi and phi that ESD needs is small in eps (the images' part of eps is alpha_t / sigma_t x_0), and the v
parametrization scales r by alpha_t there, so r itself need not be small (see research/janus.md).

phi here is the exact score of the prompt's reference images (no CFG: psi always sees the plain prompt). The
residual r is a small convolutional network whose blocks are modulated (FiLM) by a sinusoidal time embedding plus
the camera embedding (``CameraEmbedding`` from the LoRA psi: the same 16-number c2w input, zero vector = null
camera). Its output layer starts at zero, so at step 0 psi equals phi, as Algorithm 1 initialises psi with phi.
Training, camera dropout (p_null) and AdamW come from ``online.OnlineEstimator``.

r reads phi's prediction as well as x_t (``ARCHITECTURE``). phi is an exact mixture score: at small t it snaps to
the nearest reference image, a global, non-smooth function of x_t that a small convolutional network cannot undo
from x_t alone; with phi's prediction as an input it does not have to (see research/janus.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..diffusion import LossWeighting
from ..diffusion.process import alpha_sigma
from ..errors import UserError
from ..priors import Prior, SyntheticPrior
from .online import CameraEmbedding, OnlineEstimator, OnlineTrainingConfig


def timestep_embedding(timesteps: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of integer timesteps [B] -> [B, dim] (DDPM / Transformer style)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=timesteps.device) / half)
    angles = timesteps.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class FiLMBlock(nn.Module):
    def __init__(self, width: int, emb: int):
        super().__init__()
        self.norm = nn.GroupNorm(8, width)
        self.conv = nn.Conv2d(width, width, 3, padding=1)
        self.film = nn.Linear(emb, 2 * width)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        return h + self.conv(torch.nn.functional.silu(self.norm(h) * (1 + scale) + shift))


ARCHITECTURE = "v residual(x_t, eps_phi)"
"""Saved with psi's checkpoint state. Earlier residuals (esd-gs 0.1's read x_t only; the next one predicted eps)
cannot be resumed into this one."""


class ResidualNet(nn.Module):
    """r(x_t, eps_phi, t, c): [B, C, h, w] twice, [B] timesteps, [B, 16] cameras -> [B, C, h, w]."""

    def __init__(self, channels: int = 3, width: int = 32, emb: int = 64, blocks: int = 3):
        super().__init__()
        self.emb_dim = emb
        self.time_mlp = nn.Sequential(nn.Linear(emb, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.camera = CameraEmbedding(emb)
        self.conv_in = nn.Conv2d(2 * channels, width, 3, padding=1)
        self.blocks = nn.ModuleList(FiLMBlock(width, emb) for _ in range(blocks))
        self.conv_out = nn.Conv2d(width, channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x_t: Tensor, eps_phi: Tensor, timesteps: Tensor, cameras: Tensor) -> Tensor:
        emb = self.time_mlp(timestep_embedding(timesteps, self.emb_dim)) + self.camera(cameras)
        h = self.conv_in(torch.cat([x_t, eps_phi], dim=1))
        for block in self.blocks:
            h = block(h, emb)
        return self.conv_out(torch.nn.functional.silu(h))


class SyntheticResidualEstimator(OnlineEstimator):
    """v_psi = v_phi(x_t, t, y) + r(x_t, eps_phi, t, c) (see module docstring)."""

    prediction_type = "v_prediction"

    def __init__(self, prior: SyntheticPrior, config: ResidualPsiConfig, width: int = 32):
        self.prior, self.config = prior, config
        self.net = ResidualNet(width=width).to(prior.device)
        self.camera_embedding = self.net.camera
        self.trainable_parameters = list(self.net.parameters())
        self._init_training()

    def _forward(self, x_t: Tensor, timesteps: Tensor, text: Tensor, cameras: Tensor) -> Tensor:
        with torch.no_grad():
            base = self.prior.eps(x_t, timesteps, text, text[:1], 1.0)  # phi's plain conditional score (no CFG)
            alpha, sigma = alpha_sigma(self.prior.alphas_cumprod, timesteps, x_t.dim())
            v_phi = (base - sigma * x_t.float()) / alpha  # phi's v, from eps = sigma_t x_t + alpha_t v
        return v_phi + self.net(x_t.float(), base, timesteps, cameras.float())

    def state_dict(self) -> dict[str, Tensor]:
        """The residual network's weights (prefixed ``net.``)."""
        return {f"net.{k}": v.detach().cpu() for k, v in self.net.state_dict().items()}

    def checkpoint_state(self) -> tuple[dict[str, Tensor], dict]:
        tensors, meta = super().checkpoint_state()
        return tensors, {**meta, "architecture": ARCHITECTURE}

    def load_checkpoint_state(self, tensors: dict[str, Tensor], meta: dict) -> None:
        if meta.get("architecture") != ARCHITECTURE:
            raise UserError(
                "this checkpoint's synthetic psi is an earlier residual network (an eps prediction, or one that read "
                "x_t only); this version's predicts v: start the run again with --overwrite"
            )
        super().load_checkpoint_state(tensors, meta)

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.net.load_state_dict(
            {k[len("net.") :]: v.to(self.prior.device) for k, v in state.items() if k.startswith("net.")}
        )


@dataclass
class ResidualPsiConfig(OnlineTrainingConfig):
    """The learned psi of the exact synthetic prior: a residual network on phi, trained online."""

    # psi:residual; the online-training settings (--psi.lr etc.) are OnlineTrainingConfig's, shared with psi:lora.

    name: ClassVar[str] = "residual"

    # The values chosen for the synthetic prior on the Janus benchmark's development object (see research/janus.md):
    # a network that starts at zero learns faster, and the x0 weighting keeps the noisy low-t samples from drowning
    # the high-t ones the update reads most.
    lr: float = 1e-3
    """AdamW learning rate for psi's trained weights and its camera MLP."""
    loss_weighting: LossWeighting = "x0"
    """omega(t) of psi's loss (eq. 3): prediction (MSE to eps or v) or x0 (clean image's MSE)."""

    def build(self, prior: Prior) -> SyntheticResidualEstimator:
        if not isinstance(prior, SyntheticPrior):
            raise UserError(f"psi:residual needs the exact synthetic prior, not {type(prior).__name__}")
        return SyntheticResidualEstimator(prior, self)
