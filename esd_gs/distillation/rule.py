"""The update rule: the score-distillation gradient shared by SDS, VSD and ESD (one code path). ``step.py`` runs it.

With x_t = alpha_t z + sigma_t eps (z: the rendered latents), the update direction on z is

    SDS (eq. 1):           w(t) * (eps_phi(x_t, t, y) - eps)
    VSD (eq. 2):           w(t) * (eps_phi(x_t, t, y) - eps_psi(x_t, t, c, y))
    ESD (eq. 9, Alg. 1):   w(t) * (eps_phi(x_t, t, y) - lambda eps_psi(x_t, t, null, y)
                                   - (1 - lambda) eps_psi(x_t, t, c, y))

so VSD is ESD with lambda = 0. eps_phi carries text classifier-free guidance. The gradient reaches the scene
through the "target trick": loss = 0.5 * ||z - stopgrad(z - g)||^2 / B, whose gradient with respect to z is
exactly g / B (the batch mean of the per-view updates).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Method = Literal["sds", "vsd", "esd"]
METHODS: tuple[Method, ...] = ("sds", "vsd", "esd")
"""The distillation methods, in the order of the paper's equations (1, 2, 9): the one place their names are listed
(``Method`` states the same names as a type; a test checks that they agree). Everything else that lists, checks or
offers methods reads ``METHODS``."""
Weighting = Literal["sigma2", "uniform"]


def entropy_weight(method: Method, lambda_entropy: float) -> float:
    """The lambda of eq. 9 that ``method`` uses: ESD's ``lambda_entropy``; 0 for VSD (eq. 2 is eq. 9 at lambda = 0)
    and for SDS (whose bracket has no psi term)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}")
    if method in ("sds", "vsd"):
        return 0.0
    if not 0.0 <= lambda_entropy <= 1.0:
        raise ValueError(f"lambda_entropy must be in [0, 1], got {lambda_entropy}")
    return lambda_entropy


def weight_of_t(alphas_cumprod: Tensor, timesteps: Tensor, weighting: Weighting = "sigma2") -> Tensor:
    """w(t) per sample [B]: ``sigma2`` = 1 - alphabar_t (DreamFusion, ProlificDreamer), ``uniform`` = 1."""
    abar = alphas_cumprod.to(timesteps.device)[timesteps]
    if weighting == "sigma2":
        return 1.0 - abar
    if weighting == "uniform":
        return torch.ones_like(abar)
    raise ValueError(f"unknown weighting {weighting!r}")


def distillation_bracket(
    method: Method,
    eps_phi: Tensor,
    noise: Tensor,
    eps_psi_camera: Tensor | None = None,
    eps_psi_null: Tensor | None = None,
    lambda_entropy: float = 0.5,
) -> Tensor:
    """The bracket of eq. 1 / 2 / 9 (before w(t)).

    ``eps_psi_camera`` is psi with the camera (needed by VSD, and by ESD when lambda < 1); ``eps_psi_null`` is psi
    with the null camera (needed by ESD when lambda > 0).
    """
    lambda_entropy = entropy_weight(method, lambda_entropy)
    if method == "sds":
        return eps_phi - noise
    bracket = eps_phi
    if lambda_entropy > 0.0:
        if eps_psi_null is None:
            raise ValueError("ESD with lambda > 0 needs eps_psi_null")
        bracket = bracket - lambda_entropy * eps_psi_null
    if lambda_entropy < 1.0:
        if eps_psi_camera is None:
            raise ValueError("VSD and ESD with lambda < 1 need eps_psi_camera")
        bracket = bracket - (1.0 - lambda_entropy) * eps_psi_camera
    return bracket


def distillation_loss(latents: Tensor, grad: Tensor, grad_clip: float | None = None) -> tuple[Tensor, Tensor]:
    """Target trick: returns (loss, the cleaned grad). d loss / d latents = grad / B exactly.

    ``grad`` is w(t) * bracket; NaN/Inf entries become 0 and, with ``grad_clip``, entries are clamped to
    [-grad_clip, grad_clip] (threestudio's elementwise clip).
    """
    grad = torch.nan_to_num(grad.float(), nan=0.0, posinf=0.0, neginf=0.0)
    if grad_clip is not None:
        grad = grad.clamp(-grad_clip, grad_clip)
    target = (latents - grad.to(latents.dtype)).detach()
    loss = 0.5 * (latents - target).float().square().sum() / latents.shape[0]
    return loss, grad
