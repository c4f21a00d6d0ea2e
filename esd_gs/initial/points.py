"""Coloured points -> initial Gaussians: what a start from a 3D prior (Shap-E's mesh, a coarse object) shares.

GaussianDreamer's recipe (Yi et al. 2024, sec. 3.2, "noisy point growing and colour perturbation"): the prior's sparse
points are grown by new points close to them, with colours of their neighbours brightened by a random amount, and
every point becomes an isotropic Gaussian whose scale is its distance to its neighbours (3DGS's initialisation from a
point cloud, Kerbl et al. 2023). Points are [N, 3] in world units, colours [N, 3] display (sRGB) values in [0, 1].
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..scene import GaussianScene, nearest_neighbour_distance


def triangle_areas(vertices: Tensor, faces: Tensor) -> Tensor:
    """[F] areas of the triangles ``faces`` [F, 3] (indices into ``vertices`` [V, 3]): |(b - a) x (c - a)| / 2."""
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    return torch.linalg.cross(b - a, c - a).norm(dim=1) / 2


def sample_surface(
    vertices: Tensor, faces: Tensor, colors: Tensor, count: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """``count`` points uniform on a triangle mesh's surface, with the vertex colours interpolated there.

    A triangle is drawn with probability proportional to its area, a point in it by the square-root rule (Osada et al.
    2002, eq. 1: P = (1 - sqrt(r1)) a + sqrt(r1) (1 - r2) b + sqrt(r1) r2 c, uniform over the triangle), and its colour
    is the same barycentric mix of the corners' colours. ``vertices`` [V, 3], ``faces`` [F, 3] long, ``colors``
    [V, 3] -> ([count, 3], [count, 3])."""
    areas = triangle_areas(vertices, faces)
    if not faces.shape[0] or not float(areas.sum()) > 0:
        raise ValueError("the mesh has no surface (no triangle with an area)")
    chosen = torch.multinomial(areas, count, replacement=True, generator=generator)
    r1, r2 = torch.rand(2, count, 1, generator=generator)
    root = r1.sqrt()
    weights = torch.cat([1 - root, root * (1 - r2), root * r2], dim=1)  # [count, 3] barycentric
    corners = faces[chosen]  # [count, 3]
    points = (weights[:, :, None] * vertices[corners]).sum(dim=1)
    shades = (weights[:, :, None] * colors[corners]).sum(dim=1)
    return points, shades


def grow_points(
    points: Tensor,
    colors: Tensor,
    count: int,
    spread: float,
    brighten: float,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """GaussianDreamer's noisy point growing and colour perturbation: ``count`` new points, each uniform in a ball of
    radius ``spread`` around a point of ``points`` drawn at random, coloured as that point plus ``brighten`` * U[0, 1)
    per channel (GaussianDreamer: 0.2; clamped to [0, 1]). Returns the given points followed by the new ones.

    GaussianDreamer draws a million points uniformly in the cloud's bounding box and keeps those within 0.01 of it;
    drawing around the cloud's own points fills the same band around the surface with exactly ``count`` points, denser
    where the cloud is (uniform on a surface sampled by area)."""
    if count <= 0:
        return points, colors
    seeds = torch.randint(points.shape[0], (count,), generator=generator)
    direction = torch.nn.functional.normalize(torch.randn(count, 3, generator=generator), dim=1)
    distance = spread * torch.rand(count, 1, generator=generator).pow(1.0 / 3.0)
    grown = points[seeds] + direction * distance
    shades = (colors[seeds] + brighten * torch.rand(count, 3, generator=generator)).clamp(0.0, 1.0)
    return torch.cat([points, grown]), torch.cat([colors, shades])


def neighbour_scale(points: Tensor, neighbours: int = 3) -> Tensor:
    """[N] sqrt of the mean squared distance of each point to its ``neighbours`` nearest others (3DGS's initial scale
    of a point cloud: ``scene.nearest_neighbour_distance``); 1e-4 at least, so that coincident points still make a
    Gaussian; 0.01 for a lone point."""
    if points.shape[0] < 2:
        return torch.full((points.shape[0],), 0.01, dtype=points.dtype)
    return nearest_neighbour_distance(points, neighbours).clamp_min(1e-4)


def gaussians_from_points(points: Tensor, colors: Tensor, opacity: float, sh_degree: int = 0) -> GaussianScene:
    """One isotropic Gaussian per point (3DGS's initialisation): centre the point, scale ``neighbour_scale``, identity
    rotation, opacity ``opacity``, its colour as the DC term (higher SH bands zero)."""
    n = points.shape[0]
    quats = torch.zeros(n, 4)
    quats[:, 0] = 1.0
    return GaussianScene.from_activated(
        means=points.float(),
        scales=neighbour_scale(points.float())[:, None].expand(n, 3),
        quats=quats,
        opacities=torch.full((n,), opacity),
        colors=colors.float().clamp(0.0, 1.0),
        sh_degree=sh_degree,
    )
