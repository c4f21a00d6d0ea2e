"""Inception Quality and Inception Variety (paper eq. 10) from a classifier's probability table.

    IQ(theta) = E_c [ H[ p(y | g(theta, c)) ] ]        (lower: each view is classified confidently)
    IV(theta) = H[ E_c [ p(y | g(theta, c)) ] ]        (higher: the views spread over many classes)

``probs`` is [V, C]: one row p(y | x_v) per rendered view, each summing to 1. Entropies are in nats.
"""

from __future__ import annotations

import torch
from torch import Tensor


def entropy(probs: Tensor, dim: int = -1) -> Tensor:
    """H[p] = -sum p log p along ``dim`` (0 log 0 = 0), in nats."""
    return -(probs * torch.log(probs.clamp_min(1e-12))).sum(dim=dim)


def inception_quality_variety(probs: Tensor) -> tuple[float, float]:
    """(IQ, IV) of eq. 10 for a [V, C] table of per-view class probabilities."""
    if probs.dim() != 2 or probs.shape[0] == 0:
        raise ValueError(f"probs must be a non-empty [V, C] table, got {tuple(probs.shape)}")
    probs = probs.double()
    return float(entropy(probs).mean()), float(entropy(probs.mean(dim=0)))
