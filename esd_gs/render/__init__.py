"""g(theta, c): the differentiable Gaussian-splatting renderer.

``render(scene, cameras, width, height, background)`` picks the backend from the scene's device: gsplat's CUDA
``rasterization`` for CUDA tensors, and the pure-PyTorch sparse renderer (``cpu.py``) otherwise. Both follow gsplat
1.5's conventions (``projection.py``, ``cpu.py``) so their images agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..cameras import Cameras
from ..scene import GaussianScene
from ..sh import eval_sh
from .cpu import rasterize_sparse
from .dense import rasterize_dense
from .gsplat_backend import gsplat_available, rasterize_gsplat
from .projection import project_gaussians

Backend = Literal["auto", "gsplat", "cpu", "dense"]

EPS2D = 0.3
"""Screen-space low-pass added to every 2D covariance (gsplat's default)."""
NEAR_PLANE = 0.01


@dataclass
class RenderOutput:
    """Images are channel-first, as the diffusion models expect them."""

    rgb: Tensor
    """[B, 3, H, W] colour in [0, 1] (may slightly exceed 1 for SH colours above 1; not clamped)."""
    alpha: Tensor
    """[B, 1, H, W] accumulated opacity 1 - T_final."""
    depth: Tensor
    """[B, 1, H, W] expected depth sum(w z) / alpha (camera z; 0 where alpha is 0)."""
    info: dict
    """For densification (gsplat's keys): ``means2d`` [B, N, 2] (gradient retained), ``radii`` [B, N, 2],
    ``width``, ``height``, ``n_cameras``, ``gaussian_ids`` (None: not packed)."""


def _background_tensor(background: Tensor | float | tuple, batch: int, device, dtype) -> Tensor:
    bg = torch.as_tensor(background, dtype=dtype, device=device)
    if bg.dim() == 0:
        bg = bg.expand(3)
    if bg.dim() == 1:
        bg = bg.expand(batch, 3)
    if bg.shape != (batch, 3):
        raise ValueError(f"background must be a scalar, [3] or [B, 3], got {list(bg.shape)}")
    return bg.contiguous()


def render(
    scene: GaussianScene,
    cameras: Cameras,
    width: int,
    height: int,
    background: Tensor | float | tuple = 1.0,
    backend: Backend = "auto",
    depth_chunks: int = 1,
) -> RenderOutput:
    """Render ``scene`` from every camera in ``cameras``.

    Args:
        scene: the Gaussians; its device picks the backend when ``backend="auto"``.
        cameras: B cameras (moved to the scene's device and dtype here).
        width, height: image size in pixels.
        background: colour behind the Gaussians: a scalar, an RGB triple, or per camera [B, 3].
        backend: "auto", or force "gsplat" (CUDA only), "cpu" (sparse PyTorch) or "dense" (slow reference).
        depth_chunks: CPU backend only: composite in this many front-to-back depth slices with early termination
            (faster for opaque scenes at high resolution; the same image up to float rounding).
    """
    device, dtype = scene.device, scene.means.dtype
    cams = cameras.to(device, dtype)
    viewmats = cams.viewmats()
    Ks = cams.intrinsics(width, height)
    bg = _background_tensor(background, len(cams), device, dtype)
    if backend == "auto":
        backend = "gsplat" if gsplat_available(device) else "cpu"

    if backend == "gsplat":
        rgb, alpha, depth, info = rasterize_gsplat(
            scene.means, scene.quats, scene.scales, scene.opacities, scene.sh, scene.sh_degree,
            viewmats, Ks, width, height, bg, EPS2D, NEAR_PLANE,
        )
        if info["means2d"].requires_grad:
            info["means2d"].retain_grad()
    elif backend in ("cpu", "dense"):
        opacities = scene.opacities
        proj = project_gaussians(
            scene.means, scene.quats, scene.scales, opacities, viewmats, Ks, width, height, EPS2D, NEAR_PLANE
        )
        if proj.means2d.requires_grad:
            proj.means2d.retain_grad()
        # View-dependent colour: direction from the camera centre to each Gaussian (as gsplat).
        dirs = scene.means[None, :, :] - cams.positions[:, None, :]  # [B, N, 3]
        sh = scene.sh
        colors = torch.clamp_min(eval_sh(scene.sh_degree, dirs, sh[None].expand(len(cams), -1, -1, -1)) + 0.5, 0.0)
        if backend == "cpu":
            rgb, alpha, acc_depth = rasterize_sparse(proj, colors, opacities, width, height, bg, depth_chunks)
        else:
            rgb, alpha, acc_depth = rasterize_dense(proj, colors, opacities, width, height, bg)
        depth = acc_depth / alpha.clamp_min(1e-10)
        info = {
            "means2d": proj.means2d,
            "radii": proj.radii,
            "depths": proj.depths,
            "width": width,
            "height": height,
            "n_cameras": len(cams),
            "gaussian_ids": None,
        }
    else:
        raise ValueError(f"unknown backend {backend!r}")
    return RenderOutput(
        rgb=rgb.permute(0, 3, 1, 2),
        alpha=alpha.permute(0, 3, 1, 2),
        depth=depth.permute(0, 3, 1, 2),
        info=info,
    )


__all__ = ["render", "RenderOutput", "project_gaussians", "rasterize_sparse", "rasterize_dense"]
