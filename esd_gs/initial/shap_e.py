"""``init:shap-e``: start from a coarse object that OpenAI's Shap-E (Jun & Nichol 2023) makes from the prompt, as
GaussianDreamer (Yi et al. 2024) does: its mesh's surface is sampled into coloured points, grown with noisy points and
brightened colours (``points.py``), and each point becomes a Gaussian.

Shap-E runs through diffusers' ``ShapEPipeline`` (weights ``openai/shap-e``, or a local diffusers folder): its
denoiser makes a latent from the prompt (``output_type="latent"``), and the renderer's marching cubes turn the latent's
signed distance field into a mesh on a ``grid_size``^3 grid (``ShapERenderer.decode_to_mesh``), with a colour per
vertex. Then, in this order:

- Colours: the renderer gives linear RGB (it converts its sRGB texture to linear); esd-gs's colours are display
  values, so they are encoded back to sRGB (IEC 61966-2-1's transfer function, ``linear_to_srgb``).
- Axes: Shap-E's space is +Z up (its renders orbit the Z axis), and its objects are taken to face -Y: glTF assets
  face +Z, which Blender's importer (Shap-E's training renders) turns to -Y, and its first pan camera looks from -Y.
  This is an assumption, not checked against real weights (none exist here; GaussianDreamer does not rotate Shap-E's
  points at all). esd-gs's world is +Z up with the front towards +X, so (x, y, z) -> (-y, x, z): a quarter turn
  about +Z (``SHAP_E_TO_WORLD``).
- Size: the object is centred (its bounding box's centre at the origin) and scaled so that its farthest point from
  the centre is ``extent`` times the nearest camera orbit radius (0.24 x 2.5 = 0.6 world units: the ball's radius).

Shap-E's models are moved off the GPU and dropped once the points are made.
"""

from __future__ import annotations

import gc
import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor

from ..errors import ConfigError, UserError
from ..progress import console
from ..scene import GaussianScene
from .base import InitConfig, InitContext
from .points import gaussians_from_points, grow_points, sample_surface

SHAP_E_TO_WORLD = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
"""Shap-E's axes -> esd-gs's world, as a matrix applied to column vectors: (x, y, z) -> (-y, x, z), so Shap-E's -Y
(its objects' front) becomes +X (esd-gs's front) and +Z stays up."""

DEFAULT_MODEL = "shap-e"
"""``openai/shap-e`` on the Hugging Face Hub (``priors.sources.SHAP_E_LAYOUT``)."""


def linear_to_srgb(linear: Tensor) -> Tensor:
    """Linear RGB in [0, 1] -> sRGB-encoded values (IEC 61966-2-1): 12.92 c below 0.0031308, else
    1.055 c^(1/2.4) - 0.055."""
    c = linear.clamp(0.0, 1.0)
    return torch.where(c <= 0.0031308, 12.92 * c, 1.055 * c.clamp_min(0.0031308).pow(1.0 / 2.4) - 0.055)


def mesh_to_world(vertices: Tensor, orbit_radius: float, extent: float) -> Tensor:
    """Shap-E vertices [V, 3] -> esd-gs's world: rotated by ``SHAP_E_TO_WORLD``, centred on their bounding box, and
    scaled so that the farthest is ``extent * orbit_radius`` from the origin (module docstring)."""
    world = vertices.float() @ SHAP_E_TO_WORLD.T
    low, high = world.min(dim=0).values, world.max(dim=0).values
    world = world - (low + high) / 2
    farthest = float(world.norm(dim=1).max())
    return world * (extent * orbit_radius / max(farthest, 1e-8))


