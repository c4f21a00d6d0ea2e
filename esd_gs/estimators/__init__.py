"""psi, the estimators of the rendered-image distribution's scores. Each implements ``base.ScoreEstimator`` and has
a config (``base.EstimatorConfig``) that is the unit ``--psi`` selects and that builds it:

- ``lora.LoRAPsiConfig`` (``psi:lora``): the paper's learned psi on a UNet prior, Stable Diffusion or the fitted
  synthetic UNet (LoRA + camera MLP, trained online: ``online.OnlineTrainingConfig``);
- ``residual.ResidualPsiConfig`` (``psi:residual``): the learned psi of the exact synthetic prior (a residual net);
- ``particle.ParticlePsiConfig`` (``psi:particle``): training-free, the exact score of a bank of renders (any prior).

``ESTIMATORS`` is the table of them, by name. A new estimator adds its module (the estimator and its config) and
one entry here; each prior declares which estimators it works with (``PriorConfig.estimators``).
"""

from __future__ import annotations

from .base import EstimatorConfig, RenderLatents, ScoreEstimator
from .lora import CameraLoRAEstimator, LoRAPsiConfig
from .online import CameraEmbedding, OnlineEstimator, OnlineTrainingConfig
from .particle import ParticleEstimator, ParticlePsiConfig
from .residual import ResidualPsiConfig, SyntheticResidualEstimator

ESTIMATORS: dict[str, type[EstimatorConfig]] = {
    config.name: config for config in (LoRAPsiConfig, ResidualPsiConfig, ParticlePsiConfig)
}
"""Every estimator's config, by its name (``psi:NAME``, ``estimator: NAME`` in a saved config)."""


__all__ = [
    "ESTIMATORS",
    "CameraEmbedding",
    "CameraLoRAEstimator",
    "EstimatorConfig",
    "LoRAPsiConfig",
    "OnlineEstimator",
    "OnlineTrainingConfig",
    "ParticleEstimator",
    "ParticlePsiConfig",
    "RenderLatents",
    "ResidualPsiConfig",
    "ScoreEstimator",
    "SyntheticResidualEstimator",
]
