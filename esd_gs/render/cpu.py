"""Sparse front-to-back compositing of screen-space Gaussians in pure PyTorch (the CPU backend).

The image formation is 3DGS's (Kerbl et al. 2023, eq. 3) with gsplat 1.5's numerics:

    sigma_i(p) = 0.5 (a dx^2 + c dy^2) + b dx dy,     (dx, dy) = mean2d_i - p,   (a, b, c) = conic_i
    alpha_i(p) = min(0.999, o_i exp(-sigma_i(p)));  skipped when sigma_i < 0 or alpha_i < 1/255
    C(p)       = sum_i c_i alpha_i T_i + T_final bg,   T_i = prod_{j < i} (1 - alpha_j)

with Gaussians in increasing depth, and a pixel stops at the first Gaussian that would take its transmittance to
1e-4 or below (that Gaussian is not composited). Instead of a dense [N, H, W] evaluation, each Gaussian is
expanded only over the pixels of its screen box (from ``Projected.radii``), giving a list of (pixel, Gaussian)
pairs. Pairs are sorted by (pixel, depth); the per-pixel transmittance is an exclusive cumulative sum of
log(1 - alpha) inside each pixel's run of pairs (in float64, so long runs keep their precision); results are
accumulated with ``index_add``. Everything is plain autograd, so gradients reach every input.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .projection import ALPHA_THRESHOLD, Projected

MAX_ALPHA = 0.999
"""Upper clamp of a single Gaussian's alpha (gsplat, 3DGS)."""
TRANSMITTANCE_STOP = 1e-4
"""A pixel stops compositing before its transmittance would reach this value (gsplat, 3DGS)."""


