"""What every prior whose phi is a diffusers ``UNet2DConditionModel`` shares (``base.Prior``): the UNet's noise
prediction with batched text classifier-free guidance, and the roles of a UNet that psi shares.

Stable Diffusion (``stable_diffusion.py``) and the fitted synthetic UNet (``synthetic_unet.py``) are such priors;
the paper's learned psi (``estimators.lora.CameraLoRAEstimator``: LoRA + camera MLP) works on any of them.

A subclass sets ``unet``, ``scheduler`` (a diffusers DDPM scheduler: the beta schedule and prediction type),
``device`` and ``dtype``, then calls ``_init_unet``. Text conditions are the UNet's ``encoder_hidden_states``
([B, L, D]); the UNet's output becomes eps by ``diffusion.eps_from_prediction`` (epsilon or v-prediction).
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import Tensor

from ..diffusion import eps_from_prediction
from ..errors import UserError
from .base import Prior
from .perp_neg import perp_neg_guidance


class UNetPrior(Prior):
    """phi = a frozen diffusers UNet (module docstring)."""

    unet: torch.nn.Module
    scheduler: object

    def _init_unet(self) -> None:
        self.unet.requires_grad_(False)
        self.unet.eval()
        self.alphas_cumprod = self.scheduler.alphas_cumprod.to(device=self.device, dtype=torch.float32)
        self.prediction_type = self.scheduler.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise UserError(f"unsupported prediction type '{self.prediction_type}' (need epsilon or v_prediction)")
        self.shared_unet_roles = None  # set by a shared-UNet psi (estimators.lora.SharedUNetRoles)
        self.unet_forward = self.unet  # what runs a pass: the UNet, or its compiled forward (--compile, compile.py)
        self._own_class_embedding = self.unet.class_embedding  # what restore() puts back

    def _unet_eps(self, x_t: Tensor, timesteps: Tensor, text: Tensor, class_labels: Tensor | None = None) -> Tensor:
        """One plain UNet pass of phi's UNet (adapters and camera embedding as currently set) -> eps, float32."""
        out = self.unet_forward(
            x_t.to(self.dtype), timesteps, encoder_hidden_states=text.to(self.dtype), class_labels=class_labels
        ).sample
        return eps_from_prediction(out, x_t, self.alphas_cumprod, timesteps, self.prediction_type)

    @torch.no_grad()
    def eps(self, x_t: Tensor, timesteps: Tensor, text: Tensor, negative: Tensor, guidance_scale: float) -> Tensor:
        """eps_phi(x_t, t, y) with text classifier-free guidance (``Prior.eps``); text [B, L, D], negative
        [1, L, D]. One batched UNet pass for both halves; at guidance 1 only the conditional half (the whole
        answer)."""
        batch = x_t.shape[0]
        if math.isclose(guidance_scale, 1.0):
            with self.phi_mode():
                return self._unet_eps(x_t, timesteps, text)
        with self.phi_mode():
            both = self._unet_eps(
                torch.cat([x_t, x_t]),
                torch.cat([timesteps, timesteps]),
                torch.cat([negative.expand(batch, -1, -1), text]),
            )
        eps_uncond, eps_cond = both.chunk(2)
        return eps_uncond + guidance_scale * (eps_cond - eps_uncond)

    @torch.no_grad()
    def eps_perp_neg(
        self,
        x_t: Tensor,
        timesteps: Tensor,
        positive: Tensor,
        negatives: Tensor,
        weights: Tensor,
        negative: Tensor,
        guidance_scale: float,
    ) -> Tensor:
        """eps_phi(x_t, t, y) with Perp-Neg text guidance (``Prior.eps_perp_neg``); positive [B, L, D], negatives
        [B, K, L, D], weights [B, K], negative [1, L, D]. One batched UNet pass on (2 + K) B inputs, in the order
        unconditional, positive, then each negative: 4 passes of phi per view with K = 2, against CFG's 2."""
        batch, count = x_t.shape[0], negatives.shape[1]
        texts = [negative.expand(batch, -1, -1), positive] + [negatives[:, i] for i in range(count)]
        with self.phi_mode():
            every = self._unet_eps(
                torch.cat([x_t] * (2 + count)), torch.cat([timesteps] * (2 + count)), torch.cat(texts)
            )
        eps_uncond, eps_positive, *eps_negatives = every.chunk(2 + count)
        stacked = torch.stack(eps_negatives, dim=1)
        return perp_neg_guidance(eps_uncond, eps_positive, stacked, weights.to(eps_uncond.device), guidance_scale)

    @contextlib.contextmanager
    def phi_mode(self):
        """Run the UNet as the clean pretrained phi. When a shared-UNet psi has put its LoRA and camera MLP into this
        UNet (``shared_unet_roles``), switch it to the phi role; it stays there until psi's next pass switches back,
        so the adapters are toggled once per change of role, never around every pass."""
        if self.shared_unet_roles is not None:
            self.shared_unet_roles.use("phi")
        yield

    def restore(self) -> None:
        """``Prior.restore``: a shared-UNet psi's LoRA adapters deleted (peft's layers then compute exactly the base
        layers), its camera MLP detached, and the UNet's passes eager again (``--compile``)."""
        if self.shared_unet_roles is not None:
            self.shared_unet_roles.use("phi")
        adapters = list(getattr(self.unet, "peft_config", None) or {})  # also those of a psi that failed half-built
        if adapters:
            self.unet.delete_adapters(adapters)
        self.unet.class_embedding = self._own_class_embedding
        self.shared_unet_roles = None
        self.unet_forward = self.unet
