"""g(theta, c): the differentiable Gaussian-splatting renderer.

``render(scene, cameras, width, height, background)`` picks the backend from the scene's device
(``resolve_backend``): gsplat's CUDA ``rasterization`` for CUDA tensors when its kernels load, and our pure-PyTorch
sparse renderer (``cpu.py``, plain torch, so it runs on CPU and CUDA tensors alike) otherwise. Both follow gsplat
1.5's conventions (``projection.py``, ``cpu.py``) so their images agree.

Backends: ``gsplat`` (CUDA only), ``torch`` (the sparse PyTorch renderer; ``cpu`` is its old name), ``dense``
(every Gaussian at every pixel: the slow test oracle), and ``auto``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..cameras import Cameras
from ..errors import UserError
from ..scene import GaussianScene
from ..sh import eval_sh
from .cpu import rasterize_sparse
from .dense import rasterize_dense
from .gsplat_backend import probe_gsplat, rasterize_gsplat
from .projection import project_gaussians

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


_fallback_noted = False


def _notice(line: str) -> None:
    from ..progress import console

    console.print(f"[yellow]{line}[/yellow]")


def resolve_backend(requested: str, device: torch.device | str) -> str:
    """The concrete backend for ``requested`` on ``device``: "gsplat", "torch" or "dense".

    auto: gsplat on CUDA when its kernels load (probed once per process, building them first if needed, with a
    notice), else the PyTorch renderer, with a one-line notice when a CUDA device had to fall back.
    gsplat: refused in one ``UserError`` line naming the fix when it cannot run here.
    """
    global _fallback_noted
    device = torch.device(device)
    requested = "torch" if requested == "cpu" else requested
    if requested in BACKENDS and requested != "gsplat":
        return requested
    if requested not in ("auto", "gsplat"):
        raise ValueError(f"unknown backend {requested!r}: use auto, {', '.join(BACKENDS)}")
    if device.type != "cuda":
        if requested == "gsplat":
            raise UserError("--backend gsplat needs a CUDA device: use --backend torch (or auto) on this machine")
        return "torch"
    from ..progress import stage

    with stage("checking that gsplat's CUDA kernels load (its first run here builds them: minutes)"):
        probe = probe_gsplat(announce=_notice)
    if probe.ok:
        return "gsplat"
    if requested == "gsplat":
        raise UserError(
            f"--backend gsplat cannot run: {probe.reason}; or use --backend torch (slower, no build needed)"
        )
    if not _fallback_noted:
        _fallback_noted = True
        _notice(
            f"{probe.reason}: rendering with esd-gs's PyTorch renderer on CUDA instead (slower; --backend torch "
            "skips this check)"
        )
    return "torch"


def _rasterize_gsplat(scene: GaussianScene, cams: Cameras, width: int, height: int, bg: Tensor, depth_chunks: int):
    """gsplat's CUDA rasterization (``gsplat_backend.py``); ``depth_chunks`` does not apply."""
    rgb, alpha, depth, info = rasterize_gsplat(
        scene.means,
        scene.quats,
        scene.scales,
        scene.opacities,
        scene.sh,
        scene.sh_degree,
        cams.viewmats(),
        cams.intrinsics(width, height),
        width,
        height,
        bg,
        EPS2D,
        NEAR_PLANE,
    )
    if info["means2d"].requires_grad:
        info["means2d"].retain_grad()
    return rgb, alpha, depth, info


def _rasterize_pytorch(
    scene: GaussianScene, cams: Cameras, width: int, height: int, bg: Tensor, depth_chunks: int, dense: bool
):
    """Our projection (``projection.py``), SH colours, then the sparse compositor (``cpu.py``) or, with ``dense``, the
    every-Gaussian-at-every-pixel oracle (``dense.py``, which ignores ``depth_chunks``)."""
    opacities = scene.opacities
    proj = project_gaussians(
        scene.means,
        scene.quats,
        scene.scales,
        opacities,
        cams.viewmats(),
        cams.intrinsics(width, height),
        width,
        height,
        EPS2D,
        NEAR_PLANE,
    )
    if proj.means2d.requires_grad:
        proj.means2d.retain_grad()
    # View-dependent colour: direction from the camera centre to each Gaussian (as gsplat).
    dirs = scene.means[None, :, :] - cams.positions[:, None, :]  # [B, N, 3]
    sh = scene.sh
    colors = torch.clamp_min(eval_sh(scene.sh_degree, dirs, sh[None].expand(len(cams), -1, -1, -1)) + 0.5, 0.0)
    if dense:
        rgb, alpha, acc_depth = rasterize_dense(proj, colors, opacities, width, height, bg)
    else:
        rgb, alpha, acc_depth = rasterize_sparse(proj, colors, opacities, width, height, bg, depth_chunks)
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
    return rgb, alpha, depth, info


Rasterizer = Callable[[GaussianScene, Cameras, int, int, Tensor, int], tuple[Tensor, Tensor, Tensor, dict]]
"""``(scene, cameras on the scene's device, width, height, background [B, 3], depth_chunks)`` -> (rgb [B, H, W, 3],
alpha [B, H, W, 1], expected depth [B, H, W, 1], the densification ``info`` of ``RenderOutput``), channels last."""

BACKENDS: dict[str, Rasterizer] = {
    "gsplat": _rasterize_gsplat,
    "torch": functools.partial(_rasterize_pytorch, dense=False),
    "dense": functools.partial(_rasterize_pytorch, dense=True),
}
"""Every backend by name: a new one adds its module and one entry here (``auto`` picks among them)."""
TEST_ONLY = ("dense",)
"""Backends no user picks (``--backend`` leaves them out)."""
Backend = Literal[("auto", *BACKENDS)]
UserBackend = Literal[("auto", *(name for name in BACKENDS if name not in TEST_ONLY))]
"""The backends a user picks from (``--backend`` of generate and render): all but the test oracle."""


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
        backend: "auto" (``resolve_backend``), or force "gsplat" (CUDA only), "torch" (sparse PyTorch, any device) or
            "dense" (slow reference).
        depth_chunks: torch backend only: composite in this many front-to-back depth slices with early termination
            (faster for opaque scenes at high resolution; the same image up to float rounding).
    """
    device, dtype = scene.device, scene.means.dtype
    cams = cameras.to(device, dtype)
    bg = _background_tensor(background, len(cams), device, dtype)
    rasterize = BACKENDS[resolve_backend(backend, device)]
    rgb, alpha, depth, info = rasterize(scene, cams, width, height, bg, depth_chunks)
    return RenderOutput(
        rgb=rgb.permute(0, 3, 1, 2),
        alpha=alpha.permute(0, 3, 1, 2),
        depth=depth.permute(0, 3, 1, 2),
        info=info,
    )


__all__ = [
    "BACKENDS",
    "Backend",
    "UserBackend",
    "render",
    "resolve_backend",
    "RenderOutput",
    "project_gaussians",
    "rasterize_sparse",
    "rasterize_dense",
]
