"""The CUDA backend: gsplat's ``rasterization`` (gsplat compiles its CUDA kernels on first use)."""

from __future__ import annotations

import torch
from torch import Tensor


def rasterize_gsplat(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    sh: Tensor,
    sh_degree: int,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    backgrounds: Tensor,
    eps2d: float,
    near_plane: float,
) -> tuple[Tensor, Tensor, Tensor, dict]:
    """Render with gsplat. Returns rgb [C,H,W,3], alpha [C,H,W,1], expected depth [C,H,W,1] and gsplat's info."""
    from gsplat import rasterization

    render, alpha, info = rasterization(
        means=means,
        quats=quats,
        scales=scales,
        opacities=opacities,
        colors=sh,
        viewmats=viewmats,
        Ks=Ks,
        width=width,
        height=height,
        sh_degree=sh_degree,
        backgrounds=backgrounds,
        render_mode="RGB+ED",
        eps2d=eps2d,
        near_plane=near_plane,
        packed=False,
        rasterize_mode="classic",
    )
    return render[..., :3], alpha, render[..., 3:4], info


def gsplat_available(device: torch.device) -> bool:
    """gsplat rasterizes only on CUDA tensors."""
    return device.type == "cuda" and torch.cuda.is_available()
