"""phi with Stable Diffusion: a frozen, pretrained Stable Diffusion as the 2D prior p_t(x_t | y) (``base.Prior``).

Loads only what score distillation needs (UNet, VAE, text encoder, tokenizer, noise scheduler) from a model family
name (its known mirrors tried in turn), a Hugging Face id or a local diffusers directory (``sources.py``), of the
Stable Diffusion 1.x or 2.x family (epsilon or v-prediction, text width 768 or 1024). Conventions:

- Images are [B, 3, H, W] in [0, 1]; latents are ``vae.encode(2 x - 1).latent_dist.mean * scaling_factor``
  (the posterior mean: deterministic, differentiable), float32 whatever the VAE's precision (the target trick's
  gradient must not be rounded to fp16/bf16).
- Renders of any size are resized (bilinear; antialiased when shrinking) to the model's native image size before
  encoding (``native_size``: the UNet's ``sample_size`` x the VAE's factor 8, 512 px for SD 2.1-base), as threestudio
  and DreamGaussian do, so the UNet always sees the latent size it was trained on: [B, 4, native/8, native/8].
  ``resize_to_native=False`` keeps the render's own size (latents [B, 4, H/8, W/8]).
- Forward process (DDPM, the model's own beta schedule) and predictions: ``diffusion.process``; the UNet's output
  becomes a noise prediction by ``diffusion.eps_from_prediction`` (epsilon as is; v-prediction exactly).
- Text classifier-free guidance (Ho & Salimans 2022): eps = eps(x_t, t, null) + s (eps(x_t, t, y) - eps(x_t, t, null)),
  where the null text is the negative prompt (empty by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor

from ..errors import UserError
from .base import PriorConfig, RunContext, TextEmbeddings
from .prompts import view_prompts
from .sources import DEFAULT_MODEL, PHI_PARTS, Loadable, load_first, start_hub_probe
from .unet_prior import UNetPrior


@dataclass
class StableDiffusionConfig(PriorConfig):
    """A frozen Stable Diffusion 1.x / 2.x as phi, and how renders and the prompt reach it."""

    name: ClassVar[str] = "sd"
    building: ClassVar[str] = "loading Stable Diffusion"
    learned_estimator: ClassVar[str] = "lora"
    estimators: ClassVar[tuple[str, ...]] = ("lora",)

    # A family's known Hub mirrors are tried in turn; an id names a diffusers SD 1.x/2.x pipeline.
    model: str = DEFAULT_MODEL
    """Stable Diffusion for phi: a family (sd2.1-base, sd2.1, sd1.5), a Hugging Face id or a local diffusers folder."""
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    """UNet/VAE precision: auto = fp16 on CUDA, fp32 on CPU."""
    # So the UNet always sees the latent size it was trained on, whatever the render size.
    resize_to_native: bool = True
    """Resize renders to the model's native size (512 px for SD 2.1-base) before encoding them."""
    # vae renders at 8x the latent size; linear renders at the latent size itself (much cheaper, approximate).
    encoder: Literal["vae", "linear"] = "vae"
    """vae: render at 8x latent size, then encode; linear: render at latent size, affine map (cheap, approximate)."""
    negative_prompt: str = ""
    """Negative prompt for classifier-free guidance."""
    view_dependent_prompt: bool = True
    """Append ', front/side/back/overhead view' to phi's prompt according to the camera."""

    def build(self, device: torch.device, context: RunContext) -> StableDiffusionPrior:
        prior = StableDiffusionPrior.from_pretrained(
            self.model, device=device, precision=self.precision, resize_to_native=self.resize_to_native
        )
        prior.approximate_encoder = self.encoder == "linear"
        return prior

    def model_source(self) -> str:
        return self.model

    def text_embeddings(self, prior: StableDiffusionPrior, prompt: str) -> TextEmbeddings:
        return prior.text_embeddings(prompt, self.negative_prompt, self.view_dependent_prompt)

    def check_perp_neg(self) -> None:
        if not self.view_dependent_prompt:
            raise UserError("--perp-neg needs view-dependent prompts: drop --prior.no-view-dependent-prompt")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """'auto' -> fp16 on CUDA, fp32 on CPU; else fp32 / fp16 / bf16."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if name not in table:
        raise UserError(f"unknown precision '{name}': use auto, fp32, fp16 or bf16")
    if device.type == "cpu" and table[name] == torch.float16:
        raise UserError("fp16 is not supported on CPU: use --prior.precision fp32 (or bf16)")
    return table[name]


class StableDiffusionPrior(UNetPrior):
    """The frozen prior phi (see module docstring); its UNet passes, guidance and roles are ``UNetPrior``'s."""

    def __init__(
        self,
        unet,
        vae,
        text_encoder,
        tokenizer,
        scheduler,
        device: torch.device,
        dtype: torch.dtype,
        resize_to_native: bool = True,
    ):
        self.unet, self.vae, self.text_encoder, self.tokenizer, self.scheduler = (
            unet,
            vae,
            text_encoder,
            tokenizer,
            scheduler,
        )
        self.device, self.dtype = device, dtype
        self.resize_to_native = resize_to_native
        sample_size = unet.config.sample_size
        self.native_latent_size = int(sample_size if isinstance(sample_size, int) else sample_size[0])
        self.vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.native_size = self.native_latent_size * self.vae_factor
        for module in (vae, text_encoder):
            module.requires_grad_(False)
            module.eval()
        self._init_unet()  # the UNet frozen, the schedule, the prediction type (unet_prior.UNetPrior)
        self.vae_scale = float(vae.config.scaling_factor)
        self._rgb_to_latent: tuple[Tensor, Tensor] | None = None

    @classmethod
    def from_pretrained(
        cls,
        model: str = DEFAULT_MODEL,
        device: str | torch.device = "cpu",
        precision: str = "auto",
        resize_to_native: bool = True,
        announce=None,
    ):
        """Load phi's parts from a family name, a Hub id or a local diffusers folder (``sources.load_first``: a
        family's mirrors in turn, until one answers and loads; a known mirror pinned and its weights verified);
        ``announce`` (default: the console) gets one line naming the source used (and one per mirror that failed
        before it). Failures: one ``UserError``."""
        start_hub_probe(model)  # the Hub connectivity check runs while diffusers and transformers import
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        device = torch.device(device)
        dtype = resolve_dtype(precision, device)
        quiet_loading()

        def load(source: Loadable):
            path, weights, revision = source.source, source.weight_kwargs(), source.revision_kwargs()
            return (
                UNet2DConditionModel.from_pretrained(path, subfolder="unet", torch_dtype=dtype, **weights),
                AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=dtype, **weights),
                CLIPTextModel.from_pretrained(path, subfolder="text_encoder", dtype=dtype, **weights),
                CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", **revision),
                DDPMScheduler.from_pretrained(path, subfolder="scheduler", **revision),
            )

        def say(line: str) -> None:
            _announce(announce, line)

        source, (unet, vae, text_encoder, tokenizer, scheduler) = load_first(model, "phi", PHI_PARTS, load, say)
        say(f"phi: Stable Diffusion from {source.describe()}")  # once it has loaded
        return cls(
            unet.to(device),
            vae.to(device),
            text_encoder.to(device),
            tokenizer,
            scheduler,
            device,
            dtype,
            resize_to_native,
        )

    # ------------------------------------------------------------------ text
    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> Tensor:
        """[len(prompts), 77, D] CLIP hidden states (the UNet's cross-attention condition)."""
        tokens = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=min(self.tokenizer.model_max_length, self.text_encoder.config.max_position_embeddings),
            truncation=True,
            return_tensors="pt",
        )
        hidden = self.text_encoder(tokens.input_ids.to(self.device))[0]
        return hidden.to(self.dtype)

    def text_embeddings(self, prompt: str, negative_prompt: str = "", view_dependent: bool = True) -> TextEmbeddings:
        """Encode the prompt once: plain, negative and (optionally) the four view-dependent variants."""
        variants = view_prompts(prompt) if view_dependent else []
        hidden = self.encode_text([prompt, negative_prompt] + variants)
        return TextEmbeddings(
            plain=hidden[0:1],
            negative=hidden[1:2],
            views=hidden[2:] if view_dependent else None,
        )

    # ------------------------------------------------------------------ images -> latents
    def encode(self, images: Tensor, approximate: bool = False) -> Tensor:
        """The VAE encoder (``encode_images``), or with ``approximate`` the fitted per-pixel map
        (``encode_images_linear``) for renders made at latent size."""
        return self.encode_images_linear(images) if approximate else self.encode_images(images)

    def encode_images(self, images: Tensor) -> Tensor:
        """[B, 3, H, W] in [0, 1] -> float32 latents, differentiable: [B, 4, n, n] with n the native latent size
        (or [B, 4, H/8, W/8] with ``resize_to_native`` off; H, W multiples of 8)."""
        if self.resize_to_native:
            images = _resize(images, self.native_size)
        return self._vae_encode(images)

    def _vae_encode(self, images: Tensor) -> Tensor:
        """The VAE's posterior mean times its scaling factor, in float32: [B, 3, H, W] -> [B, 4, H/8, W/8]."""
        if images.shape[-1] % self.vae_factor or images.shape[-2] % self.vae_factor:
            raise ValueError(f"image size must be a multiple of {self.vae_factor}, got {tuple(images.shape[-2:])}")
        posterior = self.vae.encode(images.to(self.dtype) * 2.0 - 1.0).latent_dist
        return (posterior.mean * self.vae_scale).float()

    def encode_images_linear(self, images: Tensor) -> Tensor:
        """Cheap encoder for renders made straight at latent resolution: [B, 3, h, w] in [0, 1] -> [B, 4, h, w].

        Each latent pixel is an affine function of the colour of the same pixel, ``z = A rgb + b``, with (A, b) the
        least-squares fit of this model's own VAE on blocky random images (``rgb_to_latent_map``). It skips the VAE
        encoder, the most expensive part of a step at 512 px, at the cost of an approximate latent (early steps).
        """
        weight, bias = self.rgb_to_latent_map()
        latents = torch.einsum("lc,bchw->blhw", weight, images.float()) + bias.view(1, -1, 1, 1)
        return _resize(latents, self.native_latent_size) if self.resize_to_native else latents

    def rgb_to_latent_map(self, num_images: int = 16) -> tuple[Tensor, Tensor]:
        """(A [4, 3], b [4]) fitted once by least squares: random 8x8-pixel colour blocks -> VAE latents."""
        if self._rgb_to_latent is None:
            gen = torch.Generator().manual_seed(0)
            blocks = torch.rand(num_images, 3, 8, 8, generator=gen)  # one colour per latent pixel
            images = blocks.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3).to(self.device)
            with torch.no_grad():
                latents = self._vae_encode(images)  # [K, 4, 8, 8]
            design = torch.cat([blocks.permute(0, 2, 3, 1).reshape(-1, 3), torch.ones(num_images * 64, 1)], dim=1)
            target = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1]).cpu()
            solution = torch.linalg.lstsq(design.double(), target.double()).solution.float()  # [4 (rgb+1), L]
            self._rgb_to_latent = (solution[:3].T.contiguous().to(self.device), solution[3].to(self.device))
        return self._rgb_to_latent


def quiet_loading() -> None:
    """No per-tensor "Loading weights" bars from diffusers / transformers: they would surround a one-line error.
    (huggingface_hub's download bars stay: a first download takes minutes.)"""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def _announce(announce, line: str) -> None:
    if announce is None:
        from ..progress import console

        console.print(line)
    else:
        announce(line)


def _resize(images: Tensor, size: int) -> Tensor:
    """[B, C, H, W] -> [B, C, size, size], bilinear (antialiased when shrinking); unchanged when already that size."""
    if images.shape[-2:] == (size, size):
        return images
    shrink = images.shape[-2] > size or images.shape[-1] > size
    return torch.nn.functional.interpolate(
        images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink
    )


__all__ = ["StableDiffusionPrior", "resolve_dtype"]
