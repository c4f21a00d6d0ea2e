"""The Gaussians' opacity field and colour on a regular grid, evaluated sparsely and in bounded blocks.

    density(x) = sum_i o_i exp(-1/2 (x - mu_i)^T Sigma_i^-1 (x - mu_i)),   colour(x) = sum_i w_i(x) c_i / density(x)

with w_i(x) the i-th term of the sum, Sigma_i = R_i diag(s_i^2) R_i^T, o_i the opacity and c_i the view-independent
colour (SH_C0 sh0 + 0.5). Each Gaussian is evaluated only on the voxels of its 3-sigma box; its scales are floored at
half a voxel, so that the flat disks of a surface are not missed between grid points. Gaussians are processed in
chunks of at most ``budget`` (voxel, Gaussian) pairs, so memory stays bounded whatever the grid (256^3: 64 MB per
float channel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..render.projection import quat_to_rotmat
from ..scene import SH_C0, GaussianScene


@dataclass
class Grid:
    """Voxel centres ``origin + voxel * (i, j, k)`` for i, j, k in 0..resolution-1 (esd-gs world axes)."""

    origin: Tensor
    voxel: float
    resolution: int

    def to_world(self, index: Tensor) -> Tensor:
        """Continuous voxel coordinates [N, 3] -> world points [N, 3]."""
        return self.origin + index * self.voxel


def scene_grid(scene: GaussianScene, resolution: int, margin_sigmas: float = 3.0) -> Grid:
    """A cubic grid around the Gaussians (their centres plus ``margin_sigmas`` of their largest scale)."""
    means = scene.means.detach().float()
    reach = margin_sigmas * float(scene.scales.detach().float().max())
    low, high = means.min(dim=0).values - reach, means.max(dim=0).values + reach
    size = float((high - low).max())
    voxel = size / (resolution - 3)  # one empty voxel beyond the reach on each side
    centre = (low + high) / 2
    return Grid(centre - voxel * (resolution - 1) / 2, voxel, resolution)


@torch.no_grad()
def opacity_field(scene: GaussianScene, grid: Grid, budget: int = 1 << 22) -> tuple[Tensor, Tensor]:
    """(density [R, R, R], colour-weighted density [R, R, R, 3]) of ``scene`` on ``grid`` (float32, CPU)."""
    r = grid.resolution
    means = scene.means.detach().float().cpu()
    scales = scene.scales.detach().float().cpu().clamp_min(grid.voxel / 2)
    rotations = quat_to_rotmat(torch.nn.functional.normalize(scene.quats.detach().float().cpu(), dim=-1))
    precision = rotations @ torch.diag_embed(scales.pow(-2)) @ rotations.transpose(-1, -2)
    opacity = scene.opacities.detach().float().cpu()
    colour = (SH_C0 * scene.params["sh0"].detach().float().cpu()[:, 0, :] + 0.5).clamp(0.0, 1.0)
    half = torch.ceil(3.0 * scales.max(dim=1).values / grid.voxel).long().clamp(1, r)  # 3-sigma box, in voxels
    density = torch.zeros(r * r * r)
    painted = torch.zeros(r * r * r, 3)
    order = torch.argsort(half)
    start = 0
    while start < len(order):
        k = int(half[order[start]])
        span = torch.arange(-k, k + 1)
        offsets = torch.stack(torch.meshgrid(span, span, span, indexing="ij"), dim=-1).reshape(-1, 3)
        take = max(1, budget // len(offsets))
        chunk = order[start : start + take]
        chunk = chunk[half[chunk] <= k]  # Gaussians as small as the first one, or smaller
        start += len(chunk)
        centre = torch.round((means[chunk] - grid.origin) / grid.voxel).long()
        index = centre[:, None, :] + offsets[None]  # [n, m, 3]
        inside = ((index >= 0) & (index < r)).all(dim=-1)
        delta = grid.origin + index * grid.voxel - means[chunk][:, None, :]
        mahalanobis = torch.einsum("nmi,nij,nmj->nm", delta, precision[chunk], delta)
        weight = opacity[chunk][:, None] * torch.exp(-0.5 * mahalanobis)
        keep = inside & (mahalanobis < 9.0)
        flat = (index[..., 0] * r + index[..., 1]) * r + index[..., 2]
        density.index_add_(0, flat[keep], weight[keep])
        painted.index_add_(0, flat[keep], (weight[..., None] * colour[chunk][:, None, :])[keep])
    return density.reshape(r, r, r), painted.reshape(r, r, r, 3)


def voxel_memory_bytes(resolution: int) -> int:
    """Bytes of the two fields at ``resolution`` (4 float32 channels per voxel)."""
    return 16 * int(math.pow(resolution, 3))
