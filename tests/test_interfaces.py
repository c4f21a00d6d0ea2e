"""phi and psi are declared interfaces: the loop builds them through registries and needs nothing else."""

from dataclasses import dataclass, replace
from typing import ClassVar

import pytest
import torch
from small_runs import small_synthetic_config

from esd_gs import estimators, priors
from esd_gs.estimators import (
    CameraLoRAEstimator,
    EstimatorConfig,
    ParticleEstimator,
    ResidualPsiConfig,
    ScoreEstimator,
    SyntheticResidualEstimator,
)
from esd_gs.pipeline.build import build_trainer
from esd_gs.priors import Prior, PriorConfig, StableDiffusionPrior, SyntheticPrior, SyntheticPriorConfig


def small_config(**changes):
    return small_synthetic_config(8, **changes)


def test_every_prior_and_estimator_implements_its_interface():
    assert all(issubclass(cls, Prior) for cls in (StableDiffusionPrior, SyntheticPrior))
    assert all(
        issubclass(cls, ScoreEstimator) for cls in (CameraLoRAEstimator, SyntheticResidualEstimator, ParticleEstimator)
    )
    assert CameraLoRAEstimator.trains and SyntheticResidualEstimator.trains and not ParticleEstimator.trains

    class Incomplete(ScoreEstimator):
        trains = False

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()  # eps and the checkpoint methods are required


class NoiseEstimator(ScoreEstimator):
    """A psi whose scores are the injected noise, with or without the camera: ESD with it is SDS exactly."""

    trains = False
    renders = False  # ask the loop for fresh renders before each step (this draws cameras: a different run)

    def __init__(self, prior, config):
        self.refreshes, self.saved = [], 0

    def before_step(self, step, render_latents):
        if self.renders:
            self.refreshes.append(render_latents(3).shape)

    def eps(self, x_t, timesteps, text, cameras, noise=None):
        return noise.float()

    def checkpoint_state(self):
        self.saved += 1
        return {"marker": torch.ones(1)}, {"kind": "noise"}

    def load_checkpoint_state(self, tensors, meta):
        assert meta == {"kind": "noise"} and torch.equal(tensors["marker"], torch.ones(1))


@dataclass
class NoiseConfig(EstimatorConfig):
    """The config of ``NoiseEstimator`` (``psi:noise``): all a new estimator adds besides the estimator itself."""

    name: ClassVar[str] = "noise"

    def build(self, prior):
        return NoiseEstimator(prior, self)


def test_a_new_estimator_runs_through_the_registry_alone(tmp_path, monkeypatch):
    """Registered in one dict, an estimator the loop has never heard of is built, refreshed through the render
    callback, used by eq. 9 and checkpointed; ESD lambda 1 with it equals SDS bit for bit (null score = noise)."""
    monkeypatch.setitem(estimators.ESTIMATORS, "noise", NoiseConfig)
    config = small_config()
    esd = replace(config, distill=replace(config.distill, method="esd", lambda_entropy=1.0))
    esd = replace(esd, psi=NoiseConfig())
    sds = replace(config, distill=replace(config.distill, method="sds"))
    with_noise = build_trainer(esd, tmp_path / "esd", torch.device("cpu"))
    plain = build_trainer(sds, tmp_path / "sds", torch.device("cpu"), prior=with_noise.prior)
    assert isinstance(with_noise.psi, NoiseEstimator) and plain.psi is None
    for _ in range(config.steps - 2):
        with_noise.train_step(), plain.train_step()
    for key, value in plain.scene.params.items():
        assert torch.equal(with_noise.scene.params[key], value), key
    # the callback renders and encodes fresh views of the current scene at the run's resolution, in the prior's space
    with_noise.psi.renders = True
    with_noise.train_step(), with_noise.train_step()
    assert with_noise.psi.refreshes == [torch.Size([3, 3, 32, 32])] * 2
    with_noise.save()
    assert with_noise.psi.saved == 1
    restored = build_trainer(esd, tmp_path / "esd", torch.device("cpu"), prior=with_noise.prior)
    restored.restore()
    assert restored.step == config.steps


def test_a_new_prior_runs_through_the_registry_alone(tmp_path, monkeypatch):
    """A prior registered in PRIORS is built from its config and is all the loop scores with."""
    calls = []

    class CountingPrior(SyntheticPrior):
        def eps(self, x_t, timesteps, text, negative, guidance_scale):
            calls.append(x_t.shape)
            return super().eps(x_t, timesteps, text, negative, guidance_scale)

    @dataclass
    class CountingConfig(PriorConfig):
        name: ClassVar[str] = "counting"
        learned_estimator: ClassVar[str] = "residual"
        estimators: ClassVar[tuple[str, ...]] = ("residual", "particle")
        pixel_space: ClassVar[bool] = True
        uses_context: ClassVar[bool] = True

        def build(self, device, context):
            built = SyntheticPriorConfig(num_images=16).build(device, context)
            return CountingPrior(built.images, built.prompts, built.azimuths, device)

    monkeypatch.setitem(priors.PRIORS, "counting", CountingConfig)
    config = replace(small_config(psi={"name": "particle"}), prior=CountingConfig())
    config.validate()
    trainer = build_trainer(config, tmp_path, torch.device("cpu"))
    assert isinstance(trainer.prior, CountingPrior) and isinstance(trainer.psi, ParticleEstimator)
    trainer.train_step(), trainer.train_step()
    assert calls == [torch.Size([2, 3, 32, 32])] * 2


def test_the_particle_bank_refreshes_itself_through_the_callback():
    prior = SyntheticPrior(torch.zeros(4, 3, 8, 8), ["a"], torch.zeros(4), torch.device("cpu"))
    psi = ParticleEstimator(prior, bank_size=5, refresh_every=3)
    asked = []

    def render_latents(count):
        asked.append(count)
        return torch.full((count, 3, 8, 8), float(len(asked)))

    for step in range(7):
        psi.before_step(step, render_latents)
    assert asked == [5, 5, 5]  # steps 0, 3 and 6
    assert psi.bank.shape == (5, 3, 8, 8) and float(psi.bank[0, 0, 0, 0]) == 3.0


def test_a_prior_without_a_learned_psi_is_one_clear_line(monkeypatch):
    """A prior that lists only the particle psi refuses a learned one in one line naming the psi it works with (an
    SDS run, which reads no psi, is not refused)."""
    from esd_gs.errors import UserError

    @dataclass
    class PlainConfig(PriorConfig):
        name: ClassVar[str] = "plain"
        learned_estimator: ClassVar[str] = "particle"
        estimators: ClassVar[tuple[str, ...]] = ("particle",)
        pixel_space: ClassVar[bool] = True
        uses_context: ClassVar[bool] = True

        def build(self, device, context):
            return SyntheticPriorConfig().build(device, context)

    monkeypatch.setitem(priors.PRIORS, "plain", PlainConfig)
    config = replace(small_config(psi={"name": "particle"}), prior=PlainConfig())
    config.validate()  # its particle psi
    learned = replace(config, psi=ResidualPsiConfig())
    with pytest.raises(UserError, match="^prior:plain works with psi:particle, not psi:residual$"):
        learned.validate()
    replace(learned, distill=replace(learned.distill, method="sds")).validate()
