"""The settings of the loop itself (``TrainingConfig``): what the ``Trainer`` reads. ``GenerateConfig`` extends it
with the prompt, the prior phi, the estimator psi, the update rule and where the run lives, so the loop needs to
know none of those (it gets them built: ``pipeline.build``).

Every schedule is a fraction of the run (``steps``), so changing the step count never breaks one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Literal, Union

import tyro

from ..cameras import OrbitSampler
from ..errors import ConfigError, UserError
from ..initial import INITS, BallInit
from ..render import UserBackend
from ..scene import PARAM_KEYS
from .densify import DensifyConfig
from .outputs import OutputConfig

MAX_RESOLUTION = 2048
"""Largest render size accepted (4x Stable Diffusion's native 512 px; the renderer's buffers grow with its square)."""
MAX_BATCH = 64
"""Most views per step accepted."""

InitChoice = Union[tuple(Annotated[config, tyro.conf.subcommand(name)] for name, config in INITS.items())]
"""``--init``: one of the configs of ``initial.INITS`` (``init:NAME`` on the command line)."""


@dataclass
class OptimConfig:
    """Adam learning rates of the Gaussian parameters (one optimiser per parameter, as gsplat's strategies expect)."""

    means: float = 1e-3
    """Learning rate of the centres at the start of the run (decays exponentially to means_end)."""
    means_end: float = 2e-5
    """Learning rate of the centres at the end of the run."""
    scales: float = 5e-3
    """Learning rate of the log-scales."""
    quats: float = 1e-3
    """Learning rate of the quaternions."""
    opacities: float = 5e-2
    """Learning rate of the opacity logits."""
    sh0: float = 1e-2
    """Learning rate of the DC colour."""
    shN: float = 5e-4
    """Learning rate of the higher SH bands."""

    def __post_init__(self) -> None:
        for key in ("means", "means_end", *PARAM_KEYS[1:]):
            rate = getattr(self, key)
            if not (math.isfinite(rate) and rate > 0):
                raise ConfigError(f"--optim.{key.replace('_', '-')} must be a positive learning rate, got {rate}")


@dataclass
class TrainingConfig:
    """The loop's settings: steps, views per step and their size, backgrounds, the seed, the renderer, the initial
    Gaussians, their cameras, optimiser and densification, and what the run directory receives."""

    steps: int = 2500
    """Number of optimisation steps."""
    batch_size: int = 1
    """Views rendered per step."""
    resolution: int = 512
    """Render size in pixels (a multiple of 8) once the resolution schedule has reached it."""
    resolution_start: int | None = 256
    """Render size before resolution_switch, capped at resolution (None = always resolution)."""
    resolution_switch: float = 0.3
    """Fraction of the run at which rendering switches from resolution_start to resolution."""
    background: Literal["random", "white", "black"] = "random"
    """Background behind the Gaussians: random (white, black or a random colour per view), white or black."""
    seed: int = 0
    """Random seed (runs on CPU are deterministic for a seed)."""
    backend: UserBackend = "auto"
    """Renderer: auto (gsplat on CUDA when its kernels load, else our PyTorch renderer), gsplat (CUDA only) or torch."""
    mesh: bool = False
    """Also write scene.glb at the end: a vertex-coloured mesh of the Gaussians (as esd-gs export --to .glb)."""
    max_bad_steps: int = 20
    """Stop with an error after this many consecutive steps with a NaN/Inf loss or gradient."""
    init: InitChoice = field(default_factory=BallInit)
    cameras: OrbitSampler = field(default_factory=OrbitSampler)
    optim: OptimConfig = field(default_factory=OptimConfig)
    densify: DensifyConfig = field(default_factory=DensifyConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def validate(self, resuming: bool = False) -> None:
        """How the loop's settings fit together (each nested config checked its own): one ``UserError``. A run
        ``resuming`` from its checkpoint does not check its start (``--init``): it is not made again."""
        if self.steps < 1:
            raise UserError(f"--steps must be at least 1, got {self.steps}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.mesh:
            from ..mesh.extract import import_mesh_tools

            import_mesh_tools()
        if self.batch_size > MAX_BATCH:
            raise UserError(f"--batch-size must be at most {MAX_BATCH} views per step, got {self.batch_size}")
        for name in ("resolution", "resolution_start"):
            value = getattr(self, name)
            if value is not None and (value < 8 or value % 8):
                raise UserError(f"--{name.replace('_', '-')} must be a positive multiple of 8, got {value}")
        if self.resolution > MAX_RESOLUTION:
            raise UserError(f"--resolution {self.resolution} is above {MAX_RESOLUTION} px: no prior works at that size")
        if not 0 <= self.resolution_switch <= 1:
            raise UserError(
                f"--resolution-switch must be a fraction of the run in [0, 1], got {self.resolution_switch}"
            )
        if not 0 <= self.seed < 2**62:
            raise UserError(f"--seed must be in [0, 2**62), got {self.seed}")
        if self.max_bad_steps < 1:
            raise UserError(f"--max-bad-steps must be at least 1, got {self.max_bad_steps}")
        if not resuming:
            self.init.check_run(self.densify.max_gaussians)
