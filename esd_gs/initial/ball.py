"""``init:ball`` (the default): random Gaussians in a ball at the origin, the usual start of text-to-3D
(DreamFusion-style NeRFs start from a blob; the 3DGS systems from 4-5k points in a ball, ``DESIGN.md``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..errors import ConfigError, UserError
from ..scene import GaussianScene
from .base import InitConfig, InitContext


@dataclass
class BallInit(InitConfig):
    """Random Gaussians in a ball at the origin (the usual start for text-to-3D)."""

    name: ClassVar[str] = "ball"
    starting: ClassVar[str] = "random Gaussians in a ball"

    num_points: int = 4096
    """Number of Gaussians."""
    radius: float = 0.6
    """Radius of the ball, in world units (the camera orbits at ~2.5)."""
    opacity: float = 0.1
    """Initial opacity of every Gaussian."""
    color: float = 0.5
    """Initial gray level of every Gaussian."""
    sh_degree: int = 0
    """Spherical-harmonic degree (0..3)."""

    def __post_init__(self) -> None:
        if not 0 <= self.sh_degree <= 3:
            raise ConfigError(f"--init.sh-degree must be in 0..3, got {self.sh_degree}")
        if self.num_points < 1:
            raise ConfigError(f"--init.num-points must be at least 1, got {self.num_points}")
        if not self.radius > 0 or not 0 < self.opacity < 1 or not 0 <= self.color <= 1:
            raise ConfigError("--init.radius must be > 0, --init.opacity in (0, 1) and --init.color in [0, 1]")

    def check_run(self, max_gaussians: int) -> None:
        if self.num_points > max_gaussians:
            raise UserError(f"--init.num-points {self.num_points} is above --densify.max-gaussians {max_gaussians}")

    def build(self, context: InitContext) -> GaussianScene:
        return self.scene(torch.Generator().manual_seed(context.seed + 2))

    def scene(self, generator: torch.Generator | None = None) -> GaussianScene:
        """The ball drawn from ``generator`` (``GaussianScene.random_ball``)."""
        return GaussianScene.random_ball(
            self.num_points, self.radius, self.opacity, self.color, self.sh_degree, generator=generator
        )
