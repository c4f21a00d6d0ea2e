"""One score-distillation step on rendered images: encode, noise, score with phi (and psi), build the loss.

This is Algorithm 1's inner loop minus the optimiser steps, for SDS, VSD and ESD alike (the rule: ``rule.py``):

    z = encode(g(theta, c));  t ~ schedule(progress);  x_t = alpha_t z + sigma_t eps
    g = w(t) * bracket(eps_phi(x_t, t, y_view), eps, eps_psi(x_t, t, c, y), eps_psi(x_t, t, null, y))
    (eps_phi: text CFG, or Perp-Neg's guidance with ``--perp-neg``; psi's scores are the same either way)
    loss = 0.5 ||z - stopgrad(z - g)||^2 / B

The caller backpropagates ``loss`` into theta, steps theta's optimiser, then calls ``update_psi`` with the same
detached latents and cameras (Alg. 1 trains psi on the current renders, after the theta update).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..cameras import Cameras
from ..errors import ConfigError
from ..estimators import ScoreEstimator
from ..priors import Prior, TextEmbeddings
from ..priors.perp_neg import DEFAULT_F_FS, DEFAULT_F_FSB, DEFAULT_F_SB, DEFAULT_F_SF, PerpNegWeights, WeightTriple
from .rule import METHODS, Method, Weighting, distillation_bracket, distillation_loss, entropy_weight, weight_of_t
from .timesteps import TimestepSchedule


@dataclass
class DistillationConfig:
    """How the 2D prior's scores become a gradient on the scene."""

    method: Method = "esd"
    """sds (eq. 1), vsd (eq. 2) or esd (eq. 9)."""
    lambda_entropy: float = 0.5
    """ESD's entropy weight lambda in [0, 1] (0 = VSD; the paper's best is 0.5)."""
    guidance_scale: float = 7.5
    """Text classifier-free guidance scale of phi (7.5 for VSD/ESD; SDS usually needs ~100)."""
    weighting: Weighting = "sigma2"
    """w(t): sigma2 = 1 - alphabar_t, or uniform."""
    grad_clip: float | None = None
    """Clamp each entry of w(t) * bracket to [-grad_clip, grad_clip]; None = no clipping."""
    # Armandpour et al. 2023 (arXiv 2304.04968) in threestudio's parametrisation: phi's positive prompt interpolates
    # the neighbouring view prompts, the other views are negatives whose scores count only perpendicular to it.
    # psi's scores are unchanged. Costs 4 UNet passes of phi per view instead of CFG's 2.
    perp_neg: bool = False
    """Perp-Neg on phi's text guidance: the other view prompts as perpendicular negatives (4 UNet passes, not 2)."""
    perp_neg_f_sb: WeightTriple = DEFAULT_F_SB
    """Perp-Neg: (a, b, c) of f(r) = a exp(-b r) + c, the side negative's weight between side and back views."""
    perp_neg_f_fsb: WeightTriple = DEFAULT_F_FSB
    """Perp-Neg: (a, b, c) of the front negative's weight between side and back views."""
    perp_neg_f_fs: WeightTriple = DEFAULT_F_FS
    """Perp-Neg: (a, b, c) of the front negative's weight between front and side views."""
    perp_neg_f_sf: WeightTriple = DEFAULT_F_SF
    """Perp-Neg: (a, b, c) of the side negative's weight between front and side views."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown method '{self.method}': use {', '.join(METHODS[:-1])} or {METHODS[-1]}")
        for name in ("lambda_entropy", "guidance_scale"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"--{name.replace('_', '-')} must be a finite number, got {getattr(self, name)}")
        if not 0.0 <= self.lambda_entropy <= 1.0:
            raise ConfigError(f"--lambda-entropy must be in [0, 1], got {self.lambda_entropy}")
        if self.guidance_scale < 0:
            raise ConfigError(f"--guidance-scale must be >= 0, got {self.guidance_scale}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(f"--grad-clip must be > 0, got {self.grad_clip}")
        for name in ("perp_neg_f_sb", "perp_neg_f_fsb", "perp_neg_f_fs", "perp_neg_f_sf"):
            triple = getattr(self, name)
            flag = f"--{name.replace('_', '-')}"
            if len(triple) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in triple):
                raise ConfigError(f"{flag} must be three finite numbers (a b c of a exp(-b r) + c), got {triple}")

    @property
    def perp_neg_weights(self) -> PerpNegWeights:
        """The four weight functions of Perp-Neg (``priors.perp_neg``), from the perp_neg_f_* triples."""
        return PerpNegWeights(self.perp_neg_f_sb, self.perp_neg_f_fsb, self.perp_neg_f_fs, self.perp_neg_f_sf)

    @property
    def effective_lambda(self) -> float:
        """The lambda of eq. 9 this method uses (``rule.entropy_weight``)."""
        return entropy_weight(self.method, self.lambda_entropy)

    @property
    def needs_psi(self) -> bool:
        return self.method != "sds"


@dataclass
class DistillationOutput:
    loss: Tensor
    """Scalar to backpropagate into theta."""
    latents: Tensor
    """[B, 4, h, w] detached latents (psi's training data)."""
    timesteps: Tensor
    """[B] the t used."""
    grad: Tensor
    """[B, 4, h, w] w(t) * bracket after nan_to_num and clipping (its batch mean reaches the latents)."""


class ScoreDistillation:
    """Ties phi (a ``Prior``), psi (a ``ScoreEstimator``, None for SDS), the timestep schedule and the update rule
    together for one prompt."""

    def __init__(
        self,
        prior: Prior,
        text: TextEmbeddings,
        config: DistillationConfig,
        schedule: TimestepSchedule,
        psi: ScoreEstimator | None = None,
    ):
        if config.needs_psi and psi is None:
            raise ValueError(f"{config.method} needs the estimator psi")
        self.prior, self.text, self.config, self.schedule, self.psi = prior, text, config, schedule, psi

    def step(
        self, images: Tensor, cameras: Cameras, progress: float, generator: torch.Generator | None = None
    ) -> DistillationOutput:
        """Rendered images [B, 3, H, W] in [0, 1] (with gradient) -> loss and what psi trains on."""
        prior, cfg = self.prior, self.config
        latents = prior.encode(images, approximate=prior.approximate_encoder)
        batch = latents.shape[0]
        gen_device = generator.device if generator is not None else latents.device
        timesteps = self.schedule.sample(progress, batch, prior.alphas_cumprod.cpu(), generator=_cpu(generator))
        timesteps = timesteps.to(latents.device)
        noise = torch.randn(latents.shape, generator=generator, device=gen_device).to(latents.device)
        with torch.no_grad():
            x_t = prior.add_noise(latents.detach(), noise, timesteps)
            if cfg.perp_neg:  # phi's guidance only; psi's terms below are the same either way
                positive, negatives, weights = self.text.perp_neg(
                    cameras.azimuth, cameras.elevation, cfg.perp_neg_weights
                )
                eps_phi = prior.eps_perp_neg(
                    x_t, timesteps, positive, negatives, weights, self.text.negative, cfg.guidance_scale
                )
            else:
                cond = self.text.conditional(cameras.azimuth, cameras.elevation)
                eps_phi = prior.eps(x_t, timesteps, cond, self.text.negative, cfg.guidance_scale)
            eps_cam = eps_null = None
            lam = cfg.effective_lambda
            if cfg.needs_psi:  # only the terms eq. 9 weighs by a non-zero factor
                cams = cameras.embedding().to(latents.device)
                if 0.0 < lam < 1.0:
                    eps_cam, eps_null = self.psi.eps_camera_and_null(x_t, timesteps, self.text.plain, cams, noise)
                elif lam == 0.0:
                    eps_cam = self.psi.eps(x_t, timesteps, self.text.plain, cams, noise)
                else:
                    eps_null = self.psi.eps(x_t, timesteps, self.text.plain, None, noise)
            bracket = distillation_bracket(cfg.method, eps_phi, noise.float(), eps_cam, eps_null, lam)
            grad = weight_of_t(prior.alphas_cumprod, timesteps, cfg.weighting).view(-1, 1, 1, 1) * bracket
        loss, grad = distillation_loss(latents, grad, cfg.grad_clip)
        return DistillationOutput(loss=loss, latents=latents.detach(), timesteps=timesteps, grad=grad)

    def update_psi(
        self,
        latents: Tensor,
        cameras: Cameras,
        generator: torch.Generator | None = None,
        distill_t: Tensor | None = None,
        progress: float = 0.0,
    ) -> float | None:
        """psi's training on the detached latents (``ScoreEstimator.update``), told this step's distillation
        timesteps ``distill_t`` and the share of the run done, ``progress``; None for SDS and for an estimator that
        does not train. Returns the last loss."""
        if self.psi is None or not self.psi.trains:
            return None
        embedding = cameras.embedding().to(latents.device)
        return self.psi.update(latents, self.text.plain, embedding, generator, distill_t, progress)


def _cpu(generator: torch.Generator | None) -> torch.Generator | None:
    """Timesteps are drawn on the CPU; only a CPU generator can draw them."""
    return generator if generator is None or generator.device.type == "cpu" else None
