"""The typed configuration of ``esd-gs generate``: the components' own configs, composed (tyro turns it into the
command line; named presets are values of it, ``presets.py``; YAML files save and load it, ``yaml_io.py``).

Each component defines and checks its own settings (``__post_init__``): the prior phi (one config per prior,
``priors.PRIORS``), the estimator psi (one per estimator, ``estimators.ESTIMATORS``), the update rule
(``DistillationConfig``), timesteps, cameras, the initial Gaussians, the optimiser, densification and outputs.
``GenerateConfig`` adds what belongs to a run as a whole and checks how its parts fit together (``validate``).
Every schedule is a fraction of the run (``steps``), so changing the step count never breaks one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, Union

import tyro

from ..cameras import OrbitSampler
from ..distillation import DistillationConfig, TimestepSchedule
from ..errors import UserError
from ..estimators import ESTIMATORS, LoRAPsiConfig
from ..evaluation.psi_error import PsiDiagnosticConfig
from ..priors import PRIORS, RunContext, StableDiffusionConfig
from ..render import UserBackend
from ..scene import BallInit
from ..training.densify import DensifyConfig
from ..training.outputs import OutputConfig
from ..training.trainer import OptimConfig

PriorChoice = Union[tuple(Annotated[config, tyro.conf.subcommand(name)] for name, config in PRIORS.items())]
"""``--prior``: one of the configs of ``priors.PRIORS`` (``prior:NAME`` on the command line)."""
PsiChoice = Union[tuple(Annotated[config, tyro.conf.subcommand(name)] for name, config in ESTIMATORS.items())]
"""``--psi``: one of the configs of ``estimators.ESTIMATORS`` (``psi:NAME`` on the command line)."""

PresetName = Literal["esd", "vsd", "sds", "preview", "synthetic", "synthetic-unet"]
"""The names of the presets (``presets.PRESETS`` holds their values)."""

MAX_RESOLUTION = 2048
"""Largest render size accepted (4x Stable Diffusion's native 512 px; the renderer's buffers grow with its square)."""
MAX_BATCH = 64
"""Most views per step accepted."""


def flat(factory):
    """A nested config whose settings read as the parent's own: ``--method`` on the command line (with
    ``tyro.conf.OmitArgPrefixes`` on the field's type) and ``method:`` at the top of a YAML preset."""
    return field(default_factory=factory, metadata={"flat": True})


@dataclass
class GenerateConfig:
    """Turn a text prompt into 3D Gaussians with score distillation (ESD by default).

    The run directory gets scene.ply (3DGS), scene.splat and a turntable video.

    For example:
      esd-gs generate "a plush dragon toy"
      esd-gs generate "a head" --preset synthetic
      esd-gs generate --resume runs/a-plush-dragon-toy-esd
    """

    prompt: Annotated[str, tyro.conf.Positional, tyro.conf.PositionalMetavarFromFieldName] = ""
    """The text prompt (for example "a plush dragon toy"). Not needed with --resume."""
    preset: PresetName = "esd"
    """The named defaults this run starts from (esd-gs generate --help lists them); flags override them."""
    config: Path | None = None
    """A YAML file of settings (a run's config.yaml, or your own preset) applied over --preset; flags override it."""
    distill: Annotated[DistillationConfig, tyro.conf.OmitArgPrefixes] = flat(DistillationConfig)
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
    out: Path | None = None
    """Run directory; None = runs/<prompt>-<method>."""
    resume: Path | None = None
    """Continue the run in this directory from its last checkpoint (its saved config is used)."""
    overwrite: bool = False
    """Replace a run directory that already holds a run."""
    device: str = "auto"
    """auto (CUDA if available), cpu or cuda."""
    backend: UserBackend = "auto"
    """Renderer: auto (gsplat on CUDA when its kernels load, else our PyTorch renderer), gsplat (CUDA only) or torch."""
    mesh: bool = False
    """Also write scene.glb at the end: a vertex-coloured mesh of the Gaussians (as esd-gs export --to .glb)."""
    viewer: bool = False
    """Serve a live 3D view of the Gaussians in the browser while training (viser; refreshed every few seconds)."""
    viewer_port: int = 8080
    """Port of the live view's web page (with --viewer)."""
    max_bad_steps: int = 20
    """Stop with an error after this many consecutive steps with a NaN/Inf loss or gradient."""
    prior: PriorChoice = field(default_factory=StableDiffusionConfig)
    psi: PsiChoice = field(default_factory=LoRAPsiConfig)
    init: BallInit = field(default_factory=BallInit)
    cameras: OrbitSampler = field(default_factory=OrbitSampler)
    timesteps: TimestepSchedule = field(default_factory=TimestepSchedule)
    optim: OptimConfig = field(default_factory=OptimConfig)
    densify: DensifyConfig = field(default_factory=DensifyConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    diagnose: PsiDiagnosticConfig = field(default_factory=PsiDiagnosticConfig)

    @property
    def run_context(self) -> RunContext:
        """What the prior may read of this run (``priors.RunContext``)."""
        return RunContext(self.prompt, self.resolution, self.cameras, self.background)

    def validate(self) -> None:
        """The run's own settings and how the parts fit together (each part checked its own) -> one UserError."""
        if self.resume is None and not self.prompt.strip():
            raise UserError('the prompt is empty: esd-gs generate "a plush dragon toy"')
        if self.steps < 1:
            raise UserError(f"--steps must be at least 1, got {self.steps}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not 1 <= self.viewer_port <= 65535:
            raise UserError(f"--viewer-port must be in 1..65535, got {self.viewer_port}")
        if self.mesh:
            from ..mesh.extract import import_mesh_tools

            import_mesh_tools()
        if self.viewer:
            import importlib.util

            if importlib.util.find_spec("viser") is None:
                raise UserError("--viewer needs viser, which is not installed: pip install 'esd-gs[viewer]'")
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
        self.prior.check_run(self.resolution_start)
        if self.distill.needs_psi and self.psi.name not in self.prior.estimators:
            raise UserError(
                f"prior:{self.prior.name} works with psi:{' or psi:'.join(self.prior.estimators)}, "
                f"not psi:{self.psi.name}"
            )
        if self.init.num_points > self.densify.max_gaussians:
            raise UserError(
                f"--init.num-points {self.init.num_points} is above --densify.max-gaussians "
                f"{self.densify.max_gaussians}"
            )
