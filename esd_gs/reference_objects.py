"""Procedural reference objects for the Janus benchmark besides the head: a toy car, a house, a mug, an armchair and
a penguin (the development objects), and a cat, a bus and a radio (the held-out objects, built before any run on
them and never used to choose a setting: ``priors.synthetic_objects.HELD_OUT``).

Each has a clearly distinct front (+X) and back (-X) and a different shape, so that the benchmark's metrics and
methods are measured on more than one kind of object:

- **car**: a pickup, long and low (1.1 x 0.5 x 0.55); the cabin (cyan windows) over the front axle behind a blue
  hood, yellow headlights on a dark grille at the front; an open wooden cargo bed, red tail lights and a white plate
  at the back; black wheels on the sides;
- **house**: a box with a pitched red roof; a brown door between two blue windows at the front, an ivy-covered back
  wall with a chimney on the back slope, one window on each side;
- **mug**: a white cylinder; a red round logo at the front, the handle at the back, coffee on top;
- **chair**: an armchair, concave where the others are convex: a red cushion on the seat and on the front of a tall
  backrest (three gold buttons), dark wooden legs and armrests, and blue fabric across the back of the backrest
  (a colour no other view shows, so that the benchmark's nearest-image classifier tells the back from the front);
- **penguin**: a tall egg-shaped body and a round head, black at the back and sides, a white belly and face at the
  front, an orange beak and feet, black flippers;
- **cat** (an animal with a face): a sitting ginger cat, a white muzzle, green eyes, a pink nose and a white chest
  and paws at the front, dark stripes across its back and a tail curled up behind;
- **bus** (a vehicle with a windscreen): a long yellow box, white roof; a large windscreen over two headlights at
  the front, a small rear window and red lights at the back, a row of windows and two wheels on each side;
- **radio** (front and back differ only in colour): a wooden box, symmetric front to back; a cream speaker grille
  with slats, a round dial and two knobs at the front, a plain grey panel at the back.

Like the head (``example.py``), every surface is a set of flat, opaque Gaussians (disks) tangent to it, with a soft
diffuse light baked into the colours; axes are esd-gs's world (+Z up, front +X). ``scripts/make_reference_assets.py``
writes them to ``assets/references/<name>.ply`` (3DGS files, -Y up), which ``--reference`` (``bench janus``,
``--prior.reference``) reads.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from .example import LIGHT, Part, _blob, _disk_quats, _ellipsoid_area, _ellipsoid_shell, _spacing
from .scene import GaussianScene

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "references"
"""Where the shipped .ply files of these objects live in a source checkout."""

Paint = Callable[[Tensor], Tensor]
"""points [n, 3] -> colours [n, 3] in [0, 1]."""


def _plain(colour) -> Paint:
    return lambda pts: torch.tensor(colour, dtype=torch.float32).expand(pts.shape[0], 3).clone()


def _rectangle(centre, u_axis, v_axis, half_u: float, half_v: float, n: int, g: torch.Generator) -> Part:
    """About ``n`` disks on a jittered grid over a rectangle (``u_axis`` x ``v_axis`` gives its outward normal)."""
    u_axis, v_axis = torch.tensor(u_axis, dtype=torch.float32), torch.tensor(v_axis, dtype=torch.float32)
    spacing = math.sqrt(4 * half_u * half_v / max(n, 1))
    nu, nv = max(1, round(2 * half_u / spacing)), max(1, round(2 * half_v / spacing))
    iu, iv = torch.meshgrid(torch.arange(nu), torch.arange(nv), indexing="ij")
    jitter = (torch.rand(2, nu * nv, generator=g) - 0.5) * 0.3
    u = ((iu.flatten() + 0.5 + jitter[0]) / nu * 2 - 1) * half_u
    v = ((iv.flatten() + 0.5 + jitter[1]) / nv * 2 - 1) * half_v
    pts = torch.tensor(centre, dtype=torch.float32) + u[:, None] * u_axis + v[:, None] * v_axis
    normal = torch.nn.functional.normalize(torch.linalg.cross(u_axis, v_axis), dim=0)
    m = pts.shape[0]
    return pts, normal.expand(m, 3).clone(), torch.zeros(m, 3), torch.full((m,), spacing)


def _box(lo, hi, n: int, paint: Paint, g: torch.Generator, skip: tuple[str, ...] = ()) -> list[Part]:
    """The six faces of an axis-aligned box (``skip`` names faces to leave out: "+x", "-z", ...), ``n`` disks in all
    shared by area."""
    lo, hi = torch.tensor(lo, dtype=torch.float32), torch.tensor(hi, dtype=torch.float32)
    c, h = (lo + hi) / 2, (hi - lo) / 2
    faces = {  # name: (centre, u axis, v axis, half u, half v), u x v = the outward normal
        "+x": ((hi[0], c[1], c[2]), (0, 1, 0), (0, 0, 1), h[1], h[2]),
        "-x": ((lo[0], c[1], c[2]), (0, 0, 1), (0, 1, 0), h[2], h[1]),
        "+y": ((c[0], hi[1], c[2]), (0, 0, 1), (1, 0, 0), h[2], h[0]),
        "-y": ((c[0], lo[1], c[2]), (1, 0, 0), (0, 0, 1), h[0], h[2]),
        "+z": ((c[0], c[1], hi[2]), (1, 0, 0), (0, 1, 0), h[0], h[1]),
        "-z": ((c[0], c[1], lo[2]), (0, 1, 0), (1, 0, 0), h[1], h[0]),
    }
    faces = {k: v for k, v in faces.items() if k not in skip}
    area = sum(float(f[3] * f[4]) for f in faces.values())
    parts = []
    for centre, u, v, hu, hv in faces.values():
        pts, normals, _, sigma = _rectangle([float(x) for x in centre], u, v, float(hu), float(hv),
                                            round(n * float(hu * hv) / area), g)  # fmt: skip
        parts.append((pts, normals, paint(pts), sigma))
    return parts


def _disks_in(pts: Tensor, centre, radius: float, axes: tuple[int, int]) -> Tensor:
    """Which points lie within ``radius`` of ``centre`` in the plane of coordinates ``axes``."""
    a, b = axes
    return (pts[:, a] - centre[0]) ** 2 + (pts[:, b] - centre[1]) ** 2 <= radius**2


def _in_box(pts: Tensor, lo, hi) -> Tensor:
    return ((pts >= torch.tensor(lo)) & (pts <= torch.tensor(hi))).all(dim=1)


def _finish(parts: list[Part]) -> GaussianScene:
    means, normals, colours, sigma = (torch.cat(x) for x in zip(*parts))
    shade = 0.7 + 0.3 * (normals @ torch.nn.functional.normalize(torch.tensor(LIGHT), dim=0)).clamp_min(0.0)
    return GaussianScene.from_activated(
        means=means,
        scales=torch.stack([sigma, sigma, 0.15 * sigma], dim=1),
        quats=_disk_quats(normals),
        opacities=torch.full((means.shape[0],), 0.95),
        colors=(colours * shade[:, None]).clamp(0.0, 1.0),
        sh_degree=0,
    )


# ---------------------------------------------------------------------------------------------------------- car
CAR_BODY, CAR_WINDOW, CAR_GRILLE, CAR_LIGHT = (
    (0.15, 0.35, 0.80),
    (0.60, 0.85, 0.95),
    (0.25, 0.25, 0.25),
    (1.0, 0.9, 0.3),
)
CAR_TAIL, CAR_PLATE, CAR_WHEEL, CAR_BED = (0.90, 0.10, 0.10), (0.95, 0.95, 0.95), (0.08, 0.08, 0.08), (0.60, 0.40, 0.18)


def _paint_car_body(pts: Tensor) -> Tensor:
    colours = _plain(CAR_BODY)(pts)
    front, back = pts[:, 0] > 0.549, pts[:, 0] < -0.549
    colours[front] = torch.tensor(CAR_GRILLE)
    for side in (1, -1):
        colours[front & _disks_in(pts, (0.16 * side, -0.12), 0.07, (1, 2))] = torch.tensor(CAR_LIGHT)
        colours[back & _in_box(pts, (-1, 0.1 * side - 0.06, -0.16), (0, 0.1 * side + 0.06, -0.06))] = torch.tensor(
            CAR_TAIL
        )
        for x in (0.32, -0.32):
            wheel = (pts[:, 1] * side > 0.249) & _disks_in(pts, (x, -0.24), 0.11, (0, 2))
            colours[wheel] = torch.tensor(CAR_WHEEL)
    colours[back & _in_box(pts, (-1, -0.08, -0.26), (0, 0.08, -0.19))] = torch.tensor(CAR_PLATE)
    colours[(pts[:, 2] > -0.001) & (pts[:, 0] < 0.0)] = torch.tensor(CAR_BED)  # the open bed behind the cabin
    colours[pts[:, 2] < -0.299] = torch.tensor(CAR_WHEEL)  # underside
    return colours


def _paint_cabin(pts: Tensor) -> Tensor:
    colours = _plain(CAR_WINDOW)(pts)
    colours[pts[:, 2] > 0.239] = torch.tensor(CAR_BODY)  # the roof
    return colours


def make_car_scene(num_gaussians: int = 3000, seed: int = 0) -> GaussianScene:
    """A toy car, front +X (module docstring), deterministic for ``seed``, within radius 0.68."""
    g = torch.Generator().manual_seed(seed)
    body = _box((-0.55, -0.25, -0.30), (0.55, 0.25, 0.0), int(0.76 * num_gaussians), _paint_car_body, g)
    cabin = _box((0.0, -0.22, 0.0), (0.32, 0.22, 0.24), int(0.24 * num_gaussians), _paint_cabin, g, skip=("-z",))
    return _finish(body + cabin)


# -------------------------------------------------------------------------------------------------------- house
WALL, ROOF, DOOR, WINDOW, CHIMNEY = (
    (0.93, 0.87, 0.70),
    (0.75, 0.20, 0.15),
    (0.45, 0.25, 0.10),
    (0.35, 0.60, 0.90),
    (
        0.55,
        0.30,
        0.25,
    ),
)
WALL_X, WALL_Y, WALL_Z, EAVE_Z, RIDGE_Z, ROOF_X = 0.32, 0.34, (-0.45, 0.08), 0.08, 0.45, 0.40


IVY = (0.20, 0.45, 0.15)


def _paint_walls(pts: Tensor) -> Tensor:
    colours = _plain(WALL)(pts)
    colours[pts[:, 0] < -WALL_X + 1e-3] = torch.tensor(IVY)
    front = pts[:, 0] > WALL_X - 1e-3
    colours[front & _in_box(pts, (0, -0.08, -0.46), (1, 0.08, -0.17))] = torch.tensor(DOOR)
    for side in (1, -1):
        colours[front & _in_box(pts, (0, 0.22 * side - 0.07, -0.15), (1, 0.22 * side + 0.07, -0.01))] = torch.tensor(
            WINDOW
        )
        colours[(pts[:, 1] * side > WALL_Y - 1e-3) & _in_box(pts, (-0.08, -1, -0.2), (0.08, 1, -0.05))] = torch.tensor(
            WINDOW
        )
    return colours


def _roof(n: int, g: torch.Generator) -> list[Part]:
    """Two slopes from the eaves (x = +-ROOF_X, EAVE_Z) to the ridge (x = 0, RIDGE_Z) along Y, and the two gables."""
    rise, run = RIDGE_Z - EAVE_Z, ROOF_X
    half_slope = math.hypot(rise, run) / 2
    parts = []
    for side in (1, -1):
        centre = (side * run / 2, 0.0, EAVE_Z + rise / 2)
        down = torch.nn.functional.normalize(torch.tensor([side * run, 0.0, -rise]), dim=0).tolist()
        u, v = ((0, 1, 0), down) if side > 0 else (down, (0, 1, 0))
        hu, hv = (WALL_Y + 0.04, half_slope) if side > 0 else (half_slope, WALL_Y + 0.04)
        pts, normals, _, sigma = _rectangle(centre, u, v, hu, hv, int(0.4 * n), g)
        parts.append((pts, normals, _plain(ROOF)(pts), sigma))
    for side in (1, -1):  # gables: the triangle under the roof at y = +-WALL_Y, wall-coloured
        pts, normals, _, sigma = _rectangle((0.0, side * WALL_Y, EAVE_Z + rise / 2), (0, 0, side), (1, 0, 0), rise / 2,
                                            WALL_X, int(0.2 * n), g)  # fmt: skip
        keep = (pts[:, 2] - EAVE_Z) <= rise * (1 - pts[:, 0].abs() / run)
        parts.append((pts[keep], normals[keep], _plain(WALL)(pts[keep]), sigma[keep]))
    return parts


def make_house_scene(num_gaussians: int = 3000, seed: int = 0) -> GaussianScene:
    """A house, front +X (module docstring), deterministic for ``seed``, within radius 0.67."""
    g = torch.Generator().manual_seed(seed)
    walls = _box((-WALL_X, -WALL_Y, WALL_Z[0]), (WALL_X, WALL_Y, WALL_Z[1]), int(0.58 * num_gaussians), _paint_walls, g,
                 skip=("+z",))  # fmt: skip
    chimney = _box((-0.26, 0.12, 0.15), (-0.14, 0.24, 0.42), int(0.07 * num_gaussians), _plain(CHIMNEY), g,
                   skip=("-z",))  # fmt: skip
    return _finish(walls + _roof(int(0.35 * num_gaussians), g) + chimney)


# ---------------------------------------------------------------------------------------------------------- mug
MUG, LOGO, COFFEE, BAND = (0.95, 0.95, 0.95), (0.85, 0.10, 0.15), (0.35, 0.20, 0.10), (0.20, 0.30, 0.80)
MUG_RADIUS, MUG_Z = 0.30, (-0.36, 0.30)


def _mug_body(n: int, g: torch.Generator) -> list[Part]:
    """The cylinder's side (logo at azimuth 0, a band under the rim), its coffee top and its bottom."""
    r, (z0, z1) = MUG_RADIUS, MUG_Z
    side_area, cap_area = 2 * math.pi * r * (z1 - z0), math.pi * r * r
    n_side = round(n * side_area / (side_area + 2 * cap_area))
    spacing = math.sqrt(side_area / n_side)
    rings, around = max(1, round((z1 - z0) / spacing)), max(3, round(2 * math.pi * r / spacing))
    ring, step = torch.meshgrid(torch.arange(rings), torch.arange(around), indexing="ij")
    angle = step.flatten() + 0.5 * (ring.flatten() % 2) + 0.3 * (torch.rand(rings * around, generator=g) - 0.5)
    angle = angle * 2 * math.pi / around
    z = z0 + (ring.flatten() + 0.5) / rings * (z1 - z0)
    normals = torch.stack([torch.cos(angle), torch.sin(angle), torch.zeros_like(angle)], dim=1)
    pts = torch.cat([r * normals[:, :2], z[:, None]], dim=1)
    colours = _plain(MUG)(pts)
    colours[pts[:, 2] > z1 - 0.08] = torch.tensor(BAND)
    logo = (pts[:, 0] > 0) & ((r * torch.atan2(pts[:, 1], pts[:, 0])) ** 2 + (pts[:, 2] + 0.04) ** 2 <= 0.14**2)
    colours[logo] = torch.tensor(LOGO)
    parts = [(pts, normals, colours, torch.full((pts.shape[0],), spacing))]
    n_cap = round(n * cap_area / (side_area + 2 * cap_area))
    for z_cap, up, colour in ((z1, 1.0, COFFEE), (z0, -1.0, MUG)):
        i = torch.arange(n_cap, dtype=torch.float32) + 0.5  # a sunflower spiral fills the disk evenly
        rho, theta = r * torch.sqrt(i / n_cap), i * math.pi * (3 - math.sqrt(5))
        pts = torch.stack([rho * torch.cos(theta), rho * torch.sin(theta), torch.full_like(rho, z_cap)], dim=1)
        normals = torch.tensor([0.0, 0.0, up]).expand(n_cap, 3).clone()
        parts.append((pts, normals, _plain(colour)(pts), torch.full((n_cap,), math.sqrt(cap_area / n_cap))))
    return parts


