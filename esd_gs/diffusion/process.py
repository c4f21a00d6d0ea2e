"""The DDPM forward process and its conventions, shared by every prior and estimator.

- **Schedule**: ``alphas_cumprod`` [T] (alphabar_t), T = 1000 training timesteps; Stable Diffusion's is the
  scaled-linear beta schedule ``SD_BETA_SCHEDULE`` (betas = linspace(sqrt(0.00085), sqrt(0.012), T) ** 2).
- **Forward process** (DDPM eq. 4): x_t = alpha_t z + sigma_t eps, alpha_t = sqrt(alphabar_t),
  sigma_t = sqrt(1 - alphabar_t), for integer timesteps t [B].
- **Predictions**: a network predicts eps ("epsilon") or v = alpha_t eps - sigma_t z ("v_prediction", Salimans & Ho
  2022); eps = sigma_t x_t + alpha_t v recovers the noise from v exactly.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

PredictionType = Literal["epsilon", "v_prediction"]

SD_BETA_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}
"""Stable Diffusion 1.x / 2.x's training noise schedule, in diffusers' ``DDPMScheduler`` config keys."""


def sd_alphas_cumprod() -> Tensor:
    """alphabar_t [T] of ``SD_BETA_SCHEDULE`` (float32, computed in float64 as diffusers does for this schedule)."""
    schedule = SD_BETA_SCHEDULE
    betas = (
        torch.linspace(
            schedule["beta_start"] ** 0.5,
            schedule["beta_end"] ** 0.5,
            schedule["num_train_timesteps"],
            dtype=torch.float64,
        )
        ** 2
    )
    return torch.cumprod(1.0 - betas, dim=0).float()


def alpha_sigma(alphas_cumprod: Tensor, timesteps: Tensor, ndim: int = 1) -> tuple[Tensor, Tensor]:
    """(alpha_t, sigma_t) for integer ``timesteps`` [B], float32, shaped [B, 1, ..., 1] with ``ndim`` dims in all
    (``ndim=x.dim()`` broadcasts against a batch x)."""
    abar = alphas_cumprod.to(timesteps.device)[timesteps].float().view(-1, *([1] * (ndim - 1)))
    return abar.sqrt(), (1.0 - abar).sqrt()


def add_noise(alphas_cumprod: Tensor, latents: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
    """The forward process x_t = alpha_t z + sigma_t eps, in the dtype of ``latents``."""
    alpha, sigma = alpha_sigma(alphas_cumprod, timesteps.to(latents.device), latents.dim())
    return (alpha * latents.float() + sigma * noise.float()).to(latents.dtype)


def eps_from_prediction(
    output: Tensor, x_t: Tensor, alphas_cumprod: Tensor, timesteps: Tensor, prediction_type: PredictionType
) -> Tensor:
    """A network's output -> its noise prediction eps, float32 (v-prediction: eps = sigma_t x_t + alpha_t v)."""
    if prediction_type == "epsilon":
        return output.float()
    if prediction_type != "v_prediction":
        raise ValueError(f"unknown prediction type {prediction_type!r}")
    alpha, sigma = alpha_sigma(alphas_cumprod, timesteps, x_t.dim())
    return sigma * x_t.float() + alpha * output.float()


def prediction_target(
    latents: Tensor, noise: Tensor, alphas_cumprod: Tensor, timesteps: Tensor, prediction_type: PredictionType
) -> Tensor:
    """What a network of ``prediction_type`` is trained to output (eq. 3): eps, or v = alpha_t eps - sigma_t z."""
    if prediction_type == "epsilon":
        return noise
    alpha, sigma = alpha_sigma(alphas_cumprod, timesteps, latents.dim())
    return alpha * noise - sigma * latents


LossWeighting = Literal["prediction", "x0"]


def loss_weight(
    alphas_cumprod: Tensor, timesteps: Tensor, prediction_type: PredictionType, weighting: LossWeighting
) -> Tensor:
    """Per-sample factor [B] on a network's plain MSE to its own target, giving eq. 3's omega(t) of ``weighting``.

    - ``prediction``: 1, the MSE to the network's own target: omega(t) = 1 for an eps network, 1 / alpha_t^2 for a
      v network (its v error is the eps error over alpha_t).
    - ``x0``: the MSE of the network's implied clean image x_0 = (x_t - sigma_t eps) / alpha_t, the same weight on
      the image at every t: omega(t) = sigma_t^2 / alpha_t^2. For a v network the factor is sigma_t^2
      (x_0 error = sigma_t v error), for an eps network sigma_t^2 / alpha_t^2 (x_0 error = sigma_t / alpha_t eps
      error).
    Any positive omega(t) has the same minimiser, the exact score; they differ in how a finite network and a finite
    number of noisy samples share their error over t.
    """
    if weighting == "prediction":
        return torch.ones(timesteps.shape, device=timesteps.device)
    if weighting != "x0":
        raise ValueError(f"unknown loss weighting {weighting!r}")
    alpha, sigma = alpha_sigma(alphas_cumprod, timesteps)
    return sigma**2 if prediction_type == "v_prediction" else (sigma / alpha) ** 2
