"""The exact noise prediction of a noised empirical distribution (a mixture of Dirac deltas).

For data x_1..x_K (equally likely) and the forward process x_t = alpha_t x_0 + sigma_t eps, the noised density is
p_t(x) = (1/K) sum_k N(x; alpha_t x_k, sigma_t^2 I), whose score gives the ideal denoiser (Tweedie):

    E[x_0 | x_t] = sum_k w_k x_k,      w = softmax_k( -||x_t - alpha_t x_k||^2 / (2 sigma_t^2) )
    eps(x_t, t)  = (x_t - alpha_t E[x_0 | x_t]) / sigma_t  =  -sigma_t grad_x log p_t(x_t)

The squared distances are taken from explicit differences (not the |a|^2 - 2ab + |b|^2 expansion, which cancels
catastrophically when sigma_t is small), in float32, over chunks of the data so memory stays bounded; the softmax
is combined across chunks in log space.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .process import alpha_sigma


def posterior_mean(x_t: Tensor, data: Tensor, alpha: Tensor, sigma: Tensor, chunk: int = 64) -> Tensor:
    """E[x_0 | x_t] for x_t [B, ...], data [K, ...] (same trailing shape), alpha and sigma [B]."""
    batch = x_t.shape[0]
    flat_x = x_t.reshape(batch, -1).float()
    flat_data = data.reshape(data.shape[0], -1).float()
    alpha = alpha.float().view(batch, 1)
    inv_two_var = 1.0 / (2.0 * sigma.float().view(batch, 1) ** 2)
    running_max = torch.full((batch, 1), -float("inf"), device=x_t.device)
    weight_sum = torch.zeros(batch, 1, device=x_t.device)
    weighted = torch.zeros_like(flat_x)
    for start in range(0, flat_data.shape[0], chunk):
        block = flat_data[start : start + chunk]  # [k, D]
        dist2 = (flat_x[:, None, :] - alpha[:, :, None] * block[None, :, :]).square().sum(-1)  # [B, k]
        logits = -dist2 * inv_two_var
        new_max = torch.maximum(running_max, logits.max(dim=1, keepdim=True).values)
        rescale = torch.exp(running_max - new_max)
        w = torch.exp(logits - new_max)
        weight_sum = weight_sum * rescale + w.sum(dim=1, keepdim=True)
        weighted = weighted * rescale + w @ block
        running_max = new_max
    return (weighted / weight_sum).reshape(x_t.shape)


def mixture_eps(x_t: Tensor, data: Tensor, alphas_cumprod: Tensor, timesteps: Tensor, chunk: int = 64) -> Tensor:
    """The exact eps prediction for the empirical distribution ``data`` at integer ``timesteps`` [B]."""
    alpha, sigma = alpha_sigma(alphas_cumprod, timesteps.to(x_t.device))
    mean = posterior_mean(x_t, data, alpha, sigma, chunk)
    alpha, sigma = alpha.view(-1, *([1] * (x_t.dim() - 1))), sigma.view(-1, *([1] * (x_t.dim() - 1)))
    return (x_t.float() - alpha * mean) / sigma


def mixture_logits(x_t: Tensor, data: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """-||x_t - alpha_t x_k||^2 / (2 sigma_t^2) for every sample and data point: [B, K], float64. x_t [B, ...],
    data [K, ...], alpha and sigma [B]. Unlike ``posterior_mean`` the squared distances come from the
    |a|^2 - 2ab + |b|^2 expansion (one matrix product), in float64: its rounding error (~1e-16 |x|^2) is negligible
    against sigma_t^2 for t >= 1."""
    batch = x_t.shape[0]
    flat_x = x_t.reshape(batch, -1).double()
    flat_data = data.reshape(data.shape[0], -1).double()
    alpha = alpha.double().view(batch, 1)
    dist2 = (
        flat_x.square().sum(1, keepdim=True)
        - 2.0 * alpha * (flat_x @ flat_data.T)
        + alpha.square() * flat_data.square().sum(1)[None, :]
    ).clamp_min(0.0)
    return -dist2 / (2.0 * sigma.double().view(batch, 1) ** 2)


def log_mean_exp(logits: Tensor, exclude: Tensor | None = None) -> Tensor:
    """log of the mean of exp(logits) over the last dim ([B, K] -> [B]); ``exclude`` [B] (optional) names one column
    per row to leave out (the mean is then over K - 1)."""
    count = logits.shape[1]
    if exclude is not None:
        rows = torch.arange(logits.shape[0], device=logits.device)
        logits = logits.index_put((rows, exclude.to(logits.device)), torch.tensor(-float("inf"), dtype=logits.dtype))
        count -= 1
    return torch.logsumexp(logits, dim=1) - math.log(count)


def mixture_log_kernel(
    x_t: Tensor, data: Tensor, alpha: Tensor, sigma: Tensor, exclude: Tensor | None = None
) -> Tensor:
    """log p_t(x_t) + (D/2) log(2 pi sigma_t^2) for the noised empirical distribution of ``data``: [B], i.e.
    log (1/K) sum_k exp(-||x_t - alpha_t x_k||^2 / (2 sigma_t^2)) (the Gaussian's normaliser left out: it is the
    same for every distribution noised to the same t, so it cancels from their log ratios).

    x_t [B, ...], data [K, ...], alpha and sigma [B]; float64 out (``mixture_logits``). ``exclude`` [B] (optional)
    names one data index per sample to leave out of its sum (the mean is then over K - 1): the leave-one-out
    estimate of ``monitors.objective``."""
    return log_mean_exp(mixture_logits(x_t, data, alpha, sigma), exclude)
