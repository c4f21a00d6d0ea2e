"""phi in synthetic mode (``base.Prior``): the exact score of a known, view-biased image distribution of reference
objects.

Each reference object (the built-in head, or any 3DGS .ply) is rendered K times at cameras whose azimuth is biased
towards its front, as real 2D priors are: with probability ``p_front`` the azimuth is drawn from N(0, front_std),
otherwise uniformly; elevation, radius and field of view come from the training camera sampler. The prior's
noise prediction is the exact one of the noised empirical distribution of those renders (``diffusion.mixture``), in
pixel space: the "latent" is the image itself, mapped to [-1, 1], on the same noise schedule as Stable Diffusion.

The object is the one the prompt names among the built-in ones (``synthetic_objects``: head, car, house, mug, chair,
penguin, cat, bus, radio; "a red car" -> the car), or the .ply file of ``--prior.reference`` (then the prompt is not
read). Several references can be registered under prompts; the unconditional distribution is their union, so text
classifier-free guidance means the same as with SD: eps = eps_union + s (eps_prompt - eps_union).

It is the offline prior of ``esd-gs generate --preset synthetic`` and ``esd-gs bench janus``: its answer is known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor

from ..cameras import Cameras, OrbitSampler, orbit_cameras, wrap_azimuth
from ..diffusion import mixture_eps, sd_alphas_cumprod
from ..errors import ConfigError, UserError
from ..render.views import render_batches
from .base import Prior, PriorConfig, RunContext, TextEmbeddings
from .synthetic_objects import OBJECTS, Source, load_object, object_named


@dataclass
class SyntheticPriorConfig(PriorConfig):
    """The exact score of renders of a known object (offline, no model), and how those renders are drawn."""

    name: ClassVar[str] = "synthetic"
    building: ClassVar[str] = "building the synthetic prior (rendering its reference images)"
    learned_estimator: ClassVar[str] = "residual"
    estimators: ClassVar[tuple[str, ...]] = ("residual",)
    pixel_space: ClassVar[bool] = True
    uses_context: ClassVar[bool] = True

    reference: tuple[Path, ...] = ()
    """Reference 3DGS .ply files (-Y up); empty = the built-in object the prompt names (head, car, house, ...)."""
    # A run's config.yaml records the object it showed (yaml_io.run_config_text), so that resuming or evaluating it
    # never depends on how prompts are read; one saved before objects had names has none, and was the head.
    object: str = ""
    """The built-in object to show (head, car, house, mug, chair, penguin, cat, bus, radio); empty = the one the
    prompt names."""
    reference_prompts: tuple[str, ...] = ()
    """Prompt of each reference file (same order); empty = the generate prompt names the only reference file."""
    num_images: int = 256
    """K: renders per reference in the prior's image distribution."""
    # The default 0.5 is a moderate bias, the Janus benchmark's default (see research/janus.md for why).
    p_front: float = 0.5
    """Share of the prior's images whose azimuth is drawn around the front (the bias of real 2D priors)."""
    front_std: float = 26.0
    """Standard deviation (degrees) of the frontal azimuths."""
    seed: int = 1234
    """Seed of the prior's cameras (fixed, so every run and method sees the same prior)."""

    def __post_init__(self) -> None:
        if self.num_images < 1 or not 0.0 <= self.p_front <= 1.0:
            raise ConfigError("--prior.num-images must be >= 1 and --prior.p-front in [0, 1]")
        if not (math.isfinite(self.front_std) and self.front_std > 0):
            raise ConfigError(f"--prior.front-std must be a positive angle, got {self.front_std}")

    def build(self, device: torch.device, context: RunContext) -> SyntheticPrior:
        """phi for a run: these images, at the run's resolution and cameras and on its background."""
        background = {"white": 1.0, "black": 0.0}.get(context.background, 1.0)
        return SyntheticPrior.build(self, context.prompt, context.resolution, context.cameras, device, background)

    def references(self, prompt: str) -> tuple[list[str], list[Source]]:
        """(each reference's prompt, its object) for a run of ``prompt``: the ``reference`` files under their
        prompts, or, without files, the built-in object the prompt names (``synthetic_objects.object_named``) under
        the prompt itself. One ``UserError`` when they do not fit; the files are read later (``build``)."""
        if self.object and self.reference:
            raise UserError("--prior.object names a built-in object and --prior.reference gives files: choose one")
        if not self.reference:
            if self.reference_prompts:
                raise UserError("--prior.reference-prompts names --prior.reference files: give the files too")
            if self.object and self.object not in OBJECTS:
                raise UserError(f"--prior.object must be one of {', '.join(OBJECTS)}, got '{self.object}'")
            return [prompt], [self.object or object_named(prompt)]
        sources: list[Source] = [Path(path) for path in self.reference]
        prompts = list(self.reference_prompts) or ([prompt] if len(sources) == 1 else [])
        if len(prompts) != len(sources):
            raise UserError("give one --prior.reference-prompts entry per --prior.reference file")
        if prompt not in prompts:
            raise UserError(f"the synthetic prior knows the prompts {prompts}, not '{prompt}'")
        return prompts, sources

    def check_prompt(self, prompt: str) -> None:
        self.references(prompt)

    def check_run(self, resolution_start: int | None) -> None:
        if resolution_start is not None:
            raise UserError(
                "the synthetic prior's images have one size: use --preset synthetic (its defaults fit it), or pass "
                "--resolution-start None"
            )