def _handle(n: int, g: torch.Generator) -> Part:
    """A torus arc at the back (-X), in the XZ plane, outside the cylinder."""
    ring, tube, centre = 0.16, 0.045, torch.tensor([-MUG_RADIUS, 0.0, -0.03])
    u = torch.rand(n, generator=g) * math.pi - math.pi / 2  # the half ring outside the mug: x < -MUG_RADIUS
    v = torch.rand(n, generator=g) * 2 * math.pi
    spine = torch.stack([-torch.cos(u) * ring, torch.zeros_like(u), torch.sin(u) * ring], dim=1)
    radial = torch.nn.functional.normalize(spine, dim=1)
    normals = torch.cos(v)[:, None] * radial + torch.sin(v)[:, None] * torch.tensor([0.0, 1.0, 0.0])
    pts = centre + spine + tube * normals
    area = math.pi * ring * 2 * math.pi * tube
    return pts, normals, _plain(MUG)(pts), torch.full((n,), 1.3 * math.sqrt(area / n))


def make_mug_scene(num_gaussians: int = 3000, seed: int = 0) -> GaussianScene:
    """A mug, logo at the front (+X), handle at the back (module docstring), deterministic for ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return _finish(_mug_body(int(0.88 * num_gaussians), g) + [_handle(int(0.12 * num_gaussians), g)])


# -------------------------------------------------------------------------------------------------------- chair
CUSHION, CHAIR_WOOD, CHAIR_BACK, BUTTON = (0.75, 0.12, 0.15), (0.40, 0.24, 0.10), (0.20, 0.55, 0.75), (1.0, 0.8, 0.2)
SEAT_X, SEAT_Z, BACK_X, CHAIR_Y, BACK_TOP, ARM_TOP = (-0.22, 0.32), (-0.22, -0.08), (-0.34, -0.22), 0.30, 0.45, 0.12
CHAIR_TWIN_PLANE = sum(BACK_X) / 2
"""The chair's front meets its back in the middle of the backrest: ``two_faced``'s mirror plane for it."""


def _paint_seat(pts: Tensor) -> Tensor:
    colours = _plain(CUSHION)(pts)
    side_or_under = (pts[:, 1].abs() > CHAIR_Y - 1e-3) | (pts[:, 2] < SEAT_Z[0] + 1e-3)
    colours[side_or_under] = torch.tensor(CHAIR_WOOD)
    return colours


def _paint_backrest(pts: Tensor) -> Tensor:
    colours = _plain(CHAIR_WOOD)(pts)
    front = pts[:, 0] > BACK_X[1] - 1e-3
    colours[front] = torch.tensor(CUSHION)
    for y in (-0.15, 0.0, 0.15):
        colours[front & _disks_in(pts, (y, 0.22), 0.035, (1, 2))] = torch.tensor(BUTTON)
    colours[pts[:, 0] < BACK_X[0] + 1e-3] = torch.tensor(CHAIR_BACK)
    return colours


def _paint_armrest(pts: Tensor) -> Tensor:
    colours = _plain(CHAIR_WOOD)(pts)
    colours[pts[:, 2] > ARM_TOP - 1e-3] = torch.tensor(CUSHION)  # a padded top
    return colours


def make_chair_scene(num_gaussians: int = 3000, seed: int = 0) -> GaussianScene:
    """An armchair, seat and cushioned backrest facing the front (+X) (module docstring), deterministic for
    ``seed``, within radius 0.68."""
    g = torch.Generator().manual_seed(seed)
    (x0, x1), (z0, z1), (b0, b1), y = SEAT_X, SEAT_Z, BACK_X, CHAIR_Y
    parts = _box((x0, -y, z0), (x1, y, z1), int(0.30 * num_gaussians), _paint_seat, g)
    parts += _box((b0, -y, z0), (b1, y, BACK_TOP), int(0.40 * num_gaussians), _paint_backrest, g)
    for side in (1, -1):
        lo, hi = sorted((side * (y - 0.08), side * (y + 0.02)))
        parts += _box((x0, lo, z1), (x1 - 0.02, hi, ARM_TOP), int(0.09 * num_gaussians), _paint_armrest, g,
                      skip=("-z",))  # fmt: skip
        for x in (x1 - 0.04, b0 + 0.04):
            parts += _box((x - 0.03, side * (y - 0.04) - 0.03, -0.45), (x + 0.03, side * (y - 0.04) + 0.03, z0),
                          int(0.03 * num_gaussians), _plain(CHAIR_WOOD), g, skip=("+z",))  # fmt: skip
    return _finish(parts)


# ------------------------------------------------------------------------------------------------------ penguin
PENGUIN_BLACK, PENGUIN_WHITE, PENGUIN_ORANGE = (0.08, 0.08, 0.12), (0.95, 0.95, 0.95), (0.95, 0.55, 0.10)
BODY_CENTRE, BODY_AXES = (0.0, 0.0, -0.12), (0.26, 0.28, 0.36)
PENGUIN_HEAD_CENTRE, PENGUIN_HEAD_AXES = (0.02, 0.0, 0.33), (0.17, 0.17, 0.16)


def _penguin_shell(n: int, centre, axes, belly: Callable[[Tensor], Tensor], g: torch.Generator) -> Part:
    """An ellipsoid, black but where ``belly(u)`` (unit-sphere coordinates [n, 3]) marks it white."""
    pts, normals, u = _ellipsoid_shell(n, centre, axes, g)
    colours = torch.where(belly(u)[:, None], torch.tensor(PENGUIN_WHITE), torch.tensor(PENGUIN_BLACK))
    return pts, normals, colours, torch.full((n,), _spacing(_ellipsoid_area(axes), n))


def make_penguin_scene(num_gaussians: int = 3000, seed: int = 0) -> GaussianScene:
    """A penguin, belly, face, beak and feet at the front (+X) (module docstring), deterministic for ``seed``,
    within radius 0.5."""
    g = torch.Generator().manual_seed(seed)
    n = num_gaussians
    body = _penguin_shell(int(0.47 * n), BODY_CENTRE, BODY_AXES, lambda u: (u[:, 0] > 0.35) & (u[:, 2] < 0.8), g)
    face = lambda u: (u[:, 0] > 0.3) & (u[:, 2] < 0.55)  # noqa: E731 (the white of the face, under the crown)
    head = _penguin_shell(int(0.25 * n), PENGUIN_HEAD_CENTRE, PENGUIN_HEAD_AXES, face, g)
    parts = [body, head, _blob(int(0.04 * n), (0.20, 0.0, 0.30), (0.07, 0.035, 0.03), PENGUIN_ORANGE, g)]
    for side in (1, -1):
        parts.append(_blob(int(0.015 * n), (0.15, side * 0.07, 0.37), (0.012, 0.025, 0.025), PENGUIN_BLACK, g))
        parts.append(_blob(int(0.045 * n), (0.08, side * 0.11, -0.47), (0.10, 0.06, 0.02), PENGUIN_ORANGE, g))
        parts.append(_blob(int(0.06 * n), (-0.02, side * 0.29, -0.10), (0.07, 0.025, 0.20), PENGUIN_BLACK, g))
    return _finish(parts)


# ---------------------------------------------------------------------------------------------------------- cat
CAT_FUR, CAT_STRIPE, CAT_WHITE, CAT_EYE, CAT_NOSE = (
    (0.90, 0.55, 0.20),
    (0.55, 0.28, 0.08),
    (0.96, 0.94, 0.90),
    (0.25, 0.70, 0.25),
    (0.95, 0.55, 0.60),
)
CAT_BODY_CENTRE, CAT_BODY_AXES = (-0.06, 0.0, -0.17), (0.30, 0.22, 0.27)
CAT_HEAD_CENTRE, CAT_HEAD_AXES = (0.13, 0.0, 0.22), (0.17, 0.19, 0.16)


def _cat_shell(n: int, centre, axes, white: Callable[[Tensor], Tensor], g: torch.Generator) -> Part:
    """An ellipsoid of ginger fur, dark stripes across its back half, white where ``white(u)`` (unit-sphere
    coordinates [n, 3]) marks it."""
    pts, normals, u = _ellipsoid_shell(n, centre, axes, g)
    colours = _plain(CAT_FUR)(pts)
    colours[(u[:, 0] < -0.1) & (torch.sin(14.0 * u[:, 2]) > 0.4)] = torch.tensor(CAT_STRIPE)
    colours[white(u)] = torch.tensor(CAT_WHITE)
    return pts, normals, colours, torch.full((n,), _spacing(_ellipsoid_area(axes), n))


def make_cat_scene(num_gaussians: int = 3000, seed: int = 0) -> GaussianScene:
    """A sitting cat, face and white chest at the front (+X), striped back and tail behind (module docstring),
    deterministic for ``seed``, within radius 0.6."""
    g = torch.Generator().manual_seed(seed)
    n = num_gaussians
    body = _cat_shell(int(0.50 * n), CAT_BODY_CENTRE, CAT_BODY_AXES, lambda u: (u[:, 0] > 0.55) & (u[:, 2] > -0.6), g)
    head = _cat_shell(int(0.26 * n), CAT_HEAD_CENTRE, CAT_HEAD_AXES, lambda u: (u[:, 0] > 0.6) & (u[:, 2] < 0.0), g)
    parts = [body, head, _blob(int(0.012 * n), (0.295, 0.0, 0.205), (0.015, 0.022, 0.016), CAT_NOSE, g)]
    for side in (1, -1):
        parts.append(_blob(int(0.03 * n), (0.10, side * 0.11, 0.38), (0.035, 0.05, 0.07), CAT_FUR, g))  # ears
        parts.append(_blob(int(0.015 * n), (0.285, side * 0.07, 0.26), (0.012, 0.028, 0.024), CAT_EYE, g))
        parts.append(_blob(int(0.04 * n), (0.17, side * 0.09, -0.42), (0.08, 0.05, 0.03), CAT_WHITE, g))  # paws
    for i in range(5):  # the tail curls up the back from the floor
        a = i / 4 * math.pi / 2
        centre = (-0.36 - 0.06 * math.sin(a), 0.0, -0.40 + 0.34 * (1 - math.cos(a)) + 0.10 * math.sin(a))
        parts.append(_blob(int(0.012 * n), centre, (0.05, 0.05, 0.07), CAT_STRIPE if i % 2 else CAT_FUR, g))
    return _finish(parts)


# ---------------------------------------------------------------------------------------------------------- bus
BUS_BODY, BUS_GLASS, BUS_ROOF, BUS_DARK, BUS_LAMP, BUS_TAIL = (
    (0.95, 0.75, 0.10),
    (0.40, 0.65, 0.85),
    (0.95, 0.95, 0.95),
    (0.10, 0.10, 0.10),
    (1.0, 1.0, 0.80),
    (0.90, 0.10, 0.10),
)
BUS_X, BUS_Y, BUS_Z = 0.56, 0.21, (-0.24, 0.26)


def _paint_bus(pts: Tensor) -> Tensor:
    colours = _plain(BUS_BODY)(pts)
    front, back = pts[:, 0] > BUS_X - 1e-3, pts[:, 0] < -BUS_X + 1e-3
    colours[front & _in_box(pts, (0, -0.18, -0.01), (1, 0.18, 0.22))] = torch.tensor(BUS_GLASS)  # the windscreen
    colours[(front | back) & (pts[:, 2] < -0.17)] = torch.tensor(BUS_DARK)  # bumpers
    for side in (1, -1):
        colours[front & _disks_in(pts, (0.14 * side, -0.10), 0.04, (1, 2))] = torch.tensor(BUS_LAMP)
        colours[back & _in_box(pts, (-1, 0.15 * side - 0.03, -0.14), (0, 0.15 * side + 0.03, -0.04))] = torch.tensor(
            BUS_TAIL
        )
        flank = pts[:, 1] * side > BUS_Y - 1e-3
        for x in (-0.40, -0.20, 0.0, 0.20, 0.40):  # a row of side windows
            colours[flank & _in_box(pts, (x - 0.08, -1, 0.03), (x + 0.08, 1, 0.20))] = torch.tensor(BUS_GLASS)
        for x in (0.36, -0.36):
            colours[flank & _disks_in(pts, (x, -0.22), 0.09, (0, 2))] = torch.tensor(BUS_DARK)  # wheels
    colours[back & _in_box(pts, (-1, -0.12, 0.08), (0, 0.12, 0.20))] = torch.tensor(BUS_GLASS)  # a small rear window
    colours[pts[:, 2] > BUS_Z[1] - 1e-3] = torch.tensor(BUS_ROOF)
    colours[pts[:, 2] < BUS_Z[0] + 1e-3] = torch.tensor(BUS_DARK)  # underside
    return colours


def make_bus_scene(num_gaussians: int = 3000, seed: int = 0) -> GaussianScene:
    """A bus, windscreen and headlights at the front (+X), a small window and red lights at the back (module
    docstring), deterministic for ``seed``, within radius 0.65."""
    g = torch.Generator().manual_seed(seed)
    return _finish(_box((-BUS_X, -BUS_Y, BUS_Z[0]), (BUS_X, BUS_Y, BUS_Z[1]), num_gaussians, _paint_bus, g))


# -------------------------------------------------------------------------------------------------------- radio
RADIO_WOOD, RADIO_GRILLE, RADIO_SLAT, RADIO_DIAL, RADIO_KNOB, RADIO_PANEL = (
    (0.55, 0.33, 0.15),
    (0.92, 0.86, 0.70),
    (0.45, 0.38, 0.28),
    (0.97, 0.97, 0.92),
    (0.15, 0.12, 0.10),
    (0.28, 0.30, 0.34),
)
RADIO_X, RADIO_Y, RADIO_Z = 0.17, 0.36, (-0.24, 0.22)


def _paint_radio(pts: Tensor) -> Tensor:
    colours = _plain(RADIO_WOOD)(pts)
    front, back = pts[:, 0] > RADIO_X - 1e-3, pts[:, 0] < -RADIO_X + 1e-3
    grille = front & _in_box(pts, (0, -0.30, -0.18), (1, 0.03, 0.16))
    colours[grille] = torch.tensor(RADIO_GRILLE)
    colours[grille & (torch.sin(pts[:, 2] * 2 * math.pi / 0.06) > 0.6)] = torch.tensor(RADIO_SLAT)
    colours[front & _disks_in(pts, (0.18, 0.04), 0.095, (1, 2))] = torch.tensor(RADIO_DIAL)
    for y in (0.12, 0.24):
        colours[front & _disks_in(pts, (y, -0.14), 0.035, (1, 2))] = torch.tensor(RADIO_KNOB)
    colours[back & _in_box(pts, (-1, -0.30, -0.19), (0, 0.30, 0.17))] = torch.tensor(RADIO_PANEL)
    return colours


def make_radio_scene(num_gaussians: int = 3000, seed: int = 0) -> GaussianScene:
    """A box-shaped radio whose front and back differ only in colour: a cream speaker grille, a dial and two knobs at
    the front (+X), a plain grey panel at the back (module docstring), deterministic for ``seed``, within radius
    0.46."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = (-RADIO_X, -RADIO_Y, RADIO_Z[0]), (RADIO_X, RADIO_Y, RADIO_Z[1])
    return _finish(_box(lo, hi, num_gaussians, _paint_radio, g))


