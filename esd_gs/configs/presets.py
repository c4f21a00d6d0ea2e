"""The named presets of ``esd-gs generate`` (``--preset NAME``): values of ``GenerateConfig``, in code, so that an
installed esd-gs has them (nerfstudio's method configs are the model).

A preset is the defaults a run starts from; flags given on the command line override them (``cli.generate_cmd``).
``psi_options`` gives the preset's own defaults for an estimator other than its default one (the synthetic-unet
preset's LoRA psi trains at 1e-3, not Stable Diffusion's 1e-4), used when the command line picks that estimator.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..distillation import DistillationConfig, TimestepSchedule
from ..errors import UserError
from ..estimators import ESTIMATORS, EstimatorConfig, LoRAPsiConfig, ParticlePsiConfig, ResidualPsiConfig
from ..initial import BallInit
from ..priors import SyntheticPriorConfig, SyntheticUNetConfig
from ..training.densify import DensifyConfig
from ..training.outputs import OutputConfig
from .generate import PRESET_SUMMARIES, GenerateConfig


@dataclass(frozen=True)
class Preset:
    """One named preset's values (what it is for: ``generate.PRESET_SUMMARIES``, shown by ``--help``)."""

    config: GenerateConfig
    psi_options: tuple[EstimatorConfig, ...] = field(default=())
    """This preset's defaults for estimators other than ``config.psi`` (at most one per estimator)."""

    def with_psi(self, name: str) -> GenerateConfig:
        """The preset's config with the estimator ``name`` as psi: its own default psi, one of ``psi_options``, or
        that estimator's plain defaults."""
        if self.config.psi.name == name:
            return self.config
        chosen = next((option for option in self.psi_options if option.name == name), None)
        if chosen is None:
            chosen = ESTIMATORS[name]()
        return replace(self.config, psi=chosen)


def _synthetic(
    prior: SyntheticPriorConfig | SyntheticUNetConfig,
    psi: EstimatorConfig,
    timesteps: TimestepSchedule,
) -> GenerateConfig:
    """The synthetic priors' defaults (offline, small enough for a CPU): 32 px renders of 1,500 Gaussians on a white
    background, as the prior's reference renders; ESD with lambda 1, the preset's ``psi`` and ``timesteps``. What
    people look at is rendered at 256 px whatever the training size: 48 turntable views (a 4-second turn at 12 frames
    a second, a third of the 120 views' rendering cost on a CPU) and the previews."""
    return GenerateConfig(
        preset=prior.name,
        prior=prior,
        psi=psi,
        distill=DistillationConfig(lambda_entropy=1.0, guidance_scale=1.0),
        timesteps=timesteps,
        steps=1200,
        batch_size=4,
        resolution=32,
        resolution_start=None,
        background="white",
        init=BallInit(num_points=1500, radius=0.6, opacity=0.1),
        densify=DensifyConfig(enabled=False),
        output=OutputConfig(
            preview_every=0.25,
            checkpoint_every=0.5,
            turntable_views=48,
            turntable_size=256,
            video_formats=("mp4", "gif"),
        ),
    )


PRESETS: dict[str, Preset] = {
    "esd": Preset(GenerateConfig()),
    "vsd": Preset(GenerateConfig(preset="vsd", distill=DistillationConfig(method="vsd", lambda_entropy=0.0))),
    "sds": Preset(GenerateConfig(preset="sds", distill=DistillationConfig(method="sds", guidance_scale=100.0))),
    "preview": Preset(
        GenerateConfig(
            preset="preview",
            steps=600,
            resolution=256,
            init=BallInit(num_points=2048),
            densify=DensifyConfig(max_gaussians=30000),
            output=OutputConfig(turntable_views=60, turntable_size=512),
        )
    ),
    # The learned psi's best setting on the exact prior (x0 loss, four updates a 3D step, DreamTime's schedule):
    # it beats the particle psi over six seeds on the development objects (research/janus.md, Finding 19). Another
    # psi or method on this preset keeps DreamTime (the particle psi's six-seed runs used it too).
    "synthetic": Preset(
        _synthetic(
            SyntheticPriorConfig(),
            ResidualPsiConfig(train_steps_per_iter=4),
            TimestepSchedule(name="dreamtime"),
        ),
    ),
    # Unchanged (particle psi, uniform schedule): six seeds of each psi were not run on the fitted UNet.
    "synthetic-unet": Preset(
        _synthetic(SyntheticUNetConfig(), ParticlePsiConfig(), TimestepSchedule()),
        # Its LoRA psi trains on the plain prediction loss, at the residual psi's rate (see research/janus.md).
        psi_options=(LoRAPsiConfig(lr=1e-3),),
    ),
}
"""Every preset, by name (``--preset NAME``)."""

if list(PRESETS) != list(PRESET_SUMMARIES):  # the --preset choices and this table must name the same presets
    raise RuntimeError(f"PRESETS {list(PRESETS)} and PRESET_SUMMARIES {list(PRESET_SUMMARIES)} disagree")


def preset(name: str) -> Preset:
    """The preset ``name``, or one ``UserError`` listing them."""
    if name not in PRESETS:
        raise UserError(f"unknown preset '{name}': use {', '.join(PRESETS)}")
    return PRESETS[name]