def biased_cameras(
    count: int, sampler: OrbitSampler, p_front: float, front_std: float, generator: torch.Generator
) -> Cameras:
    """Cameras with azimuth ~ p_front N(0, front_std) + (1 - p_front) U(-180, 180); the rest as ``sampler``."""
    base = sampler.sample(count, generator=generator)
    frontal = torch.rand(count, generator=generator) < p_front
    around_front = torch.randn(count, generator=generator) * front_std
    uniform = torch.rand(count, generator=generator) * 360.0 - 180.0
    azimuth = wrap_azimuth(torch.where(frontal, around_front, uniform))
    return orbit_cameras(azimuth, base.elevation, base.radius, base.fovy)


class SyntheticPrior(Prior):
    """The exact-score prior of reference objects (see module docstring)."""

    def __init__(self, images: Tensor, image_prompts: list[str], azimuths: Tensor, device: torch.device):
        """``images`` [R*K, 3, H, W] in [-1, 1]; ``image_prompts`` the R reference prompts; ``azimuths`` [R*K]."""
        self.device, self.dtype = device, torch.float32
        self.images = images.to(device)
        self.prompts = list(image_prompts)
        self.per_reference = images.shape[0] // len(image_prompts)
        self.azimuths = azimuths
        self.alphas_cumprod = sd_alphas_cumprod().to(device)

    @classmethod
    def build(
        cls,
        config: SyntheticPriorConfig,
        prompt: str,
        resolution: int,
        sampler: OrbitSampler,
        device: torch.device,
        background: float = 1.0,
    ) -> SyntheticPrior:
        prompts, sources = config.references(prompt)
        gen = torch.Generator().manual_seed(config.seed)
        images, azimuths = [], []
        for source in sources:
            if isinstance(source, Path) and not source.is_file():
                raise UserError(f"reference {source} does not exist")
            scene = load_object(source).to(device)
            cams = biased_cameras(config.num_images, sampler, config.p_front, config.front_std, gen)
            for rgb in render_batches(scene, cams, resolution, background, batch=64):
                images.append(rgb.clamp(0, 1) * 2.0 - 1.0)
            azimuths.append(cams.azimuth)
        return cls(torch.cat(images), prompts, torch.cat(azimuths), device)

    # ------------------------------------------------------------------ text: an index into the references
    def text_embeddings(self, prompt: str, negative_prompt: str = "", view_dependent: bool = False) -> TextEmbeddings:
        """The prompt selects its reference (index); the negative is the union (-1). View suffixes do not apply."""
        index = self.prompts.index(prompt)
        return TextEmbeddings(plain=torch.tensor([index]), negative=torch.tensor([-1]), views=None)

    def _data(self, index: int) -> Tensor:
        if index < 0:
            return self.images
        return self.images[index * self.per_reference : (index + 1) * self.per_reference]

    def reference_images(self, index: int = 0) -> Tensor:
        """The K images of one reference, in [0, 1]."""
        return (self._data(index) + 1.0) / 2.0

    def reference_latents(self, index: int = 0) -> Tensor:
        """The K images of one reference as this prior's latents (pixels in [-1, 1]): the support of p(x | y)."""
        return self._data(index)

    # ------------------------------------------------------------------ images -> "latents" (pixels in [-1, 1])
    def encode(self, images: Tensor, approximate: bool = False) -> Tensor:
        """The pixels mapped to [-1, 1] (exact: there is no cheaper encoder to approximate)."""
        return images.float() * 2.0 - 1.0

    # ------------------------------------------------------------------ diffusion
    def eps_text(self, x_t: Tensor, timesteps: Tensor, text: Tensor) -> Tensor:
        """Exact eps of the images of each sample's reference (text [B] indices; -1 = all references)."""
        out = torch.empty(x_t.shape, dtype=torch.float32, device=x_t.device)
        for index in text.unique().tolist():
            rows = (text == index).nonzero().squeeze(1).to(x_t.device)
            out[rows] = mixture_eps(x_t[rows], self._data(int(index)), self.alphas_cumprod, timesteps[rows])
        return out

    @torch.no_grad()
    def eps(self, x_t: Tensor, timesteps: Tensor, text: Tensor, negative: Tensor, guidance_scale: float) -> Tensor:
        """``Prior.eps`` with text [B] and negative [1] reference indices."""
        eps_cond = self.eps_text(x_t, timesteps, text)
        if len(self.prompts) == 1 or math.isclose(guidance_scale, 1.0):
            return eps_cond  # one reference: the union is the prompt's own distribution
        eps_uncond = self.eps_text(x_t, timesteps, negative.expand(x_t.shape[0]))
        return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


def with_object(config: SyntheticPriorConfig, prompt: str, name: str | None = None) -> SyntheticPriorConfig:
    """``config`` with ``object`` set to the built-in object a run of ``prompt`` shows, or to ``name`` when given
    (unchanged with reference files, an object already named, or a prompt that names none, which ``references``
    refuses)."""
    if config.reference or config.object:
        return config
    if name is None:
        try:
            name = object_named(prompt)
        except UserError:
            return config
    return replace(config, object=name)
