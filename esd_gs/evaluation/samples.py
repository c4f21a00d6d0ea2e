"""The prior's own samples, the reference set of FID (paper section 6: 1k images of the prompt).

- Stable Diffusion: images sampled with diffusers' ``StableDiffusionPipeline`` built on the loaded prior's parts
  (its UNet, VAE, text encoder and tokenizer) and a DDIM scheduler of its own noise schedule, at its native size.
  Image i is drawn from its own generator seeded ``seed + i``, so a set of N is the first N of any larger set.
  Samples are cached as 8-bit pictures in ``CACHE/fid-samples/<key>/`` (``images.npy`` and ``settings.json``), keyed
  by model, prompt and sampling settings, and extended on demand: comparisons reuse them, an interrupted sampling
  keeps what it finished. Delete the folder after changing a model's files in place.
- The synthetic prior: fresh renders of its reference objects at its biased cameras (its exact image distribution).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..atomic import atomic_path
from ..files import read_json_or_none
from ..priors.sources import looks_like_path


def default_cache_dir() -> Path:
    """$ESD_GS_CACHE, else $XDG_CACHE_HOME/esd-gs, else ~/.cache/esd-gs."""
    if os.environ.get("ESD_GS_CACHE"):
        return Path(os.environ["ESD_GS_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "esd-gs"


@dataclass(frozen=True)
class SampleSettings:
    """What identifies a set of Stable Diffusion samples (the cache key)."""

    model: str
    """The model as given (a local folder: its absolute path)."""
    prompt: str
    negative_prompt: str = ""
    steps: int = 50
    guidance: float = 7.5
    size: int = 512
    seed: int = 0

    @classmethod
    def of(cls, model: str, **kwargs) -> SampleSettings:
        if looks_like_path(model):
            model = str(Path(model).expanduser().resolve())
        return cls(model=model, **kwargs)

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def _pipeline(prior):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=prior.vae,
        text_encoder=prior.text_encoder,
        tokenizer=prior.tokenizer,
        unet=prior.unet,
        scheduler=DDIMScheduler.from_config(prior.scheduler.config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def cached_samples(folder: Path, settings: SampleSettings) -> np.ndarray:
    """The pictures [n, H, W, 3] uint8 cached in ``folder`` for ``settings`` (none when absent or of other settings)."""
    if read_json_or_none(folder / "settings.json") != asdict(settings):
        return np.zeros((0, settings.size, settings.size, 3), np.uint8)
    try:
        images = np.load(folder / "images.npy")
    except (OSError, ValueError):
        return np.zeros((0, settings.size, settings.size, 3), np.uint8)
    if images.ndim != 4 or images.dtype != np.uint8:
        return np.zeros((0, settings.size, settings.size, 3), np.uint8)
    return images


def stable_diffusion_samples(
    prior, settings: SampleSettings, count: int, cache_dir: Path, batch: int = 8, progress=None
) -> Tensor:
    """``count`` samples [count, 3, S, S] in [0, 1] of ``prior`` (a ``StableDiffusionPrior``) for the prompt, from the
    cache, sampling (and caching) the ones missing. ``progress``: a rich Progress to show the sampling in."""
    folder = cache_dir / "fid-samples" / settings.key()
    have = cached_samples(folder, settings)
    if len(have) < count:
        from ..progress import console

        console.print(
            f"sampling {count - len(have)} image(s) of {settings.prompt!r} from {settings.model} for FID "
            f"({settings.steps} steps each; cached in {folder} for every later evaluation)"
        )
        folder.mkdir(parents=True, exist_ok=True)
        pipe = _pipeline(prior)
        task = (
            progress.add_task("sampling the prior", total=count - len(have), unit="image")
            if progress is not None
            else None
        )
        while len(have) < count:
            first, size = len(have), min(batch, count - len(have))
            generators = [torch.Generator().manual_seed(settings.seed + first + i) for i in range(size)]
            with torch.no_grad():
                images = pipe(
                    prompt=[settings.prompt] * size,
                    negative_prompt=[settings.negative_prompt] * size,
                    num_inference_steps=settings.steps,
                    guidance_scale=settings.guidance,
                    height=settings.size,
                    width=settings.size,
                    generator=generators,
                    output_type="np",
                ).images
            pictures = (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
            have = np.concatenate([have, pictures])
            with atomic_path(folder / "images.npy") as tmp:  # after each batch: an interruption keeps them
                with open(tmp, "wb") as handle:
                    np.save(handle, have)
            with atomic_path(folder / "settings.json") as tmp:
                tmp.write_text(json.dumps(asdict(settings), indent=1))
            if task is not None:
                progress.advance(task, size)
        if task is not None:
            progress.remove_task(task)
    return torch.from_numpy(have[:count]).permute(0, 3, 1, 2).float() / 255.0


def synthetic_samples(config, count: int, size: int, device: torch.device) -> Tensor:
    """``count`` fresh images [count, 3, size, size] in [0, 1] of the synthetic prior of a run's ``config`` (its
    synthetic prior's settings and cameras), for the run's prompt's reference."""
    from ..priors import SyntheticPrior, synthetic_images

    prior = SyntheticPrior.build(
        replace(synthetic_images(config.prior), num_images=count),
        config.prompt,
        size,
        config.cameras,
        device,
        {"white": 1.0, "black": 0.0}.get(config.background, 1.0),
    )
    return prior.reference_images(prior.prompts.index(config.prompt)).cpu()
