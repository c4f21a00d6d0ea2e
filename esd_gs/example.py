"""A procedural cartoon head: a ground-truth object with a clearly distinct front (+X, face) and back (-X, hair).

Used by demos and by the Janus benchmark, where front and back must look very different from each other. Every part
is a set of flat, opaque Gaussians lying on (or just above) an ellipsoid's surface, each a small helper below.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from .scene import GaussianScene

HEAD_AXES = (0.40, 0.36, 0.50)
"""Semi-axes (x: front-back, y: ear to ear, z: chin to crown) of the head ellipsoid, before ``HEAD_SCALE``."""
HEAD_SCALE = 1.25
"""The head is modelled with ``HEAD_AXES`` (nose tip at 0.53), then scaled by this: it fills more of the frame."""
SKIN, NOSE, EAR, HAIR = (0.96, 0.76, 0.62), (0.93, 0.62, 0.50), (0.90, 0.64, 0.52), (0.22, 0.13, 0.07)
EYE_WHITE, PUPIL, BROW, LIPS = (1.0, 1.0, 1.0), (0.05, 0.05, 0.12), (0.10, 0.06, 0.03), (0.85, 0.08, 0.10)
GOLDEN_ANGLE = math.pi * (3 - math.sqrt(5))


class Feature(NamedTuple):
    """A face feature: an ellipse seen from the front (+X), projected onto the head and lifted off the skin."""

    y: float
    z: float
    ry: float
    rz: float
    color: tuple[float, float, float]
    share: float
    """Fraction of all the Gaussians it gets."""
    lift: float = 0.012
    """Offset along the normal, so it sorts in front of the skin."""
    paint_skin: bool = True
    """Also colour the skin under it (so overlapping skin Gaussians do not streak through it)."""


FACE = [  # painted in this order
    *(Feature(s * 0.13, 0.10, 0.085, 0.065, EYE_WHITE, 0.04) for s in (1, -1)),
    *(Feature(s * 0.13, 0.095, 0.04, 0.045, PUPIL, 0.02, lift=0.025, paint_skin=False) for s in (1, -1)),
    *(Feature(s * 0.14, 0.23, 0.09, 0.03, BROW, 0.02, lift=0.025) for s in (1, -1)),
    Feature(0.0, -0.25, 0.13, 0.045, LIPS, 0.045, lift=0.02),
]
LIGHT = (0.6, 0.3, 0.74)
"""Direction of the light baked into the colours (front, a little left, from above)."""

Part = tuple[Tensor, Tensor, Tensor, Tensor]
"""(means [n,3], normals [n,3], colours [n,3], tangent std-dev [n]) of one part."""


def _ellipsoid_shell(n: int, center, axes, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """``n`` evenly spread points on an ellipsoid: (points, outward unit normals, unit-sphere coordinates).

    A Fibonacci spiral on the unit sphere (even coverage, no holes) with a random twist, stretched by ``axes``.
    """
    i = torch.arange(n, dtype=torch.float32) + 0.5
    z = 1 - 2 * i / n
    phi = i * GOLDEN_ANGLE + 2 * math.pi * torch.rand(1, generator=g)
    rho = (1 - z**2).clamp_min(0.0).sqrt()
    u = torch.stack([rho * torch.cos(phi), rho * torch.sin(phi), z], dim=1)
    axes_t = torch.tensor(axes)
    normals = torch.nn.functional.normalize(u / axes_t, dim=1)
    return torch.tensor(center) + u * axes_t, normals, u


def _spacing(area: float, n: int) -> float:
    """Tangent std-dev so that ``n`` disks cover ``area`` with overlap."""
    return math.sqrt(area / max(n, 1))


def _ellipsoid_area(axes) -> float:
    """Knud Thomsen's approximation of an ellipsoid's surface area (within ~1%)."""
    a, b, c = axes
    p = 1.6075
    return 4 * math.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)


def _head(n: int, g: torch.Generator) -> Part:
    """The skull: skin in front and below, hair over the top and the whole back (azimuth 180)."""
    pts, normals, u = _ellipsoid_shell(n, (0.0, 0.0, 0.0), HEAD_AXES, g)
    # Hairline: above the forehead at the front, dropping to the nape at the back.
    hairline = 0.68 - 0.95 * (-u[:, 0]).clamp_min(0.0) - 0.2 * u[:, 1].abs()
    hair = (u[:, 2] > hairline) | ((u[:, 0] < -0.25) & (u[:, 2] > -0.85))
    colors = torch.where(hair[:, None], torch.tensor(HAIR), torch.tensor(SKIN))
    # Paint the face onto the skin too, so skin Gaussians overlapping a feature's lifted patch share its colour.
    for f in filter(lambda f: f.paint_skin, FACE):
        inside = (u[:, 0] > 0) & (((pts[:, 1] - f.y) / f.ry) ** 2 + ((pts[:, 2] - f.z) / f.rz) ** 2 <= 0.85)
        colors[inside] = torch.tensor(f.color)
    return pts, normals, colors, torch.full((n,), _spacing(_ellipsoid_area(HEAD_AXES), n))


def _blob(n: int, center, axes, color, g: torch.Generator) -> Part:
    """A small ellipsoid of one colour (nose, ears)."""
    pts, normals, _ = _ellipsoid_shell(n, center, axes, g)
    return pts, normals, torch.tensor(color).expand(n, 3), torch.full((n,), _spacing(_ellipsoid_area(axes), n))


def _face_patch(f: Feature, n: int, g: torch.Generator) -> Part:
    """About ``n`` Gaussians on a hexagonal grid filling the feature's ellipse, projected onto the head, lifted."""
    y, z, ry, rz = f.y, f.z, f.ry, f.rz
    d = math.sqrt(2 * math.pi * ry * rz / (math.sqrt(3) * n))  # hex spacing giving ~n points in the ellipse
    rows, cols = int(rz / (d * math.sqrt(3) / 2)) + 2, int(ry / d) + 2
    j, i = torch.meshgrid(torch.arange(-rows, rows + 1), torch.arange(-cols, cols + 1), indexing="ij")
    shift = d * torch.rand(2, generator=g) - d / 2  # the seed moves the grid a little
    py = (i + 0.5 * (j % 2)).flatten() * d + shift[0]
    pz = j.flatten() * d * math.sqrt(3) / 2 + shift[1]
    keep = (py / ry) ** 2 + (pz / rz) ** 2 <= 1.0
    py, pz = py[keep] + y, pz[keep] + z
    a, b, c = HEAD_AXES
    px = a * (1 - (py / b) ** 2 - (pz / c) ** 2).clamp_min(0.0).sqrt()
    pts = torch.stack([px, py, pz], dim=1)
    normals = torch.nn.functional.normalize(pts / torch.tensor(HEAD_AXES) ** 2, dim=1)
    m = pts.shape[0]
    return pts + f.lift * normals, normals, torch.tensor(f.color).expand(m, 3), torch.full((m,), 0.75 * d)


