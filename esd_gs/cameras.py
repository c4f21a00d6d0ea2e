"""Cameras c: orbit sampling, turntables and the conversions every other part uses.

Conventions (one of each, used everywhere in esd-gs):

- **World**: right-handed, **+Z up**. The object sits at the origin. Its *front* faces **+X**: azimuth 0 looks at
  the front, azimuth 180 deg at the back. Azimuth grows counter-clockwise seen from above (0 -> +X, 90 -> +Y).
  Elevation is the angle above the XY plane. A camera at (radius, elevation, azimuth) sits at
  ``radius * (cos(el) cos(az), cos(el) sin(az), sin(el))`` and looks at the origin.
- **Camera**: OpenCV / gsplat axes: +x right, +y down, +z forward (into the scene). ``c2w`` is the 4x4
  camera-to-world matrix whose columns are (right, down, forward, position).
- **Pixels**: pinhole intrinsics ``K = [[f, 0, W/2], [0, f, H/2], [0, 0, 1]]`` with ``f = H / (2 tan(fovy / 2))``;
  pixel (i, j) has its centre at (j + 0.5, i + 0.5), as in gsplat.
- **Camera embedding** (the condition of the LoRA estimator psi): the 4x4 ``c2w`` above flattened row-major to
  ``EMBEDDING_SIZE`` = 16 numbers, no normalisation; the null camera is the zero vector (``null_embedding``).
- **Azimuths** are reported in [-180, 180) (``wrap_azimuth``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import ConfigError

EMBEDDING_SIZE = 16
"""Numbers in a camera embedding (the flattened 4x4 c2w)."""
MAX_VIEWS = 3600
"""Most turntable views accepted (one per 0.1 degree)."""


def wrap_azimuth(azimuth: Tensor) -> Tensor:
    """Azimuths in degrees -> the same directions in [-180, 180)."""
    return torch.remainder(azimuth + 180.0, 360.0) - 180.0


def null_embedding(batch: int, device: torch.device | str | None = None) -> Tensor:
    """[batch, 16] the null camera: psi's condition for "no camera" (camera dropout, eq. 9's null term)."""
    return torch.zeros(batch, EMBEDDING_SIZE, device=device)


@dataclass
class Cameras:
    """A batch of B pinhole cameras. All angles in degrees."""

    c2w: Tensor
    """[B, 4, 4] camera-to-world matrices (OpenCV axes, see module docstring)."""
    fovy: Tensor
    """[B] vertical field of view, degrees."""
    azimuth: Tensor
    """[B] azimuth of the camera position, degrees (0 = front, +X)."""
    elevation: Tensor
    """[B] elevation of the camera position, degrees."""
    radius: Tensor
    """[B] distance from the origin."""

    def __len__(self) -> int:
        return self.c2w.shape[0]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Cameras:
        def move(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype or t.dtype)

        return Cameras(move(self.c2w), move(self.fovy), move(self.azimuth), move(self.elevation), move(self.radius))

    def __getitem__(self, index) -> Cameras:
        if isinstance(index, int):
            index = slice(index, index + 1)
        return Cameras(
            self.c2w[index], self.fovy[index], self.azimuth[index], self.elevation[index], self.radius[index]
        )

    @property
    def positions(self) -> Tensor:
        """[B, 3] camera centres in world space."""
        return self.c2w[:, :3, 3]

    def viewmats(self) -> Tensor:
        """[B, 4, 4] world-to-camera matrices, as gsplat's ``rasterization(viewmats=...)`` expects."""
        rot = self.c2w[:, :3, :3]
        pos = self.c2w[:, :3, 3:]
        w2c = torch.zeros_like(self.c2w)
        w2c[:, :3, :3] = rot.transpose(1, 2)
        w2c[:, :3, 3:] = -rot.transpose(1, 2) @ pos
        w2c[:, 3, 3] = 1.0
        return w2c

    def focal(self, height: int) -> Tensor:
        """[B] focal length in pixels for an image ``height`` pixels tall."""
        return 0.5 * height / torch.tan(torch.deg2rad(self.fovy) / 2)

    def intrinsics(self, width: int, height: int) -> Tensor:
        """[B, 3, 3] pinhole intrinsics with square pixels and the principal point at the image centre."""
        f = self.focal(height)
        K = torch.zeros(len(self), 3, 3, dtype=self.c2w.dtype, device=self.c2w.device)
        K[:, 0, 0] = f
        K[:, 1, 1] = f
        K[:, 0, 2] = width / 2
        K[:, 1, 2] = height / 2
        K[:, 2, 2] = 1.0
        return K

    def embedding(self) -> Tensor:
        """[B, 16] camera condition for psi: ``c2w`` flattened row-major (see the module docstring)."""
        return self.c2w.reshape(len(self), EMBEDDING_SIZE)