def _pairs(proj: Projected, width: int, height: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Enumerate (camera*N + gaussian, pixel) pairs over every visible Gaussian's screen box.

    Returns flat Gaussian indices [P] into the [C*N] arrays, pixel x [P], pixel y [P], and the global pixel
    index [P] = camera * H * W + y * W + x.
    """
    C, N = proj.depths.shape
    radii = proj.radii.reshape(C * N, 2)
    visible = (radii > 0).all(dim=-1).nonzero().squeeze(1)  # flat ids
    if visible.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long, device=radii.device)
        return empty, empty, empty, empty
    centre = proj.means2d.detach().reshape(C * N, 2)[visible]
    rad = radii[visible].to(centre.dtype)
    # Pixels whose centres (j + 0.5) can lie inside the box [m - r, m + r].
    x0 = torch.floor(centre[:, 0] - rad[:, 0] - 0.5).clamp(0, width).long()
    x1 = (torch.floor(centre[:, 0] + rad[:, 0] - 0.5) + 1).clamp(0, width).long()
    y0 = torch.floor(centre[:, 1] - rad[:, 1] - 0.5).clamp(0, height).long()
    y1 = (torch.floor(centre[:, 1] + rad[:, 1] - 0.5) + 1).clamp(0, height).long()
    box_w = (x1 - x0).clamp_min(0)
    counts = box_w * (y1 - y0).clamp_min(0)
    keep = counts > 0
    visible, x0, y0, box_w, counts = visible[keep], x0[keep], y0[keep], box_w[keep], counts[keep]
    owner = torch.repeat_interleave(torch.arange(visible.numel(), device=radii.device), counts)
    starts = torch.cumsum(counts, 0) - counts
    local = torch.arange(owner.numel(), device=radii.device) - starts[owner]
    bw = box_w[owner]
    px = x0[owner] + local % bw
    py = y0[owner] + torch.div(local, bw, rounding_mode="floor")
    flat = visible[owner]
    cam = torch.div(flat, N, rounding_mode="floor")
    pix = (cam * height + py) * width + px
    return flat, px, py, pix


def rasterize_sparse(
    proj: Projected,
    colors: Tensor,
    opacities: Tensor,
    width: int,
    height: int,
    backgrounds: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Composite projected Gaussians.

    Args:
        proj: the output of ``project_gaussians`` for C cameras and N Gaussians.
        colors: [C, N, D] per-camera colours (any channel count D).
        opacities: [N] opacities in (0, 1).
        backgrounds: [C, D] colour behind the Gaussians, or None for black.

    Returns:
        colors [C, H, W, D], alphas [C, H, W, 1] (= 1 - T_final), and accumulated depth sum_i z_i alpha_i T_i
        [C, H, W, 1].
    """
    C, N = proj.depths.shape
    D = colors.shape[-1]
    dtype = colors.dtype
    flat, px, py, pix = _pairs(proj, width, height)
    means2d = proj.means2d.reshape(C * N, 2)
    conics = proj.conics.reshape(C * N, 3)
    opac_flat = opacities.expand(C, N).reshape(C * N)

    def alpha_of(ids: Tensor, x: Tensor, y: Tensor, m2d: Tensor, con: Tensor, op: Tensor) -> tuple[Tensor, Tensor]:
        centre = m2d.index_select(0, ids)
        dx = centre[:, 0] - (x.to(dtype) + 0.5)
        dy = centre[:, 1] - (y.to(dtype) + 0.5)
        conic = con.index_select(0, ids)
        sigma = 0.5 * (conic[:, 0] * dx * dx + conic[:, 2] * dy * dy) + conic[:, 1] * dx * dy
        alpha = torch.clamp_max(op.index_select(0, ids) * torch.exp(-sigma), MAX_ALPHA)
        return sigma, alpha

    # 1) Cheap, gradient-free pass to drop pairs that gsplat skips (sigma < 0 or alpha < 1/255).
    with torch.no_grad():
        sigma, alpha = alpha_of(flat, px, py, means2d.detach(), conics.detach(), opac_flat.detach())
        keep = (sigma >= 0) & (alpha >= ALPHA_THRESHOLD)
        flat, px, py, pix = flat[keep], px[keep], py[keep], pix[keep]
        # 2) Order by (pixel, depth): depth rank among all (camera, Gaussian) entries, then pixel-major key.
        depth_rank = torch.empty(C * N, dtype=torch.long, device=flat.device)
        depth_rank[torch.argsort(proj.depths.detach().reshape(C * N))] = torch.arange(C * N, device=flat.device)
        order = torch.argsort(pix * (C * N) + depth_rank[flat])
        flat, px, py, pix = flat[order], px[order], py[order], pix[order]

    # 3) Alpha with gradient on the surviving pairs.
    _, alpha = alpha_of(flat, px, py, means2d, conics, opac_flat)

    # 4) Exclusive transmittance inside each pixel's run, in float64 log space.
    log_one_minus = torch.log1p(-alpha.double())
    inclusive = torch.cumsum(log_one_minus, 0)
    with torch.no_grad():
        run_start = torch.ones_like(pix, dtype=torch.bool)
        if pix.numel() > 1:
            run_start[1:] = pix[1:] != pix[:-1]
        start_index = torch.cummax(torch.where(run_start, torch.arange(pix.numel(), device=pix.device), 0), 0).values
    before_run = (inclusive - log_one_minus).index_select(0, start_index)
    log_t_excl = inclusive - log_one_minus - before_run
    with torch.no_grad():
        # Stop rule: a pair counts only while T * (1 - alpha) > 1e-4 (monotone inside a run).
        counted = (log_t_excl + log_one_minus) > torch.log(torch.tensor(TRANSMITTANCE_STOP, dtype=torch.float64))
    weight = (alpha * torch.exp(log_t_excl).to(dtype))[counted]
    flat, pix = flat[counted], pix[counted]

    # 5) Accumulate.
    total = C * height * width
    color_pairs = colors.reshape(C * N, D).index_select(0, flat) * weight[:, None]
    out_color = torch.zeros(total, D, dtype=dtype, device=colors.device).index_add(0, pix, color_pairs)
    out_alpha = torch.zeros(total, dtype=dtype, device=colors.device).index_add(0, pix, weight)
    depth_pairs = proj.depths.reshape(C * N).index_select(0, flat) * weight
    out_depth = torch.zeros(total, dtype=dtype, device=colors.device).index_add(0, pix, depth_pairs)

    out_color = out_color.reshape(C, height, width, D)
    out_alpha = out_alpha.reshape(C, height, width, 1)
    if backgrounds is not None:
        out_color = out_color + (1.0 - out_alpha) * backgrounds[:, None, None, :]
    return out_color, out_alpha, out_depth.reshape(C, height, width, 1)
