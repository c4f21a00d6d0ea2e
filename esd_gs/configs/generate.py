"""The typed configuration of ``esd-gs generate`` (turned into the CLI by tyro; presets are YAML values of it).

Every schedule is a fraction of the run (``steps``), so changing the step count never breaks one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing
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


MAX_RESOLUTION = 2048
"""Largest render size accepted (4x Stable Diffusion's native 512 px; the renderer's buffers grow with its square)."""
MAX_GAUSSIANS = 10_000_000
"""Largest Gaussian cap accepted (10M Gaussians with Adam state take ~7 GB)."""
MAX_BATCH = 64
"""Most views per step accepted."""
MAX_VIEWS = 3600
"""Most turntable views accepted (one per 0.1 degree)."""


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
        self._validate_numbers()

    def _validate_numbers(self) -> None:
        """Every other number a run uses, checked before any work starts (one UserError line each)."""
        def finite(name: str, value: float) -> None:
            if not math.isfinite(value):
                raise UserError(f"--{name} must be a finite number, got {value}")

        for name in ("lambda_entropy", "guidance_scale", "resolution_switch"):
            finite(name.replace("_", "-"), getattr(self, name))
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise UserError(f"--grad-clip must be > 0, got {self.grad_clip}")
        if not 0 <= self.seed < 2**62:
            raise UserError(f"--seed must be in [0, 2**62), got {self.seed}")
        if self.resolution > MAX_RESOLUTION:
            raise UserError(f"--resolution {self.resolution} is above {MAX_RESOLUTION} px: no prior works at that size")
        if self.max_bad_steps < 1:
            raise UserError(f"--max-bad-steps must be at least 1, got {self.max_bad_steps}")
        for key in ("means", "means_end", "scales", "quats", "opacities", "sh0", "shN"):
            rate = getattr(self.optim, key)
            if not (math.isfinite(rate) and rate > 0):
                raise UserError(f"--optim.{key.replace('_', '-')} must be a positive learning rate, got {rate}")
        psi = self.psi
        if psi.lora_rank < 1 or not psi.lora_alpha > 0:
            raise UserError(f"--psi.lora-rank must be >= 1 and --psi.lora-alpha > 0, got {psi.lora_rank}, {psi.lora_alpha}")
        if not (math.isfinite(psi.lr) and psi.lr > 0) or psi.train_steps_per_iter < 1:
            raise UserError("--psi.lr must be > 0 and --psi.train-steps-per-iter at least 1")
        if not all(0 <= b < 1 for b in psi.betas) or psi.weight_decay < 0:
            raise UserError(f"--psi.betas must be in [0, 1) and --psi.weight-decay >= 0, got {psi.betas}, {psi.weight_decay}")
        out = self.output
        if out.turntable_views < 1 or not 8 <= out.turntable_size <= 4096:
            raise UserError("--output.turntable-views must be at least 1 and --output.turntable-size in 8..4096, got "
                            f"{out.turntable_views} and {out.turntable_size}")
        if not out.video_formats:
            raise UserError("--output.video-formats needs at least one of mp4, gif")
        for name in ("preview_every", "checkpoint_every"):
            value = getattr(out, name)
            if not 0 <= value <= 1:
                raise UserError(f"--output.{name.replace('_', '-')} must be a fraction of the run in [0, 1], got {value}")
        cams = self.cameras
        for name, (lo, hi), bounds in (("radius", cams.radius, (0, math.inf)), ("elevation", cams.elevation, (-90, 90)),
                                       ("azimuth", cams.azimuth, (-360, 360)), ("fovy", cams.fovy, (0, 180))):
            if not (bounds[0] <= lo <= hi <= bounds[1]) or (name in ("radius", "fovy") and not lo > bounds[0]) \
                    or (name == "fovy" and not hi < 180):
                raise UserError(f"--cameras.{name} must be a range lo <= hi within {bounds}, got ({lo}, {hi})")
        densify = self.densify
        for name in ("start", "stop", "every", "opacity_reset_every"):
            value = getattr(densify, name)
            if not 0 <= value <= 1:
                raise UserError(f"--densify.{name.replace('_', '-')} must be a fraction of the run, got {value}")
        if not densify.prune_opacity >= 0 or not densify.max_scale > 0:
            raise UserError("--densify.prune-opacity must be >= 0 and --densify.max-scale > 0")
        if not self.init.radius > 0 or not 0 < self.init.opacity < 1 or not 0 <= self.init.color <= 1:
            raise UserError("--init.radius must be > 0, --init.opacity in (0, 1) and --init.color in [0, 1]")
        if self.init.num_points > self.densify.max_gaussians:
            raise UserError(f"--init.num-points {self.init.num_points} is above --densify.max-gaussians "
                            f"{self.densify.max_gaussians}")
        if self.densify.max_gaussians > MAX_GAUSSIANS:
            raise UserError(f"--densify.max-gaussians must be at most {MAX_GAUSSIANS:,}")
        if self.batch_size > MAX_BATCH:
            raise UserError(f"--batch-size must be at most {MAX_BATCH} views per step, got {self.batch_size}")
        if out.turntable_views > MAX_VIEWS:
            raise UserError(f"--output.turntable-views must be at most {MAX_VIEWS}, got {out.turntable_views}")


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


def _checked(value: Any, annotation: Any, where: str) -> Any:
    """``value`` from YAML as the field's declared type, or one UserError naming the setting and what it takes."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        if value not in args or isinstance(value, bool) != isinstance(args[0], bool):
            raise UserError(f"{where}: {value!r} is not one of {', '.join(repr(a) for a in args)}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _checked(value, option, where)
            except UserError as exc:
                errors.append(str(exc))
        raise errors[-1] if len(errors) == 1 else UserError(f"{where}: {value!r} is not a valid value")
    if origin is tyro.conf.Positional or (origin is typing.Annotated):
        return _checked(value, args[0], where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_checked(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise UserError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_checked(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if annotation is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where}: expected a whole number, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as text
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise UserError(f"{where}: expected text, got {value!r}")
        return value
    if annotation is Path:
        if not isinstance(value, str):
            raise UserError(f"{where}: expected a path, got {value!r}")
        return Path(value)
    if dataclasses.is_dataclass(annotation):
        return _from_plain(annotation, value, where)
    raise TypeError(f"{where}: no YAML check for the type {annotation!r}")  # a field type this reader must learn


def _from_plain(cls, data: dict, where: str):
    """A config dataclass from a YAML mapping: unknown keys and wrong types are one ``UserError`` each."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(map(str, data)) - set(fields))
    if unknown:
        raise UserError(f"{where}: unknown setting(s) {', '.join(unknown)}")
    hints = typing.get_type_hints(cls, include_extras=True)
    kwargs = {name: _checked(value, hints[name], f"{where}.{name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{where}: {exc}") from None


def config_from_dict(data: dict, where: str = "config") -> GenerateConfig:
    return _from_plain(GenerateConfig, data, where)


def load_yaml_config(path: Path) -> GenerateConfig:
    """Read a preset or a run's saved config.yaml."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise UserError(f"cannot read config {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    return config_from_dict(data, where=str(path))


def dump_yaml_config(config: GenerateConfig) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)
