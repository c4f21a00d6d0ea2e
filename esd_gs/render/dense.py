"""A straightforward dense rasterizer: every Gaussian evaluated at every pixel.

Same image formation and thresholds as ``cpu.rasterize_sparse`` (see that module), written the obvious way with
an [N, H*W] tensor per camera and ``cumprod`` along depth order. It is the independent reference the tests compare
the sparse renderer with, and the baseline of ``benchmarks/bench_render.py``. Memory grows as N * H * W: use it
only on small problems.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .cpu import MAX_ALPHA, TRANSMITTANCE_STOP
from .projection import ALPHA_THRESHOLD, Projected


def rasterize_dense(
    proj: Projected,
    colors: Tensor,
    opacities: Tensor,
    width: int,
    height: int,
    backgrounds: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Same arguments and results as ``rasterize_sparse``."""
    C, N = proj.depths.shape
    D = colors.shape[-1]
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=colors.dtype) + 0.5, torch.arange(width, dtype=colors.dtype) + 0.5, indexing="ij"
    )
    pixels = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1)  # [HW, 2]
    out_c, out_a, out_d = [], [], []
    for cam in range(C):
        order = torch.argsort(proj.depths[cam].detach())
        visible = (proj.radii[cam] > 0).all(dim=-1)[order]
        m2d = proj.means2d[cam][order]
        con = proj.conics[cam][order]
        delta = m2d[:, None, :] - pixels[None, :, :]  # [N, HW, 2]
        sigma = (
            0.5 * (con[:, 0:1] * delta[..., 0] ** 2 + con[:, 2:3] * delta[..., 1] ** 2)
            + con[:, 1:2] * delta[..., 0] * delta[..., 1]
        )
        alpha = torch.clamp_max(opacities[order][:, None] * torch.exp(-sigma), MAX_ALPHA)
        use = visible[:, None] & (sigma >= 0) & (alpha >= ALPHA_THRESHOLD)
        alpha = torch.where(use, alpha, torch.zeros_like(alpha))
        one_minus = 1.0 - alpha
        t_incl = torch.cumprod(one_minus, dim=0)
        t_excl = torch.cat([torch.ones_like(t_incl[:1]), t_incl[:-1]], dim=0)
        counted = (t_incl > TRANSMITTANCE_STOP).detach()
        weight = alpha * t_excl * counted  # [N, HW]
        color = weight.T @ colors[cam][order]  # [HW, D]
        acc = weight.sum(0)
        depth = weight.T @ proj.depths[cam][order]
        if backgrounds is not None:
            color = color + (1.0 - acc)[:, None] * backgrounds[cam][None, :]
        out_c.append(color.reshape(height, width, D))
        out_a.append(acc.reshape(height, width, 1))
        out_d.append(depth.reshape(height, width, 1))
    return torch.stack(out_c), torch.stack(out_a), torch.stack(out_d)