def look_at_origin(position: Tensor, up: tuple[float, float, float] = (0.0, 0.0, 1.0)) -> Tensor:
    """[B, 3] camera centres -> [B, 4, 4] OpenCV camera-to-world matrices looking at the origin with world ``up``.

    Columns: right = forward x up, down = forward x right, forward = -position / |position|.
    A camera exactly above or below the origin uses +X as a fallback right vector.
    """
    forward = -position / position.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    up_vec = torch.tensor(up, dtype=position.dtype, device=position.device).expand_as(forward)
    right = torch.linalg.cross(forward, up_vec, dim=-1)
    degenerate = right.norm(dim=-1) < 1e-8
    if degenerate.any():
        fallback = torch.tensor([0.0, 1.0, 0.0], dtype=position.dtype, device=position.device)
        right[degenerate] = torch.linalg.cross(forward[degenerate], fallback.expand(int(degenerate.sum()), 3), dim=-1)
    right = right / right.norm(dim=-1, keepdim=True)
    down = torch.linalg.cross(forward, right, dim=-1)
    c2w = torch.zeros(position.shape[0], 4, 4, dtype=position.dtype, device=position.device)
    c2w[:, :3, 0] = right
    c2w[:, :3, 1] = down
    c2w[:, :3, 2] = forward
    c2w[:, :3, 3] = position
    c2w[:, 3, 3] = 1.0
    return c2w


def orbit_cameras(azimuth: Tensor, elevation: Tensor, radius: Tensor, fovy: Tensor) -> Cameras:
    """Cameras on a sphere around the origin, all looking at it. Angles in degrees, tensors of shape [B]."""
    az, el = torch.deg2rad(azimuth), torch.deg2rad(elevation)
    position = torch.stack(
        [radius * torch.cos(el) * torch.cos(az), radius * torch.cos(el) * torch.sin(az), radius * torch.sin(el)], dim=-1
    )
    return Cameras(look_at_origin(position), fovy, azimuth, elevation, radius)


@dataclass
class OrbitSampler:
    """Random cameras on an orbit: each quantity uniform in its range (azimuth in [-180, 180))."""

    radius: tuple[float, float] = (2.5, 2.5)
    """Distance range from the origin."""
    elevation: tuple[float, float] = (-10.0, 60.0)
    """Elevation range, degrees."""
    azimuth: tuple[float, float] = (-180.0, 180.0)
    """Azimuth range, degrees (0 = front)."""
    fovy: tuple[float, float] = (40.0, 70.0)
    """Vertical field-of-view range, degrees."""

    def __post_init__(self) -> None:
        for name, bounds in (
            ("radius", (0, math.inf)),
            ("elevation", (-90, 90)),
            ("azimuth", (-360, 360)),
            ("fovy", (0, 180)),
        ):
            lo, hi = getattr(self, name)
            if (
                not (math.isfinite(lo) and math.isfinite(hi))
                or not (bounds[0] <= lo <= hi <= bounds[1])
                or (name in ("radius", "fovy") and not lo > bounds[0])
                or (name == "fovy" and not hi < 180)
            ):
                raise ConfigError(f"--cameras.{name} must be a range lo <= hi within {bounds}, got ({lo}, {hi})")

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Cameras:
        def uniform(lo_hi: tuple[float, float]) -> Tensor:
            lo, hi = lo_hi
            return lo + (hi - lo) * torch.rand(batch_size, generator=generator, dtype=torch.float64)

        # Draw in float64 so that a seed gives the same cameras on every machine, then cast.
        az, el, r, fov = uniform(self.azimuth), uniform(self.elevation), uniform(self.radius), uniform(self.fovy)
        return orbit_cameras(az.float(), el.float(), r.float(), fov.float())


def turntable(
    num_views: int, elevation: float = 15.0, radius: float = 2.5, fovy: float = 50.0, start_azimuth: float = 0.0
) -> Cameras:
    """``num_views`` cameras evenly spaced in azimuth (full circle, starting at ``start_azimuth``, degrees)."""
    if num_views < 1:
        raise ValueError("a turntable needs at least one view")
    az = start_azimuth + torch.arange(num_views, dtype=torch.float32) * (360.0 / num_views)
    az = wrap_azimuth(az)
    full = torch.full((num_views,), 1.0)
    return orbit_cameras(az, full * elevation, full * radius, full * fovy)
