"""Diffusion knowledge shared by phi and psi: the forward process (``process``) and the exact score of a noised
empirical distribution (``mixture``)."""

from .mixture import log_mean_exp, mixture_eps, mixture_log_kernel, mixture_logits, posterior_mean
from .process import (
    SD_BETA_SCHEDULE,
    LossWeighting,
    PredictionType,
    add_noise,
    alpha_sigma,
    eps_from_prediction,
    loss_weight,
    prediction_target,
    sd_alphas_cumprod,
)

__all__ = [
    "SD_BETA_SCHEDULE",
    "LossWeighting",
    "PredictionType",
    "add_noise",
    "alpha_sigma",
    "eps_from_prediction",
    "log_mean_exp",
    "loss_weight",
    "mixture_eps",
    "mixture_log_kernel",
    "mixture_logits",
    "posterior_mean",
    "prediction_target",
    "sd_alphas_cumprod",
]
