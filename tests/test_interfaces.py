"""phi and psi are declared interfaces: the loop builds them through registries and needs nothing else."""

from dataclasses import replace

import pytest
import torch
from small_runs import small_synthetic_config

from esd_gs import estimators, priors
from esd_gs.estimators import (
    CameraLoRAEstimator,
    ParticleEstimator,
    ScoreEstimator,
    SyntheticResidualEstimator,
)
from esd_gs.priors import Prior, StableDiffusionPrior, SyntheticPrior
from esd_gs.training.trainer import Trainer


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


def test_a_new_estimator_runs_through_the_registry_alone(tmp_path, monkeypatch):
    """Registered in one dict, an estimator the loop has never heard of is built, refreshed through the render
    callback, used by eq. 9 and checkpointed; ESD lambda 1 with it equals SDS bit for bit (null score = noise)."""
    monkeypatch.setitem(estimators.TRAINING_FREE, "noise", NoiseEstimator)
    config = small_config()
    esd = replace(config, distill=replace(config.distill, method="esd", lambda_entropy=1.0))
    esd = replace(esd, psi=replace(esd.psi, estimator="noise"))
    sds = replace(config, distill=replace(config.distill, method="sds"))
    with_noise = Trainer(esd, tmp_path / "esd", torch.device("cpu"))
    plain = Trainer(sds, tmp_path / "sds", torch.device("cpu"), prior=with_noise.prior)
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
    restored = Trainer(esd, tmp_path / "esd", torch.device("cpu"), prior=with_noise.prior)
    restored.restore()
    assert restored.step == config.steps


def test_a_new_prior_runs_through_the_registry_alone(tmp_path, monkeypatch):
    """A prior registered in PRIORS is built from the config and is all the loop scores with."""
    calls = []

    class CountingPrior(SyntheticPrior):
        def eps(self, x_t, timesteps, text, negative, guidance_scale):
            calls.append(x_t.shape)
            return super().eps(x_t, timesteps, text, negative, guidance_scale)

    def build(config, device):
        built = SyntheticPrior.from_config(config, device)
        return CountingPrior(built.images, built.prompts, built.azimuths, device)

    monkeypatch.setitem(priors.PRIORS, "counting", build)
    trainer = Trainer(small_config(prior="counting"), tmp_path, torch.device("cpu"))
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


def test_a_prior_without_a_learned_psi_is_one_clear_line(tmp_path, monkeypatch):
    from esd_gs.errors import UserError

    monkeypatch.setitem(priors.PRIORS, "plain", SyntheticPrior.from_config)
    config = small_config(prior="plain")
    config = replace(config, psi=replace(config.psi, estimator="learned"))
    with pytest.raises(UserError, match="has no learned psi yet: use --psi.estimator particle"):
        Trainer(config, tmp_path, torch.device("cpu"))
