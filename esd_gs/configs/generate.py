"""The typed configuration of ``esd-gs generate``: the components' own configs, composed (tyro turns it into the
command line; named presets are values of it, ``presets.py``; YAML files save and load it, ``yaml_io.py``).

Each component defines and checks its own settings (``__post_init__``): the prior phi (one config per prior,
``priors.PRIORS``), the estimator psi (one per estimator, ``estimators.ESTIMATORS``), the update rule
(``DistillationConfig``), timesteps, cameras, the initial Gaussians, the optimiser, densification and outputs.
``GenerateConfig`` extends the loop's own settings (``training.config.TrainingConfig``) with what belongs to a run
as a whole, and checks how its parts fit together (``validate``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, Union

import tyro

from ..distillation import DistillationConfig, TimestepSchedule
from ..errors import UserError
from ..estimators import ESTIMATORS, LoRAPsiConfig
from ..monitors.psi_error import PsiDiagnosticConfig
from ..priors import PRIORS, RunContext, StableDiffusionConfig
from ..training.config import TrainingConfig

PriorChoice = Union[tuple(Annotated[config, tyro.conf.subcommand(name)] for name, config in PRIORS.items())]
"""``--prior``: one of the configs of ``priors.PRIORS`` (``prior:NAME`` on the command line)."""
PsiChoice = Union[tuple(Annotated[config, tyro.conf.subcommand(name)] for name, config in ESTIMATORS.items())]
"""``--psi``: one of the configs of ``estimators.ESTIMATORS`` (``psi:NAME`` on the command line)."""

PRESET_SUMMARIES = {
    "esd": "ESD, lambda 0.5, on Stable Diffusion 2.1-base; the default",
    "vsd": "VSD, i.e. ESD with lambda 0",
    "sds": "SDS, text guidance 100",
    "preview": "ESD in 600 steps at 256 px, a fast look",
    "synthetic": "offline on a CPU: the exact synthetic prior at 32 px",
    "synthetic-unet": "offline: a small UNet fitted to the synthetic prior",
}
"""The presets' names, defined here once, with what each is for (``presets.PRESETS`` holds their values)."""
PresetName = Literal[tuple(PRESET_SUMMARIES)]
PRESET_HELP = (
    "The named defaults this run starts from: "
    + "; ".join(f"{name} ({summary})" for name, summary in PRESET_SUMMARIES.items())
    + ". Flags given on the command line override them."
)


def flat(factory):
    """A nested config whose settings read as the parent's own: ``--method`` on the command line (with
    ``tyro.conf.OmitArgPrefixes`` on the field's type) and ``method:`` at the top of a YAML preset."""
    return field(default_factory=factory, metadata={"flat": True})


@dataclass
class GenerateConfig(TrainingConfig):
    """Turn a text prompt into 3D Gaussians with score distillation (ESD by default).

    Starts from a ball, --init ply PATH or --init shap-e; writes scene.ply, a video.

    Progress shows grad (the gradient's RMS: it grows as t falls) and psi's loss.

    For example:
      esd-gs generate "a plush dragon toy"
      esd-gs generate "a red car" --preset synthetic
      esd-gs generate --resume runs/a-plush-dragon-toy-esd
    """

    prompt: Annotated[str, tyro.conf.Positional, tyro.conf.PositionalMetavarFromFieldName] = ""
    """The text prompt (for example "a plush dragon toy"). Not needed with --resume."""
    preset: Annotated[PresetName, tyro.conf.arg(help=PRESET_HELP)] = "esd"
    config: Path | None = None
    """A YAML file of settings (a run's config.yaml, or your own preset) applied over --preset; flags override it."""
    distill: Annotated[DistillationConfig, tyro.conf.OmitArgPrefixes] = flat(DistillationConfig)
    out: Path | None = None
    """Run directory; None = runs/<prompt>-<method>."""
    resume: Path | None = None
    """Continue the run in this directory from its last checkpoint (its saved config is used)."""
    overwrite: bool = False
    """Replace a run directory that already holds a run."""
    device: str = "auto"
    """auto (CUDA if available), cpu or cuda."""
    # Costs a compile (minutes) in the first step, and for a pixel-space prior (synthetic-unet) again at its new render
    # size (SD resizes every render to its native size); the guards pick the compiled graphs after that
    # (priors/compile.py). Steers one invocation: a --resume compiles as its own command line says. A compiler
    # failure is announced in one line and the run goes on eager. Off by default because it is unmeasured on a GPU.
    compile: bool = False
    """torch.compile the UNet passes (minutes of compile in the first step); off by default: unmeasured on a GPU."""
    viewer: bool = False
    """Serve a live 3D view of the Gaussians in the browser while training (viser; refreshed every few seconds)."""
    viewer_port: int = 8080
    """Port of the live view's web page (with --viewer)."""
    prior: PriorChoice = field(default_factory=StableDiffusionConfig)
    psi: PsiChoice = field(default_factory=LoRAPsiConfig)
    timesteps: TimestepSchedule = field(default_factory=TimestepSchedule)
    diagnose: PsiDiagnosticConfig = field(default_factory=PsiDiagnosticConfig)

    @property
    def run_context(self) -> RunContext:
        """What the prior may read of this run (``priors.RunContext``)."""
        return RunContext(self.prompt, self.resolution, self.cameras, self.background)

    def validate(self, resuming: bool = False) -> None:
        """The run's own settings and how the parts fit together (each part checked its own) -> one UserError;
        ``resuming``: a saved run's config, whose start is not made again (``TrainingConfig.validate``)."""
        if self.resume is None and not self.prompt.strip():
            raise UserError('the prompt is empty: esd-gs generate "a plush dragon toy"')
        super().validate(resuming)
        if not 1 <= self.viewer_port <= 65535:
            raise UserError(f"--viewer-port must be in 1..65535, got {self.viewer_port}")
        if self.viewer:
            import importlib.util

            if importlib.util.find_spec("viser") is None:
                raise UserError("--viewer needs viser, which is not installed: pip install 'esd-gs[viewer]'")
        self.prior.check_run(self.resolution_start)
        if self.distill.perp_neg:  # phi's guidance, so every method takes it; the prior needs view prompts
            self.prior.check_perp_neg()
        if self.prompt.strip():
            self.prior.check_prompt(self.prompt)
        if self.distill.needs_psi and not (self.psi.any_prior or self.psi.name in self.prior.estimators):
            usable = [name for name, config in ESTIMATORS.items() if config.any_prior or name in self.prior.estimators]
            raise UserError(
                f"prior:{self.prior.name} works with psi:{' or psi:'.join(usable)}, not psi:{self.psi.name}"
            )
        self.psi.check_run()
