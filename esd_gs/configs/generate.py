"""The typed configuration of ``esd-gs generate`` (turned into the CLI by tyro; presets are YAML values of it).

Every schedule is a fraction of the run (``steps``), so changing the step count never breaks one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tyro
import yaml

from ..cameras import OrbitSampler
from ..errors import UserError
from ..guidance.sources import DEFAULT_MODEL
from ..guidance.psi import PsiConfig
from ..guidance.schedules import TimestepSchedule
from ..scene import BallInit
from ..synthetic.prior import SyntheticPriorConfig


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


@dataclass
class DensifyConfig:
    """Densification and pruning (gsplat's DefaultStrategy, fed by our renderer on either backend)."""

    enabled: bool = True
    """Grow and prune Gaussians during the run."""
    start: float = 0.1
    """Fraction of the run after which densification starts."""
    stop: float = 0.7
    """Fraction of the run after which densification stops."""
    every: float = 0.04
    """Densify every this fraction of the run (at least every step)."""
    grad_threshold: float | None = None
    """Split/clone Gaussians whose mean screen-space gradient (as gsplat accumulates it: pixels of a [-1, 1] image,
    times the views per step) exceeds this. None: by method, 0.1 for VSD/ESD and 1.0 for SDS, set from the
    gradients measured at 512 px (BENCHMARKS.md)."""
    prune_opacity: float = 0.005
    """Remove Gaussians whose opacity falls below this."""
    opacity_reset_every: float = 0.3
    """Reset opacities to 2 x prune_opacity every this fraction of the run (done here: gsplat 1.5.3's never fires)."""
    max_gaussians: int = 200_000
    """Cap on the number of Gaussians: the least opaque are removed above it."""
    max_scale: float = 1.0
    """Gaussians with a scale above this (world units), or any non-finite parameter, are removed at once."""


@dataclass
class OutputConfig:
    """What the run directory receives besides scene.ply and scene.splat."""

    preview_every: float = 0.1
    """Write a 4-view preview grid every this fraction of the run (0 = never)."""
    checkpoint_every: float = 0.25
    """Write a checkpoint every this fraction of the run (and always on Ctrl-C / SIGTERM)."""
    turntable_views: int = 120
    """Views in the final turntable video."""
    turntable_size: int = 256
    """Pixel size of the final turntable and contact sheet."""
    video_formats: tuple[Literal["mp4", "gif"], ...] = ("mp4",)
    """Video formats of the final turntable."""
    up: Literal["-y", "y", "z"] = "-y"
    """Up axis of scene.ply / scene.splat (-y: what splat viewers expect)."""


@dataclass
class GenerateConfig:
    """Turn a text prompt into 3D Gaussians with score distillation (ESD by default) and export a 3DGS .ply."""

    prompt: tyro.conf.Positional[str] = ""
    """The text prompt (for example "a plush dragon toy"). Not needed with --resume."""
    config: Path | None = None
    """A YAML preset (e.g. configs/preview.yaml); flags given on the command line override its values."""
    prior: Literal["sd", "synthetic"] = "sd"
    """The 2D prior: sd (Stable Diffusion) or synthetic (offline exact-score prior)."""
    model: str = DEFAULT_MODEL
    """Stable Diffusion for phi: a family (sd2.1-base, sd2.1 or sd1.5: its known Hub mirrors are tried in turn), a
    Hugging Face id of a diffusers SD 1.x/2.x pipeline, or a local diffusers folder."""
    method: Literal["sds", "vsd", "esd"] = "esd"
    """Update rule: sds (DreamFusion), vsd (ProlificDreamer) or esd (entropic score distillation)."""
    lambda_entropy: float = 0.5
    """ESD's entropy weight lambda in [0, 1] (0 is VSD; the paper's best is 0.5)."""
    guidance_scale: float = 7.5
    """Text classifier-free guidance scale of phi (7.5 for VSD/ESD; SDS needs ~100)."""
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
    encoder: Literal["vae", "linear"] = "vae"
    """vae: encode renders with the VAE; linear: render at latent size with a fitted RGB-to-latent map (cheap)."""
    resize_to_native: bool = True
    """Resize renders to the model's native size before encoding (512 px for SD 2.1-base), so the UNet always sees
    the latent size it was trained on, whatever the render size."""
    background: Literal["random", "white", "black"] = "random"
    """Background behind the Gaussians: random (white, black or a random colour per view), white or black."""
    weighting: Literal["sigma2", "uniform"] = "sigma2"
    """w(t): sigma2 = 1 - alphabar_t, or uniform."""
    grad_clip: float | None = None
    """Clamp each entry of the latent gradient to [-grad_clip, grad_clip]."""
    seed: int = 0
    """Random seed (runs on CPU are deterministic for a seed)."""
    out: Path | None = None
    """Run directory (default runs/<prompt>-<method>)."""
    resume: Path | None = None
    """Continue the run in this directory from its last checkpoint (its saved config is used)."""
    overwrite: bool = False
    """Replace a run directory that already holds a run."""
    device: str = "auto"
    """auto (CUDA if available), cpu or cuda."""
    backend: Literal["auto", "gsplat", "torch"] = "auto"
    """Renderer: auto (gsplat on CUDA when its kernels load, else our PyTorch renderer), gsplat (CUDA only) or torch."""
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    """UNet/VAE precision: auto = fp16 on CUDA, fp32 on CPU."""
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

    def validate(self) -> None:
        """Bad values -> one clear UserError."""
        if self.resume is None and not self.prompt.strip():
            raise UserError('the prompt is empty: esd-gs generate "a plush dragon toy"')
        if not 0.0 <= self.lambda_entropy <= 1.0:
            raise UserError(f"--lambda-entropy must be in [0, 1], got {self.lambda_entropy}")
        if self.steps < 1:
            raise UserError(f"--steps must be at least 1, got {self.steps}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}")
        for name in ("resolution", "resolution_start"):
            value = getattr(self, name)
            if value is not None and (value < 8 or value % 8):
                raise UserError(f"--{name.replace('_', '-')} must be a positive multiple of 8, got {value}")
        if self.guidance_scale < 0:
            raise UserError(f"--guidance-scale must be >= 0, got {self.guidance_scale}")
        if not 0 <= self.init.sh_degree <= 3:
            raise UserError(f"--init.sh-degree must be in 0..3, got {self.init.sh_degree}")
        if self.init.num_points < 1:
            raise UserError(f"--init.num-points must be at least 1, got {self.init.num_points}")
        if not 0.0 <= self.psi.p_null_camera <= 1.0:
            raise UserError(f"--psi.p-null-camera must be in [0, 1], got {self.psi.p_null_camera}")
        if self.prior == "synthetic" and self.encoder != "vae":
            raise UserError("the synthetic prior works on pixels: --encoder linear applies to Stable Diffusion only")
        if self.prior == "synthetic" and self.resolution_start is not None:
            raise UserError("the synthetic prior's images have one size: drop --resolution-start")
        if self.psi.bank_size < 1 or self.psi.bank_refresh_every < 1:
            raise UserError("--psi.bank-size and --psi.bank-refresh-every must be at least 1")
        if self.densify.grad_threshold is not None and not self.densify.grad_threshold > 0:
            raise UserError(f"--densify.grad-threshold must be > 0, got {self.densify.grad_threshold}")
        if self.densify.max_gaussians < 1:
            raise UserError(f"--densify.max-gaussians must be at least 1, got {self.densify.max_gaussians}")


def synthetic_defaults() -> GenerateConfig:
    """The defaults of ``--prior synthetic`` (offline, CPU, about a minute): 32 px renders of 1,500 Gaussians on a
    white background, as the prior's reference renders; no view suffixes (the prior has no text per view).
    ESD with lambda 1 and the particle psi: the best-measured setting at the default prior bias (BENCHMARKS.md)."""
    return GenerateConfig(
        prior="synthetic",
        lambda_entropy=1.0,
        steps=1200,
        batch_size=4,
        resolution=32,
        resolution_start=None,
        background="white",
        view_dependent_prompt=False,
        guidance_scale=1.0,
        init=BallInit(num_points=1500, radius=0.6, opacity=0.1),
        densify=DensifyConfig(enabled=False),
        psi=PsiConfig(lr=1e-3, estimator="particle"),  # lr: the learned residual psi starts at zero
        output=OutputConfig(preview_every=0.25, checkpoint_every=0.5, turntable_views=120, turntable_size=96,
                            video_formats=("mp4", "gif")),
    )


# ---------------------------------------------------------------------------------------------- YAML presets
def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_to_plain(v) for v in value]
    return value


def config_to_dict(config: GenerateConfig) -> dict:
    """Plain nested dict (YAML-safe) of a config."""
    return _to_plain(config)


def _from_plain(cls, data: dict, where: str):
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UserError(f"{where}: unknown setting(s) {', '.join(unknown)}")
    kwargs = {}
    defaults = cls()
    for name, value in data.items():
        current = getattr(defaults, name)
        if dataclasses.is_dataclass(current):
            kwargs[name] = _from_plain(type(current), value, f"{where}.{name}")
        elif isinstance(current, tuple) and isinstance(value, list):
            kwargs[name] = tuple(value)
        elif name in ("out", "resume", "config") and value is not None:
            kwargs[name] = Path(value)
        else:
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{where}: {exc}") from None


def config_from_dict(data: dict, where: str = "config") -> GenerateConfig:
    return _from_plain(GenerateConfig, data, where)


def load_yaml_config(path: Path) -> GenerateConfig:
    """Read a preset or a run's saved config.yaml."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise UserError(f"cannot read config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    return config_from_dict(data, where=str(path))


def dump_yaml_config(config: GenerateConfig) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)
