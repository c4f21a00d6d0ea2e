"""The value of ESD's objective for a scene, with exact densities: which scene does the paper's objective prefer?

Theorem 1 writes ESD's objective (eq. 7) as two KL divergences to the prior's noised image distribution p_t:

    J(theta, lambda) = lambda E_t[w(t) KL(q_t(x | y) || p_t)] + (1 - lambda) E_{t,c}[w(t) KL(q_t(x | c, y) || p_t)]

up to a constant: the **marginal** term compares the distribution of renders over all training cameras (the camera
marginalised, what the entropy acts on) with the prior; the **conditional** term is SDS's per-view objective (eq. 4).
ESD with the exact scores descends J; at lambda = 1 only the marginal term is left.

With the synthetic prior every density here is known: p_t is the noised empirical distribution of the prior's K
images (exact, by construction), and for a deterministic renderer q_t(x | c) = N(alpha_t g(theta, c), sigma_t^2 I).
The Monte Carlo estimates use x = alpha_t r_i + sigma_t eps over a bank of N renders r_i at training cameras, each
with antithetic noise (eps and -eps, which makes the estimate exact when q and p are single Gaussians):

- conditional: mean of log N(x; alpha_t r_i, sigma_t^2 I) - log p_t(x) (exact up to Monte Carlo);
- marginal: log q_t(x) is itself estimated from the bank. Counting each sample's own render (``marginal_upper``)
  over-estimates E[log q_t] (the contrastive bound: Poole et al., 2019), leaving it out (``marginal_lower``)
  under-estimates it (Jensen's inequality on the leave-one-out density), so the true marginal KL lies between the
  two in expectation. When one scene's upper value is below another's lower value by more than the Monte Carlo
  noise of the cameras and noise drawn (``seed``: compare several), the objective prefers the first.

Gaussian normalisers cancel between the log-densities (``diffusion.mixture_log_kernel``). Values are in nats per
image (not per pixel).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from ..cameras import OrbitSampler
from ..diffusion import alpha_sigma, log_mean_exp, mixture_log_kernel, mixture_logits
from ..distillation.rule import weight_of_t
from ..render.views import render_batches
from ..scene import GaussianScene

AZIMUTH_ONLY = OrbitSampler(elevation=(15.0, 15.0), fovy=(50.0, 50.0))
"""Cameras at one elevation and field of view (azimuth uniform, radius as the default): a one-dimensional family of
views that a bank of about a thousand renders covers densely, so that the marginal term's bracket is tight (in the
default three-dimensional family of elevation, azimuth and field of view it is not, at t below about 600)."""


@dataclass
class KLEstimate:
    """The two KL terms of Theorem 1 at one t, nats per image."""

    marginal_upper: float
    """KL(q_t(x | y) || p_t) with each sample's own render in the bank (an upper bound in expectation)."""
    marginal_lower: float
    """The same with it left out (a lower bound in expectation)."""
    conditional: float
    """E_c KL(q_t(x | c, y) || p_t) (SDS's objective, eq. 4)."""


