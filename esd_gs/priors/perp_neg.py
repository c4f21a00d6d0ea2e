"""Perp-Neg: phi's text guidance with view-dependent negative prompts whose scores count only where they are
perpendicular to the positive prompt's (Armandpour et al. 2023, "Re-imagine the Negative Prompt Algorithm",
arXiv 2304.04968). Pure functions; ``UNetPrior.eps_perp_neg`` runs the UNet passes they combine.

Conventions (threestudio's parametrisation of the paper's view weights, its defaults):

- Azimuths and elevations are degrees, azimuth 0 the object's front (``cameras.py``); azimuths are wrapped to
  [-180, 180) and only |azimuth| counts (the two sides are the same "side view").
- ``views`` are the four view-dependent text conditions in ``prompts.DIRECTIONS`` order (front, side, back,
  overhead), [4, ...] (Stable Diffusion: [4, 77, D] CLIP hidden states).
- Each camera gets one positive condition and K = 2 negative conditions with weights w_i <= 0; the weights are
  relative to the guidance scale s (they sit inside its bracket, ``perp_neg_guidance``).
- Score tensors are [B, ...] (latent noise predictions [B, C, h, w]); inner products sum over every non-batch dim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..cameras import wrap_azimuth
from .prompts import DIRECTIONS, OVERHEAD_ELEVATION

WeightTriple = tuple[float, float, float]
"""(a, b, c) of the shifted exponential f(r) = a exp(-b r) + c."""

DEFAULT_F_SB: WeightTriple = (1.0, 0.5, -0.606)
"""side -> back half (|azimuth| >= 90): the side negative's weight, f_sb(r) with r = 1 at the side, 0 at the back."""
DEFAULT_F_FSB: WeightTriple = (1.0, 0.5, 0.967)
"""side -> back half: the front negative's weight f_fsb(r)."""
DEFAULT_F_FS: WeightTriple = (4.0, 0.5, -2.426)
"""front -> side half (|azimuth| < 90): the front negative's weight f_fs(r), r = 1 at the front (f_fs(1) = 0)."""
DEFAULT_F_SF: WeightTriple = (4.0, 0.5, -2.426)
"""front -> side half: the side negative's weight f_sf(1 - r)."""

PERP_EPSILON = 1e-6
"""The floor of <y, y> in the projection (a zero positive direction removes nothing)."""


@dataclass(frozen=True)
class PerpNegWeights:
    """The four shifted exponentials that weigh the negative views (threestudio's defaults)."""

    f_sb: WeightTriple = DEFAULT_F_SB
    f_fsb: WeightTriple = DEFAULT_F_FSB
    f_fs: WeightTriple = DEFAULT_F_FS
    f_sf: WeightTriple = DEFAULT_F_SF


def shifted_exponential(r: Tensor, triple: WeightTriple) -> Tensor:
    """f(r) = a exp(-b r) + c, elementwise (threestudio's parametrisation of Perp-Neg's view weights)."""
    a, b, c = triple
    return a * torch.exp(-b * r) + c


def perpendicular_component(x: Tensor, y: Tensor) -> Tensor:
    """x minus its projection on y, per batch element (Perp-Neg's perpendicular gradient, arXiv 2304.04968):
    x_perp = x - (<x, y> / max(<y, y>, 1e-6)) y, <., .> summed over every dim but the first; [B, ...] -> [B, ...]."""
    dims = tuple(range(1, x.dim()))
    dot = (x * y).sum(dim=dims, keepdim=True)
    norm2 = (y * y).sum(dim=dims, keepdim=True).clamp_min(PERP_EPSILON)
    return x - (dot / norm2) * y


def view_conditions(
    views: Tensor, azimuth: Tensor, elevation: Tensor, weights: PerpNegWeights | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Each camera's positive condition, two negative conditions and their weights (Perp-Neg's view interpolation,
    in threestudio's form):

    - overhead (elevation > 60 deg): positive = overhead; negatives [overhead, overhead] with weights [0, 0];
    - |a| < 90: r = 1 - |a|/90; positive = r front + (1 - r) side; negatives [front, side] with weights
      [-f_fs(r), -f_sf(1 - r)];
    - |a| >= 90: r = 2 - |a|/90; positive = r side + (1 - r) back; negatives [side, front] with weights
      [-f_sb(r), -f_fsb(r)].

    ``views`` [4, ...] in ``DIRECTIONS`` order; azimuth, elevation [B] degrees. Returns positive [B, ...] (the
    dtype of ``views``), negatives [B, 2, ...] and weights [B, 2] float32, on ``views``' device. ``weights``: the
    four weight functions, threestudio's defaults when None.
    """
    weights = weights or PerpNegWeights()
    front, side, back, overhead = (views[DIRECTIONS.index(n)] for n in ("front", "side", "back", "overhead"))
    device = views.device
    az = wrap_azimuth(azimuth.float()).abs().to(device)
    top = (elevation.float() > OVERHEAD_ELEVATION).to(device)
    front_half = az < 90.0
    r = torch.where(front_half, 1.0 - az / 90.0, 2.0 - az / 90.0)  # front half: 1 front, 0 side; else 1 side, 0 back

    shape = (-1,) + (1,) * (views.dim() - 1)
    rv = r.view(shape)
    near, far = torch.where(front_half.view(shape), front, side), torch.where(front_half.view(shape), side, back)
    positive = (rv * near.float() + (1.0 - rv) * far.float()).to(views.dtype)
    first = near  # front half: [front, side]; back half: [side, front]
    second = torch.where(front_half.view(shape), side, front)
    w_first = torch.where(front_half, -shifted_exponential(r, weights.f_fs), -shifted_exponential(r, weights.f_sb))
    w_second = torch.where(
        front_half, -shifted_exponential(1.0 - r, weights.f_sf), -shifted_exponential(r, weights.f_fsb)
    )

    top_v = top.view(shape)
    positive = torch.where(top_v, overhead, positive)
    first = torch.where(top_v, overhead, first)
    second = torch.where(top_v, overhead, second)
    w = torch.stack([w_first, w_second], dim=1).masked_fill(top[:, None], 0.0)
    return positive, torch.stack([first, second], dim=1), w.float()


def perp_neg_guidance(
    eps_uncond: Tensor, eps_positive: Tensor, eps_negatives: Tensor, weights: Tensor, guidance_scale: float
) -> Tensor:
    """Perp-Neg's guided noise prediction (arXiv 2304.04968's perpendicular negative guidance, in threestudio's
    form: the weights inside the guidance bracket, so they are relative to s):
    eps = eps_u + s ((eps_+ - eps_u) + sum_i w_i perp(eps_i - eps_u, eps_+ - eps_u)).

    eps_uncond, eps_positive [B, ...]; eps_negatives [B, K, ...]; weights [B, K] (w_i <= 0 push away from the
    negative views' perpendicular part). All weights zero gives plain classifier-free guidance with the positive."""
    if not math.isfinite(guidance_scale):
        raise ValueError(f"guidance scale must be finite, got {guidance_scale}")
    positive = eps_positive - eps_uncond
    shape = (-1,) + (1,) * (positive.dim() - 1)
    total = positive
    for i in range(eps_negatives.shape[1]):
        total = total + weights[:, i].view(shape) * perpendicular_component(eps_negatives[:, i] - eps_uncond, positive)
    return eps_uncond + guidance_scale * total
