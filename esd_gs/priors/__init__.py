"""phi, the 2D priors score distillation distils from. Each implements ``base.Prior`` and has a config
(``base.PriorConfig``) that is the unit ``--prior`` selects and that builds it:

- ``stable_diffusion.StableDiffusionConfig`` (``prior:sd``, the default): a frozen Stable Diffusion 1.x / 2.x,
  found through ``sources`` (model families and their mirrors);
- ``synthetic.SyntheticPriorConfig`` (``prior:synthetic``): the exact score of renders of known objects (offline);
- ``synthetic_unet.SyntheticUNetConfig`` (``prior:synthetic-unet``): a small UNet fitted to those renders.

Priors whose phi is a diffusers UNet share ``unet_prior.UNetPrior`` (and so take the LoRA psi). ``perp_neg`` holds
Perp-Neg's view conditions and guidance (``--perp-neg``: phi's text guidance with perpendicular view negatives).

``PRIORS`` is the table of them, by name. A new prior adds its module (the prior and its config, which declares the
estimators psi it works with) and one entry here.
"""

from __future__ import annotations

from .base import Prior, PriorConfig, RunContext, TextEmbeddings
from .stable_diffusion import StableDiffusionConfig, StableDiffusionPrior
from .synthetic import SyntheticPrior, SyntheticPriorConfig
from .synthetic_unet import SyntheticUNetConfig, SyntheticUNetPrior, synthetic_images
from .unet_prior import UNetPrior

PRIORS: dict[str, type[PriorConfig]] = {
    config.name: config for config in (StableDiffusionConfig, SyntheticPriorConfig, SyntheticUNetConfig)
}
"""Every prior's config, by its name (``prior:NAME``, ``name: NAME`` under ``prior:`` in a saved config)."""


def prior_key(config: PriorConfig, context: RunContext) -> str:
    """Runs with the same key can share one built prior (the cache key of ``esd-gs batch``): the same prior settings
    and, for a prior that reads it, the same ``RunContext``."""
    return repr((config, context if config.uses_context else None))


__all__ = [
    "PRIORS",
    "Prior",
    "PriorConfig",
    "RunContext",
    "StableDiffusionConfig",
    "StableDiffusionPrior",
    "SyntheticPrior",
    "SyntheticPriorConfig",
    "SyntheticUNetConfig",
    "SyntheticUNetPrior",
    "TextEmbeddings",
    "UNetPrior",
    "prior_key",
    "synthetic_images",
]