@dataclass
class ShapEInit(InitConfig):
    """A coarse object made by Shap-E from the prompt (GaussianDreamer's start): its surface as coloured Gaussians."""

    name: ClassVar[str] = "shap-e"
    starting: ClassVar[str] = "a coarse object from Shap-E"

    model: str = DEFAULT_MODEL
    """Shap-E's weights: shap-e (openai/shap-e on the Hub), another Hub id, or a local diffusers folder."""
    steps: int = 64
    """Denoising steps of Shap-E's sampler (diffusers' Heun scheduler: 2 x steps - 1 passes of its denoiser)."""
    guidance_scale: float = 15.0
    """Shap-E's text classifier-free guidance scale (GaussianDreamer and diffusers' example: 15)."""
    grid_size: int = 128
    """Marching-cubes grid of the mesh, per side (diffusers' default 128; 64 costs an eighth of the queries)."""
    surface_points: int = 4096
    """Points sampled on the mesh's surface (area-weighted, with the interpolated vertex colours)."""
    grown_points: int = 12288
    """Noisy points grown around them (GaussianDreamer's point growing)."""
    spread: float = 0.01
    """Radius of the ball a grown point lies in around its seed point, as a fraction of the object's size."""
    brighten: float = 0.2
    """Most a grown point's colour is brightened (per channel, uniform; GaussianDreamer's colour perturbation)."""
    extent: float = 0.24
    """The object's farthest point from its centre, as a fraction of the nearest camera orbit radius."""
    opacity: float = 0.1
    """Initial opacity of every Gaussian."""
    sh_degree: int = 0
    """Spherical-harmonic degree (0..3)."""
    precision: Literal["auto", "fp32", "fp16"] = "auto"
    """Shap-E's weights: auto (fp16 on CUDA, fp32 on a CPU), fp32 or fp16."""

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"--init.steps must be at least 1, got {self.steps}")
        if not 8 <= self.grid_size <= 512:
            raise ConfigError(f"--init.grid-size must be in 8..512, got {self.grid_size}")
        if self.surface_points < 1 or self.grown_points < 0:
            raise ConfigError("--init.surface-points must be at least 1 and --init.grown-points at least 0")
        for key in ("guidance_scale", "spread", "brighten", "extent"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"--init.{key.replace('_', '-')} must be a finite number >= 0, got {value}")
        if not self.extent > 0:
            raise ConfigError(f"--init.extent must be > 0, got {self.extent}")
        if not 0 < self.opacity < 1:
            raise ConfigError(f"--init.opacity must be in (0, 1), got {self.opacity}")
        if not 0 <= self.sh_degree <= 3:
            raise ConfigError(f"--init.sh-degree must be in 0..3, got {self.sh_degree}")

    @property
    def num_points(self) -> int:
        """How many Gaussians the start makes."""
        return self.surface_points + self.grown_points

    def check_run(self, max_gaussians: int) -> None:
        if self.num_points > max_gaussians:
            raise UserError(
                f"init:shap-e makes {self.num_points} Gaussians (--init.surface-points + --init.grown-points), above "
                f"--densify.max-gaussians {max_gaussians}"
            )

    def model_source(self) -> str:
        return self.model

    def describe(self) -> str:
        steps = f"{self.steps} step{'' if self.steps == 1 else 's'}"
        return f"a coarse object from Shap-E ({self.model}, {steps}, {self.grid_size}^3 mesh grid)"

    def build(self, context: InitContext) -> GaussianScene:
        from .shap_e_model import load_shap_e, shap_e_mesh

        pipe = load_shap_e(self.model, context.device, self.precision, console.print)
        try:
            vertices, faces, colors = shap_e_mesh(
                pipe, context.prompt, self.steps, self.guidance_scale, self.grid_size, context.seed, context.device
            )
        finally:
            pipe.to("cpu")
            del pipe
            gc.collect()
            if context.device.type == "cuda":
                torch.cuda.empty_cache()
        if faces.shape[0] == 0:
            raise UserError(
                f"Shap-E made no surface for {context.prompt!r} (its mesh is empty): try another --seed or more "
                "--init.steps, or start from init:ball"
            )
        return self.from_mesh(vertices, faces, colors, min(context.cameras.radius), context.seed)

    def from_mesh(
        self, vertices: Tensor, faces: Tensor, linear_colors: Tensor, orbit_radius: float, seed: int
    ) -> GaussianScene:
        """Shap-E's mesh (vertices [V, 3] in its axes, faces [F, 3], linear vertex colours [V, 3]) -> the initial
        Gaussians (module docstring), deterministic in ``seed``."""
        generator = torch.Generator().manual_seed(seed + 2)
        world = mesh_to_world(vertices, orbit_radius, self.extent)
        colors = linear_to_srgb(linear_colors.float())
        points, shades = sample_surface(world, faces, colors, self.surface_points, generator)
        size = 2 * self.extent * orbit_radius
        points, shades = grow_points(points, shades, self.grown_points, self.spread * size, self.brighten, generator)
        return gaussians_from_points(points, shades, self.opacity, self.sh_degree)
