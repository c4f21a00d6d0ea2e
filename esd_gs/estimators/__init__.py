"""psi, the estimators of the rendered-image distribution's scores. Each implements ``base.ScoreEstimator``:

- ``lora.CameraLoRAEstimator``: the paper's learned psi on a UNet prior, Stable Diffusion or the fitted synthetic
  UNet (LoRA + camera MLP, ``online``);
- ``residual.SyntheticResidualEstimator``: the learned psi of the synthetic prior (a residual net, ``online``);
- ``particle.ParticleEstimator``: training-free, the exact score of a bank of renders (any prior).

``build_estimator`` picks one from ``--psi.estimator`` and the prior: ``LEARNED`` maps each prior (the values of
``GenerateConfig.prior``) to its learned estimator; a new estimator adds its module and an entry here.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import UserError
from ..priors import Prior
from .base import PsiConfig, RenderLatents, ScoreEstimator
from .lora import CameraLoRAEstimator
from .online import CameraEmbedding, OnlineEstimator
from .particle import ParticleEstimator
from .residual import SyntheticResidualEstimator

LEARNED: dict[str, Callable[[Prior, PsiConfig], ScoreEstimator]] = {
    "sd": CameraLoRAEstimator.create,
    "synthetic": SyntheticResidualEstimator,
    "synthetic-unet": CameraLoRAEstimator.create,
}
"""``--psi.estimator learned``: the learned psi of each prior."""

TRAINING_FREE: dict[str, Callable[[Prior, PsiConfig], ScoreEstimator]] = {
    "particle": ParticleEstimator.from_config,
}
"""The other values of ``--psi.estimator``: estimators that work with any prior."""


def build_estimator(prior_name: str, prior: Prior, config: PsiConfig) -> ScoreEstimator:
    """psi for a run with the prior ``prior_name`` (``GenerateConfig.prior``) and ``--psi.*``."""
    if config.estimator == "learned":
        if prior_name not in LEARNED:
            raise UserError(
                f"the prior '{prior_name}' has no learned psi yet: use --psi.estimator {' or '.join(TRAINING_FREE)}"
            )
        return LEARNED[prior_name](prior, config)
    return TRAINING_FREE[config.estimator](prior, config)


__all__ = [
    "LEARNED",
    "TRAINING_FREE",
    "CameraEmbedding",
    "CameraLoRAEstimator",
    "OnlineEstimator",
    "ParticleEstimator",
    "PsiConfig",
    "RenderLatents",
    "ScoreEstimator",
    "SyntheticResidualEstimator",
    "build_estimator",
]