def kl_terms(
    renders: Tensor,
    prior_images: Tensor,
    alpha: float,
    sigma: float,
    generator: torch.Generator,
    draws: int = 1,
    batch: int = 256,
) -> KLEstimate:
    """Theorem 1's KL terms at one (alpha_t, sigma_t) for q = the bank ``renders`` [N, ...] (N >= 2, at cameras
    drawn from the training distribution) and p = the prior's images [K, ...], both in the prior's pixel space
    ([-1, 1]). Each render gets ``draws`` antithetic pairs of noise."""
    count = renders.shape[0]
    if count < 2:
        raise ValueError("the leave-one-out estimate needs a bank of at least two renders")
    upper, lower, conditional, samples = 0.0, 0.0, 0.0, 0
    for _ in range(draws):
        noise = torch.randn(renders.shape, generator=generator, dtype=torch.float64)
        for sign in (1.0, -1.0):
            for start in range(0, count, batch):
                index = torch.arange(start, min(start + batch, count))
                eps = sign * noise[index]
                x_t = alpha * renders[index].double() + sigma * eps
                a = torch.full((len(index),), alpha, dtype=torch.float64)
                s = torch.full((len(index),), sigma, dtype=torch.float64)
                log_p = mixture_log_kernel(x_t, prior_images, a, s)
                to_bank = mixture_logits(x_t, renders, a, s)  # once, for both estimates of log q_t
                log_q = log_mean_exp(to_bank)
                log_q_loo = log_mean_exp(to_bank, exclude=index)
                log_q_given_c = -0.5 * eps.flatten(1).square().sum(1)  # log N(x; alpha r_i, sigma^2 I) + normaliser
                upper += float((log_q - log_p).sum())
                lower += float((log_q_loo - log_p).sum())
                conditional += float((log_q_given_c - log_p).sum())
                samples += len(index)
    return KLEstimate(upper / samples, lower / samples, conditional / samples)


@dataclass
class ObjectiveCurve:
    """Theorem 1's terms of one scene over a grid of t (evenly spaced, so their mean is E_t over that range)."""

    timesteps: list[int]
    weights: list[float]
    """w(t) = sigma_t^2 (``distillation.rule.weight_of_t``, the paper's omega)."""
    terms: list[KLEstimate]

    def value(self, lambda_entropy: float = 1.0, bound: str = "upper") -> float:
        """J(theta, lambda) of eq. 7 by Theorem 1 (constant dropped), E_t as the mean over the grid; the marginal
        term's ``upper`` or ``lower`` estimate."""
        if bound not in ("upper", "lower"):
            raise ValueError(f"bound must be 'upper' or 'lower', got {bound!r}")
        total = 0.0
        for w, term in zip(self.weights, self.terms, strict=True):
            marginal = term.marginal_upper if bound == "upper" else term.marginal_lower
            total += w * (lambda_entropy * marginal + (1.0 - lambda_entropy) * term.conditional)
        return total / len(self.terms)

    def to_dict(self) -> dict:
        return {
            "timesteps": self.timesteps,
            "weights": self.weights,
            "terms": [asdict(term) for term in self.terms],
            "J_lambda1": [self.value(1.0, "lower"), self.value(1.0, "upper")],
            "J_lambda0": self.value(0.0),
        }


@torch.no_grad()
def scene_objective(
    scene: GaussianScene,
    prior_images: Tensor,
    alphas_cumprod: Tensor,
    sampler: OrbitSampler,
    resolution: int,
    timesteps: tuple[int, ...] = (50, 150, 250, 350, 450, 550, 650, 750, 850, 950),
    num_renders: int = 1024,
    background: float = 1.0,
    seed: int = 0,
    draws: int = 1,
) -> ObjectiveCurve:
    """Theorem 1's terms for ``scene`` against the prior's images [K, 3, H, W] in [-1, 1] (``SyntheticPrior``), over
    ``num_renders`` renders at cameras from the training ``sampler`` (seeded: every scene sees the same cameras and
    noise). The renders are clamped to [0, 1] as the prior's images are (a render of opaque colours on the white
    background barely leaves it)."""
    generator = torch.Generator().manual_seed(seed)
    cameras = sampler.sample(num_renders, generator=generator).to(scene.device)
    renders = torch.cat(
        [rgb.clamp(0, 1) * 2.0 - 1.0 for rgb in render_batches(scene, cameras, resolution, background, batch=64)]
    ).cpu()
    prior_images = prior_images.cpu()
    terms, weights = [], []
    for t in timesteps:
        alpha, sigma = alpha_sigma(alphas_cumprod, torch.tensor([t]))
        terms.append(kl_terms(renders, prior_images, float(alpha), float(sigma), generator, draws))
        weights.append(float(weight_of_t(alphas_cumprod, torch.tensor([t]))))
    return ObjectiveCurve(list(timesteps), weights, terms)