REFERENCE_OBJECTS: dict[str, Callable[..., GaussianScene]] = {
    "car": make_car_scene,
    "house": make_house_scene,
    "mug": make_mug_scene,
    "chair": make_chair_scene,
    "penguin": make_penguin_scene,
    "cat": make_cat_scene,
    "bus": make_bus_scene,
    "radio": make_radio_scene,
}
"""The procedural reference objects by name (the head is ``example.make_head_scene``)."""

TWIN_PLANES: dict[str, float] = {"chair": CHAIR_TWIN_PLANE}
"""Where each object's front meets its back, ``two_faced``'s ``plane_x``, by name; 0 for the others."""


def reference_path(name: str) -> Path:
    """``assets/references/<name>.ply``."""
    return ASSETS / f"{name}.ply"


# ------------------------------------------------------------------------------------------- two-faced twins
_SH_ODD_IN_X = (2, 3, 6, 9, 12, 14)
"""The shN columns (3DGS order, degree 1..3) whose real SH basis function is odd in x: x; xy, xz; xyz,
x(4z^2 - x^2 - y^2), x(x^2 - 3y^2). A reflection x -> -x flips their sign."""


def mirror_x(scene: GaussianScene, plane_x: float = 0.0) -> GaussianScene:
    """The scene reflected through the plane x = ``plane_x`` (front <-> back): means x -> 2 plane_x - x, each
    Gaussian's rotation R -> M R M with M = diag(-1, 1, 1) (quaternion (w, x, y, z) -> (w, x, -y, -z)), and the
    view-dependent colour reflected with it. With ``plane_x`` 0 its render from azimuth 180 - a is the left-right flip
    of the scene's from azimuth a."""
    params = {key: value.detach().clone() for key, value in scene.params.items()}
    params["means"][:, 0] = 2.0 * plane_x - params["means"][:, 0]
    params["quats"][:, 2:] *= -1.0
    columns = [c for c in _SH_ODD_IN_X if c < params["shN"].shape[1]]
    params["shN"][:, columns] *= -1.0
    return GaussianScene(params)


def two_faced(scene: GaussianScene, plane_x: float = 0.0) -> GaussianScene:
    """The Janus twin of a reference object (front +X): its front part (x >= ``plane_x``) kept, and its back part
    replaced by the front part reflected through x = ``plane_x``, so that it shows its front from azimuth 0 and from
    azimuth 180. ``plane_x`` is where the object's front meets its back (``TWIN_PLANES``): the middle of the
    backrest for the chair, whose front faces forward from behind x = 0, and 0 for every other object.
    The twin is moved by -``plane_x`` along x, so that its mirror plane lies at x = 0, the centre of the cameras'
    orbit. Comparing a run's back views with the object's and with its twin's tells a second front from a back."""
    front = GaussianScene({k: v.detach()[scene.params["means"][:, 0] >= plane_x] for k, v in scene.params.items()})
    mirrored = mirror_x(front, plane_x)
    twin = {k: torch.cat([front.params[k], mirrored.params[k]]).detach() for k in front.params}
    twin["means"][:, 0] -= plane_x
    return GaussianScene(twin)
