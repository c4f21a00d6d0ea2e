"""phi as a fitted network: a small diffusers ``UNet2DConditionModel`` fitted to the synthetic prior's images
(``--preset synthetic-unet``, the "learned synthetic" prior).

The exact-score prior (``synthetic.py``) knows its image distribution exactly; this one learns the same images (the
same references, cameras, bias and background) with the kind of network Stable Diffusion is. Score distillation
then runs through the code a Stable Diffusion run uses: ``unet_prior.UNetPrior`` for phi, and the paper's learned
psi, ``estimators.lora.CameraLoRAEstimator`` (peft LoRA + camera MLP, shared or separate UNet), on top of it. The
exact-score prior stays the oracle the Janus benchmark scores against.

- **Pixel space**, as the exact prior: the "latent" is the image mapped to [-1, 1] (3 channels at the run's size), no
  VAE; Stable Diffusion's noise schedule (``diffusion.SD_BETA_SCHEDULE``), epsilon prediction.
- **Text**: each reference prompt has a fixed random embedding [1, 1, D] (seeded, saved with the model); the null text
  is the zero vector. The fit drops the text with probability ``p_uncond`` so that classifier-free guidance means what
  it means with SD.
- **Fit**: the DDPM loss (eq. 3 with a camera-free network) on the prior's K renders per reference, t ~ U[0, T),
  AdamW with a cosine-decayed learning rate, ``steps`` steps of ``batch`` images.
- **Cache**: built on first use, saved with ``save_pretrained`` under ``cache/<key>`` (key: a hash of the images and
  of these settings) and always loaded back with ``UNet2DConditionModel.from_pretrained``, the path a user's Stable
  Diffusion takes. ``esd-gs bench janus --prior synthetic-unet`` and every run of the same settings reuse it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor

from ..diffusion import SD_BETA_SCHEDULE, mixture_eps
from ..errors import ConfigError, UserError
from .base import PriorConfig, RunContext, TextEmbeddings
from .synthetic import SyntheticPrior, SyntheticPriorConfig
from .unet_prior import UNetPrior

TEXT_WIDTH = 32
"""D, the width of the prompt embeddings (the UNet's cross-attention width)."""
FORMAT = 1
"""Version of the cached model's layout (part of the cache key)."""


def default_cache() -> Path:
    """``$ESD_GS_CACHE`` or ``$XDG_CACHE_HOME/esd-gs`` (``~/.cache/esd-gs``), then ``synthetic-unet``."""
    root = os.environ.get("ESD_GS_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "esd-gs"
    return Path(root) / "synthetic-unet"


@dataclass
class SyntheticUNetConfig(PriorConfig):
    """A small UNet fitted to the synthetic prior's images (once, then cached); it takes the LoRA psi."""

    name: ClassVar[str] = "synthetic-unet"
    building: ClassVar[str] = "building the synthetic UNet prior (or loading its cached fit)"
    learned_estimator: ClassVar[str] = "lora"
    estimators: ClassVar[tuple[str, ...]] = ("lora",)
    pixel_space: ClassVar[bool] = True
    uses_context: ClassVar[bool] = True

    images: SyntheticPriorConfig = field(default_factory=SyntheticPriorConfig)
    """The exact prior whose images the UNet is fitted to (``--prior.images.*``)."""

    widths: tuple[int, ...] = (32, 64, 64)
    """Channels of the UNet's resolution levels (the last two have attention, where psi's LoRA goes)."""
    steps: int = 1500
    """Fit: optimiser steps."""
    batch: int = 32
    """Fit: images per step."""
    lr: float = 1e-3
    """Fit: AdamW's peak learning rate (cosine decay to zero)."""
    p_uncond: float = 0.1
    """Fit: probability of the null text (for classifier-free guidance)."""
    seed: int = 0
    """Seed of the fit and of the prompt embeddings."""
    cache: Path | None = None
    """Where fitted UNets are kept; None = $ESD_GS_CACHE or ~/.cache/esd-gs, then synthetic-unet."""

    def __post_init__(self) -> None:
        if len(self.widths) < 2 or any(w < 8 or w % 8 for w in self.widths):
            raise ConfigError(f"--prior.widths needs 2 or more multiples of 8, got {self.widths}")
        if self.steps < 1 or self.batch < 1 or not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError("--prior.steps and --prior.batch must be >= 1 and --prior.lr > 0")
        if not 0.0 <= self.p_uncond < 1.0:
            raise ConfigError(f"--prior.p-uncond must be in [0, 1), got {self.p_uncond}")

    def fit_settings(self) -> dict:
        """What the fitted network depends on besides its images (the cache key's part from these settings)."""
        return {k: v for k, v in asdict(self).items() if k not in ("cache", "images")}

    def build(self, device: torch.device, context: RunContext) -> SyntheticUNetPrior:
        """phi for a run: the exact prior's images (``images``) fitted with these settings, from the cache when it
        has them."""
        oracle = self.images.build(torch.device("cpu"), context)
        return SyntheticUNetPrior.from_oracle(oracle, context.resolution, self, device)

    def check_prompt(self, prompt: str) -> None:
        self.images.check_prompt(prompt)

    def check_run(self, resolution_start: int | None) -> None:
        self.images.check_run(resolution_start)


def unet_kwargs(resolution: int, widths: tuple[int, ...]) -> dict:
    """``UNet2DConditionModel`` arguments: pixel space (3 channels), one ResNet per level, attention on all levels
    but the first (full-resolution attention costs the most on a CPU)."""
    levels = len(widths)
    return {
        "sample_size": resolution,
        "in_channels": 3,
        "out_channels": 3,
        "layers_per_block": 1,
        "block_out_channels": tuple(widths),
        "down_block_types": ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (levels - 1),
        "up_block_types": ("CrossAttnUpBlock2D",) * (levels - 1) + ("UpBlock2D",),
        "cross_attention_dim": TEXT_WIDTH,
        "attention_head_dim": 8,
        "norm_num_groups": 8,
    }


def scheduler():
    """A DDPM scheduler with Stable Diffusion's schedule, epsilon prediction."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**SD_BETA_SCHEDULE, prediction_type="epsilon")


def fit_unet(
    images: Tensor, labels: Tensor, embeddings: Tensor, resolution: int, config: SyntheticUNetConfig
) -> tuple[torch.nn.Module, list[float]]:
    """Fit a fresh UNet to ``images`` [N, 3, H, W] in [-1, 1] of references ``labels`` [N] (rows of ``embeddings``
    [R, 1, D]); returns (the UNet, the loss of each step). CPU, float32."""
    from diffusers import UNet2DConditionModel

    from ..diffusion import add_noise
    from ..progress import make_progress

    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    unet = UNet2DConditionModel(**unet_kwargs(resolution, config.widths))
    alphas_cumprod = scheduler().alphas_cumprod.float()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, config.steps) / config.steps))
    )
    losses = []
    with make_progress() as progress:
        task = progress.add_task("fitting the synthetic UNet", total=config.steps)
        for _ in range(config.steps):
            rows = torch.randint(0, images.shape[0], (config.batch,), generator=gen)
            x0, text = images[rows], embeddings[labels[rows]]
            text = torch.where(torch.rand(config.batch, 1, 1, generator=gen) < config.p_uncond, 0.0, text)
            t = torch.randint(0, alphas_cumprod.shape[0], (config.batch,), generator=gen)
            noise = torch.randn(x0.shape, generator=gen)
            loss = torch.nn.functional.mse_loss(
                unet(add_noise(alphas_cumprod, x0, noise, t), t, encoder_hidden_states=text).sample, noise
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
            progress.update(task, advance=1, description=f"fitting the synthetic UNet (loss {losses[-1]:.4f})")
    unet.eval()
    return unet, losses


class SyntheticUNetPrior(UNetPrior):
    """phi = a UNet fitted to the synthetic prior's images (module docstring)."""

    def __init__(self, unet, prompts: list[str], prompt_embeddings: Tensor, device: torch.device):
        """``prompt_embeddings`` [R, 1, D]: one row per prompt of ``prompts``."""
        self.unet, self.scheduler = unet.to(device), scheduler()
        self.device, self.dtype = device, torch.float32
        self.prompts = list(prompts)
        self.prompt_embeddings = prompt_embeddings.float().to(device)
        self._init_unet()

    @classmethod
    def from_oracle(
        cls, oracle: SyntheticPrior, resolution: int, config: SyntheticUNetConfig, device: torch.device
    ) -> SyntheticUNetPrior:
        """phi fitted to the images of an exact prior already built (``fitted``: from the cache when it has them)."""
        return cls.from_pretrained(fitted(oracle, resolution, config), device)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: torch.device | str = "cpu") -> SyntheticUNetPrior:
        """Load a fitted UNet folder (``unet/``, ``prompts.json`` with the prompt embeddings)."""
        from diffusers import UNet2DConditionModel

        path = Path(path)
        try:
            unet = UNet2DConditionModel.from_pretrained(path / "unet")
            saved = json.loads((path / "prompts.json").read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot load the fitted synthetic UNet from {path}: {exc}") from None
        return cls(unet, saved["prompts"], torch.tensor(saved["embeddings"]), torch.device(device))

    # ------------------------------------------------------------------ text and images
    def text_embeddings(self, prompt: str, negative_prompt: str = "", view_dependent: bool = False) -> TextEmbeddings:
        """The prompt's fixed embedding [1, 1, D]; the negative is the null text (zeros). No view suffixes."""
        if prompt not in self.prompts:
            raise UserError(f"the synthetic UNet knows the prompts {self.prompts}, not '{prompt}'")
        plain = self.prompt_embeddings[self.prompts.index(prompt)][None]
        return TextEmbeddings(plain=plain, negative=torch.zeros_like(plain), views=None)

    def encode(self, images: Tensor, approximate: bool = False) -> Tensor:
        """The pixels mapped to [-1, 1], as the exact prior."""
        return images.float() * 2.0 - 1.0


def prompt_embeddings(count: int, seed: int) -> Tensor:
    """[count, 1, TEXT_WIDTH] fixed random unit-variance embeddings, one per reference prompt."""
    return torch.randn(count, 1, TEXT_WIDTH, generator=torch.Generator().manual_seed(seed + 1))


def cache_key(oracle: SyntheticPrior, resolution: int, config: SyntheticUNetConfig) -> str:
    digest = hashlib.sha256()
    digest.update(oracle.images.detach().float().cpu().contiguous().numpy().tobytes())
    settings = {"format": FORMAT, "resolution": resolution, "prompts": oracle.prompts, **config.fit_settings()}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def is_fitted(path: Path) -> bool:
    """A finished fit: ``fitted()`` writes ``prompts.json`` last, into a hidden ``.<key>.partial`` folder renamed to
    ``<key>`` once complete."""
    return not path.name.startswith(".") and (path / "prompts.json").is_file()


def cached_fits(root: Path) -> list[Path]:
    """The finished fits in a cache folder (one per set of prior images and fit settings)."""
    return sorted(p for p in root.iterdir() if is_fitted(p)) if root.is_dir() else []


def fitted(oracle: SyntheticPrior, resolution: int, config: SyntheticUNetConfig) -> Path:
    """The folder of the UNet fitted to ``oracle``'s images with ``config``: from the cache, or fitted now and saved
    there (into a temporary folder renamed at the end, so a stopped fit leaves nothing half-written)."""
    from ..environment import ensure_writable_dir
    from ..progress import console

    root = config.cache or default_cache()
    path = root / cache_key(oracle, resolution, config)
    if is_fitted(path):
        return path
    ensure_writable_dir(root)
    count = len(oracle.prompts)
    labels = torch.arange(count).repeat_interleave(oracle.per_reference)
    embeddings = prompt_embeddings(count, config.seed)
    console.print(f"fitting a UNet to the synthetic prior's {oracle.images.shape[0]} images (once; cached in {path})")
    unet, losses = fit_unet(oracle.images.cpu(), labels, embeddings, resolution, config)
    staging = root / f".{path.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    unet.save_pretrained(staging / "unet")
    record = {"prompts": oracle.prompts, "embeddings": embeddings.tolist(), "settings": config.fit_settings()}
    record["losses"] = losses
    (staging / "prompts.json").write_text(json.dumps(record))
    if path.exists():  # another process finished the same fit first
        shutil.rmtree(staging, ignore_errors=True)
    else:
        staging.rename(path)
    return path


@torch.no_grad()
def fit_errors(
    prior: SyntheticUNetPrior, oracle: SyntheticPrior, timesteps: tuple[int, ...], count: int = 64, seed: int = 0
) -> dict[int, float]:
    """How close the fitted phi is to the exact one: per t, ||eps_unet - eps_exact|| / ||eps_exact|| on ``count``
    of the prior's own images noised at t (the first prompt, no guidance)."""
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, oracle.per_reference, (count,), generator=gen)
    x0 = oracle.images[rows].to(prior.device)
    text = prior.text_embeddings(prior.prompts[0]).plain.expand(count, -1, -1)
    errors = {}
    for t in timesteps:
        steps = torch.full((count,), int(t), device=prior.device)
        x_t = prior.add_noise(x0, torch.randn(x0.shape, generator=gen).to(prior.device), steps)
        exact = mixture_eps(x_t, oracle._data(0).to(prior.device), prior.alphas_cumprod, steps)
        learned = prior.eps(x_t, steps, text, text[:1], 1.0)
        errors[int(t)] = float((learned - exact).norm() / exact.norm())
    return errors


def synthetic_images(prior: PriorConfig) -> SyntheticPriorConfig | None:
    """The exact synthetic prior of a run's prior config: the prior itself (synthetic), the images its UNet is
    fitted to (synthetic-unet), or None (a prior not made of the synthetic references' images)."""
    if isinstance(prior, SyntheticUNetConfig):
        return prior.images
    return prior if isinstance(prior, SyntheticPriorConfig) else None