def _disk_quats(normals: Tensor) -> Tensor:
    """Unit quaternions (w, x, y, z) rotating +Z onto each normal (so a disk flat in local XY faces outward)."""
    w = 1.0 + normals[:, 2]
    q = torch.stack([w, -normals[:, 1], normals[:, 0], torch.zeros_like(w)], dim=1)
    flipped = w < 1e-6  # normal = -Z: half turn about X
    q[flipped] = torch.tensor([0.0, 1.0, 0.0, 0.0])
    return torch.nn.functional.normalize(q, dim=1)


def make_head_scene(num_gaussians: int = 3000, seed: int = 0) -> GaussianScene:
    """A cartoon head (face towards +X, hair at the back), deterministic for ``seed``, within radius 0.67."""
    if num_gaussians < 100:
        raise ValueError("make_head_scene needs at least 100 Gaussians")
    g = torch.Generator().manual_seed(seed)
    k = lambda frac: max(4, round(frac * num_gaussians))  # noqa: E731  (Gaussians per feature)
    b = HEAD_AXES[1]
    features = [
        _blob(k(0.05), (0.43, 0.0, -0.06), (0.10, 0.06, 0.09), NOSE, g),
        _blob(k(0.035), (-0.02, b, -0.02), (0.07, 0.04, 0.12), EAR, g),
        _blob(k(0.035), (-0.02, -b, -0.02), (0.07, 0.04, 0.12), EAR, g),
    ] + [_face_patch(f, k(f.share), g) for f in FACE]
    n_head = num_gaussians - sum(p[0].shape[0] for p in features)
    parts = [_head(n_head, g)] + features
    means, normals, colors, sigma = (torch.cat(x) for x in zip(*parts))
    # Bake a soft diffuse light so the shape reads without any shading in the renderer.
    shade = 0.7 + 0.3 * (normals @ torch.nn.functional.normalize(torch.tensor(LIGHT), dim=0)).clamp_min(0.0)
    scales = torch.stack([sigma, sigma, 0.15 * sigma], dim=1)
    return GaussianScene.from_activated(
        means=HEAD_SCALE * means,
        scales=HEAD_SCALE * scales,
        quats=_disk_quats(normals),
        opacities=torch.full((num_gaussians,), 0.95),
        colors=(colors * shade[:, None]).clamp(0.0, 1.0),
        sh_degree=0,
    )


def builtin_head() -> GaussianScene:
    """The built-in example: ``assets/head.ply`` in a source checkout, else the same head built by
    ``make_head_scene()`` (a test checks that the two are equal), so installs without the assets folder work too."""
    from .io import read_ply

    path = Path(__file__).resolve().parents[1] / "assets" / "head.ply"
    return read_ply(path) if path.is_file() else make_head_scene()
