"""phi, the 2D priors score distillation distils from. Each implements ``base.Prior``:

- ``stable_diffusion.StableDiffusionPrior``: a frozen Stable Diffusion 1.x / 2.x (``--prior sd``, the default),
  found through ``sources`` (model families and their mirrors);
- ``synthetic.SyntheticPrior``: the exact score of renders of known objects (``--prior synthetic``, offline);
- ``synthetic_unet.SyntheticUNetPrior``: a small UNet fitted to those renders (``--prior synthetic-unet``).

Priors whose phi is a diffusers UNet share ``unet_prior.UNetPrior`` (and so take the LoRA psi).

``PRIORS`` maps each value of ``GenerateConfig.prior`` to the builder of its prior; a new prior adds its module,
one entry here (and in ``PRIOR_SETTINGS``, the fields its builder reads) and its name to that Literal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from .base import Prior, TextEmbeddings
from .stable_diffusion import StableDiffusionPrior
from .synthetic import SyntheticPrior
from .synthetic_unet import SyntheticUNetPrior
from .unet_prior import UNetPrior

if TYPE_CHECKING:
    from ..configs.generate import GenerateConfig

PRIORS: dict[str, Callable[[GenerateConfig, torch.device], Prior]] = {
    "sd": StableDiffusionPrior.from_config,
    "synthetic": SyntheticPrior.from_config,
    "synthetic-unet": SyntheticUNetPrior.from_config,
}


PRIOR_SETTINGS: dict[str, tuple[str, ...]] = {
    "sd": ("model", "precision", "resize_to_native"),
    "synthetic": ("synthetic", "prompt", "resolution", "cameras", "background"),
    "synthetic-unet": ("synthetic", "synthetic_unet", "prompt", "resolution", "cameras", "background"),
}
"""The ``GenerateConfig`` fields each builder of ``PRIORS`` reads: runs that agree on them can share one prior."""


def prior_key(config: GenerateConfig) -> str:
    """Runs with the same key get the same prior from ``build_prior`` (the cache key of ``esd-gs batch``)."""
    return repr((config.prior, *(getattr(config, name) for name in PRIOR_SETTINGS[config.prior])))


def build_prior(config: GenerateConfig, device: torch.device) -> Prior:
    """phi for a generate run, as ``config.prior`` names it."""
    return PRIORS[config.prior](config, device)


__all__ = [
    "PRIORS",
    "PRIOR_SETTINGS",
    "Prior",
    "StableDiffusionPrior",
    "SyntheticPrior",
    "SyntheticUNetPrior",
    "TextEmbeddings",
    "UNetPrior",
    "build_prior",
    "prior_key",
]
