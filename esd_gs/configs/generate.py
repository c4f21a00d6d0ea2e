"""The typed configuration of ``esd-gs generate``: the components' own configs, composed (tyro turns it into the
command line; presets are YAML values of it, ``presets.py``).

Each component defines and checks its own settings (``__post_init__``): the update rule (``DistillationConfig``),
timesteps, psi, cameras, the initial Gaussians, the optimiser, densification, outputs and the synthetic prior.
``GenerateConfig`` adds what belongs to a run as a whole and checks how its parts fit together (``validate``).
Every schedule is a fraction of the run (``steps``), so changing the step count never breaks one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import tyro

from ..cameras import OrbitSampler
from ..distillation import DistillationConfig, TimestepSchedule
from ..errors import UserError
from ..estimators import PsiConfig
from ..evaluation.psi_error import PsiDiagnosticConfig
from ..priors.sources import DEFAULT_MODEL
from ..priors.synthetic import SyntheticPriorConfig
from ..priors.synthetic_unet import SyntheticUNetConfig
from ..render import UserBackend
from ..scene import BallInit
from ..training.densify import DensifyConfig
from ..training.outputs import OutputConfig
from ..training.trainer import OptimConfig

MAX_RESOLUTION = 2048
"""Largest render size accepted (4x Stable Diffusion's native 512 px; the renderer's buffers grow with its square)."""
SYNTHETIC_PRIORS = ("synthetic", "synthetic-unet")
"""The priors made of the synthetic references' images (``--synthetic.*``): the exact one and the fitted UNet."""
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
      esd-gs generate "a head" --prior synthetic
      esd-gs generate --resume runs/a-plush-dragon-toy-esd
    """

    prompt: Annotated[str, tyro.conf.Positional, tyro.conf.PositionalMetavarFromFieldName] = ""
    """The text prompt (for example "a plush dragon toy"). Not needed with --resume."""
    config: Path | None = None
    """A YAML preset (e.g. configs/preview.yaml); flags given on the command line override its values."""
    # synthetic: the exact score of renders of reference objects; synthetic-unet: a small UNet fitted to those images
    # (once, then cached), with the LoRA psi of SD runs.
    prior: Literal["sd", "synthetic", "synthetic-unet"] = "sd"
    """sd (Stable Diffusion), synthetic (exact, offline; own defaults) or synthetic-unet (a small UNet fitted to it)."""
    # A family's known Hub mirrors are tried in turn; an id names a diffusers SD 1.x/2.x pipeline.
    model: str = DEFAULT_MODEL
    """Stable Diffusion for phi: a family (sd2.1-base, sd2.1, sd1.5), a Hugging Face id or a local diffusers folder."""
    distill: Annotated[DistillationConfig, tyro.conf.OmitArgPrefixes] = flat(DistillationConfig)
    negative_prompt: str = ""
    """Negative prompt for classifier-free guidance."""
    view_dependent_prompt: bool = True
    """Append ', front/side/back/overhead view' to phi's prompt according to the camera."""
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
    # So the UNet always sees the latent size it was trained on, whatever the render size.
    resize_to_native: bool = True
    """Resize renders to the model's native size (512 px for SD 2.1-base) before encoding them."""
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
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    """UNet/VAE precision: auto = fp16 on CUDA, fp32 on CPU."""
    mesh: bool = False
    """Also write scene.glb at the end: a vertex-coloured mesh of the Gaussians (as esd-gs export --to .glb)."""
    viewer: bool = False
    """Serve a live 3D view of the Gaussians in the browser while training (viser; refreshed every few seconds)."""
    viewer_port: int = 8080
    """Port of the live view's web page (with --viewer)."""
    max_bad_steps: int = 20
    """Stop with an error after this many consecutive steps with a NaN/Inf loss or gradient."""
    init: BallInit = field(default_factory=BallInit)
    cameras: OrbitSampler = field(default_factory=OrbitSampler)
    timesteps: TimestepSchedule = field(default_factory=TimestepSchedule)
    psi: PsiConfig = field(default_factory=PsiConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    densify: DensifyConfig = field(default_factory=DensifyConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    synthetic: SyntheticPriorConfig = field(default_factory=SyntheticPriorConfig)
    synthetic_unet: SyntheticUNetConfig = field(default_factory=SyntheticUNetConfig)
    diagnose: PsiDiagnosticConfig = field(default_factory=PsiDiagnosticConfig)

    @property
    def pixel_prior(self) -> bool:
        """A synthetic prior (exact or fitted): pixels in [-1, 1] as latents, images of the synthetic references."""
        return self.prior in SYNTHETIC_PRIORS

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
        if self.pixel_prior and self.distill.encoder != "vae":
            raise UserError("the synthetic prior works on pixels: --encoder linear applies to Stable Diffusion only")
        if self.pixel_prior and self.resolution_start is not None:
            raise UserError("the synthetic prior's images have one size: drop --resolution-start")
        if self.init.num_points > self.densify.max_gaussians:
            raise UserError(
                f"--init.num-points {self.init.num_points} is above --densify.max-gaussians "
                f"{self.densify.max_gaussians}"
            )


def synthetic_defaults(prior: str = "synthetic") -> GenerateConfig:
    """The defaults of ``--prior synthetic`` and ``synthetic-unet`` (offline, small enough for a CPU): 32 px renders
    of 1,500 Gaussians on a white background, as the prior's reference renders; no view suffixes (the prior has no
    text per view). ESD with lambda 1 and the particle psi (see research/janus.md for why)."""
    return GenerateConfig(
        prior=prior,
        distill=DistillationConfig(lambda_entropy=1.0, guidance_scale=1.0),
        steps=1200,
        batch_size=4,
        resolution=32,
        resolution_start=None,
        background="white",
        view_dependent_prompt=False,
        init=BallInit(num_points=1500, radius=0.6, opacity=0.1),
        densify=DensifyConfig(enabled=False),
        # For --psi.estimator learned: its residual network starts at zero; with the exact prior it trains on the x0
        # MSE, the fitted UNet's LoRA psi on its plain prediction loss (see research/janus.md).
        psi=PsiConfig(lr=1e-3, estimator="particle", loss_weighting="x0" if prior == "synthetic" else "prediction"),
        output=OutputConfig(
            preview_every=0.25,
            checkpoint_every=0.5,
            turntable_views=120,
            turntable_size=96,
            video_formats=("mp4", "gif"),
        ),
    )
