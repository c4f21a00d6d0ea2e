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
accumulated with ``index_add``. Optionally (``depth_chunks`` > 1) the Gaussians are processed front to back in
depth slices, carrying each pixel's transmittance from slice to slice, so pixels that have already stopped cost
nothing in later slices (the early termination gsplat's tile loop has). Everything is plain autograd, so gradients
reach every input.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import UserError
from .projection import ALPHA_THRESHOLD, Projected

MAX_ALPHA = 0.999
"""Upper clamp of a single Gaussian's alpha (gsplat, 3DGS)."""
TRANSMITTANCE_STOP = 1e-4
"""A pixel stops compositing before its transmittance would reach this value (gsplat, 3DGS)."""


BYTES_PER_PAIR = 256
"""Memory budgeted for one (pixel, Gaussian) pair through a forward and backward pass, with headroom."""


def available_memory(device: torch.device) -> int | None:
    """Bytes that can still be allocated on ``device`` (CUDA: free memory; CPU: Linux's MemAvailable), or None."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_pair_memory(pairs: int, device: torch.device) -> None:
    """Refuse, in one line, a render whose pairs would not fit in memory (instead of being killed by the system)."""
    needed = pairs * BYTES_PER_PAIR
    if needed < 1 << 30:  # below 1 GiB: not worth asking
        return
    free = available_memory(device)
    if free is not None and needed > free:
        raise UserError(
            f"this render needs about {needed / 2**30:.0f} GiB for {pairs:,} (pixel, Gaussian) pairs but only "
            f"{free / 2**30:.0f} GiB is free: lower --resolution or --batch-size (or use gsplat on a GPU)"
        )


def _pairs(proj: Projected, visible: Tensor, width: int, height: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Enumerate (camera*N + gaussian, pixel) pairs over the screen boxes of the flat ids ``visible``.

    Returns flat Gaussian indices [P] into the [C*N] arrays, pixel x [P], pixel y [P], and the global pixel
    index [P] = camera * H * W + y * W + x.
    """
    C, N = proj.depths.shape
    radii = proj.radii.reshape(C * N, 2)
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
    check_pair_memory(int(counts.sum()), radii.device)
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
    depth_chunks: int = 1,
) -> tuple[Tensor, Tensor, Tensor]:
    """Composite projected Gaussians.

    Args:
        proj: the output of ``project_gaussians`` for C cameras and N Gaussians.
        colors: [C, N, D] per-camera colours (any channel count D).
        opacities: [N] opacities in (0, 1).
        backgrounds: [C, D] colour behind the Gaussians, or None for black.
        depth_chunks: process the Gaussians front to back in this many depth slices, skipping pixels that have
            already stopped (early termination: the same image up to float rounding, less work behind opaque
            surfaces). 1 = one pass, the reference path training uses; turntables and previews use 8.

    Returns:
        colors [C, H, W, D], alphas [C, H, W, 1] (= 1 - T_final), and accumulated depth sum_i z_i alpha_i T_i
        [C, H, W, 1].
    """
    C, N = proj.depths.shape
    D = colors.shape[-1]
    dtype = colors.dtype
    total = C * height * width
    # Per (camera, Gaussian) attributes packed in one table, so each pair needs one gather (and its backward one
    # index_add): centre x, centre y, conic a, b, c, opacity.
    table = torch.cat([proj.means2d, proj.conics, opacities.expand(C, N)[..., None]], dim=-1).reshape(C * N, 6)
    values = torch.cat([colors.reshape(C * N, D), proj.depths.reshape(C * N, 1)], dim=-1)

    def alpha_of(rows: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        dx = rows[:, 0] - x
        dy = rows[:, 1] - y
        sigma = 0.5 * (rows[:, 2] * dx * dx + rows[:, 4] * dy * dy) + rows[:, 3] * dx * dy
        return sigma, torch.clamp_max(rows[:, 5] * torch.exp(-sigma), MAX_ALPHA)

    with torch.no_grad():
        visible = (proj.radii.reshape(C * N, 2) > 0).all(dim=-1).nonzero().squeeze(1)
        depth = proj.depths.detach().reshape(C * N)
        visible = visible[torch.argsort(depth[visible])]  # front to back
        depth_rank = torch.empty(C * N, dtype=torch.long, device=depth.device)
        depth_rank[visible] = torch.arange(visible.numel(), device=depth.device)
    log_stop = math.log(TRANSMITTANCE_STOP)
    log_t = torch.zeros(total, dtype=torch.float64, device=colors.device)  # log T of every pixel so far
    done = torch.zeros(total, dtype=torch.bool, device=colors.device)  # pixels that hit the stop rule
    out = torch.zeros(total, D + 2, dtype=dtype, device=colors.device)
    for ids in torch.tensor_split(visible, max(1, min(depth_chunks, visible.numel()))):
        with torch.no_grad():
            flat, px, py, pix = _pairs(proj, ids, width, height)
            # 1) Cheap, gradient-free pass: drop pairs gsplat skips (sigma < 0, alpha < 1/255) and stopped pixels.
            x_centre, y_centre = px.to(dtype) + 0.5, py.to(dtype) + 0.5
            sigma, alpha = alpha_of(table.detach().index_select(0, flat), x_centre, y_centre)
            keep = ((sigma >= 0) & (alpha >= ALPHA_THRESHOLD) & ~done[pix]).nonzero().squeeze(1)
            # 2) Order by (pixel, depth).
            order = torch.argsort(pix[keep] * (C * N) + depth_rank[flat[keep]]) if keep.numel() else keep
            keep = keep[order]
            flat, pix, x_centre, y_centre = flat[keep], pix[keep], x_centre[keep], y_centre[keep]
            run_start = torch.ones_like(pix, dtype=torch.bool)
            run_start[1:] = pix[1:] != pix[:-1]
            start_index = torch.cummax(
                torch.where(run_start, torch.arange(pix.numel(), device=pix.device), 0), 0
            ).values

        # 3) Alpha with gradient on the surviving pairs; transmittance = the pixel's T so far times the exclusive
        #    product inside this chunk's run of pairs (float64 log space).
        _, alpha = alpha_of(table.index_select(0, flat), x_centre, y_centre)
        log_one_minus = torch.log1p(-alpha.double())
        exclusive = torch.cumsum(log_one_minus, 0) - log_one_minus
        log_t_excl = log_t.index_select(0, pix) + exclusive - exclusive.index_select(0, start_index)
        with torch.no_grad():
            # Stop rule: a pair counts only while T * (1 - alpha) > 1e-4 (monotone along a pixel's pairs).
            counted = log_t_excl + log_one_minus > log_stop
            done[pix[~counted]] = True
            counted = counted.nonzero().squeeze(1)
        pix = pix.index_select(0, counted)
        weight = alpha.index_select(0, counted) * torch.exp(log_t_excl.index_select(0, counted)).to(dtype)
        # 4) Accumulate colour, depth and weight with one index_add; carry T to the next chunk.
        pair_values = torch.cat(
            [values.index_select(0, flat.index_select(0, counted)), torch.ones_like(weight)[:, None]], -1
        )
        out = out.index_add(0, pix, pair_values * weight[:, None])
        log_t = log_t.index_add(0, pix, log_one_minus.index_select(0, counted))
    out_color, out_depth, out_alpha = out[:, :D], out[:, D : D + 1], out[:, D + 1 :]

    out_color = out_color.reshape(C, height, width, D)
    out_alpha = out_alpha.reshape(C, height, width, 1)
    if backgrounds is not None:
        out_color = out_color + (1.0 - out_alpha) * backgrounds[:, None, None, :]
    return out_color, out_alpha, out_depth.reshape(C, height, width, 1)
