"""A small synthetic-prior generate config for tests that drive the Trainer directly (seconds on CPU)."""

from dataclasses import replace

from esd_gs.configs.generate import GenerateConfig
from esd_gs.configs.presets import PRESETS
from esd_gs.priors import SyntheticUNetConfig, synthetic_images


def small_synthetic_config(
    steps: int, psi: dict | None = None, preset: str = "synthetic", prior: dict | None = None, **changes
) -> GenerateConfig:
    """The ``preset`` (synthetic or synthetic-unet) with 200 Gaussians, 16 prior images, batch 2, one psi update a
    step (the synthetic preset's four cost these tests' time, and no test of them uses this helper), no previews or
    checkpoints and a tiny gif turntable. ``psi`` changes fields of ``--psi.*`` (its ``name`` picks the estimator,
    with the preset's defaults for it: ``Preset.with_psi``; ``train_steps_per_iter`` more updates), ``prior`` fields of
    the prior's config (``--prior.*``), ``changes`` any other top-level field."""
    psi = dict(psi or {})
    chosen = PRESETS[preset]
    base = chosen.with_psi(psi.pop("name")) if "name" in psi else chosen.config
    one_update = {"train_steps_per_iter": 1} if hasattr(base.psi, "train_steps_per_iter") else {}
    images = replace(synthetic_images(base.prior), num_images=16)
    prior_config = replace(base.prior, images=images) if isinstance(base.prior, SyntheticUNetConfig) else images
    return replace(
        base,
        prompt="a head",
        steps=steps,
        batch_size=2,
        init=replace(base.init, num_points=200),
        prior=replace(prior_config, **(prior or {})),
        psi=replace(base.psi, **{**one_update, **psi}),
        output=replace(
            base.output,
            preview_every=0.0,
            checkpoint_every=0.0,
            turntable_views=4,
            turntable_size=16,
            video_formats=("gif",),
        ),
        **changes,
    )


def resumed_and_straight(make_trainer, steps: int, stop: int):
    """A straight run of ``steps`` steps (``make_trainer("a")``) and one checkpointed after ``stop`` steps, restored
    into a fresh trainer on the same folder (``make_trainer("b")``) and finished; asserts the restored step and that
    both end with the same scene, bit for bit. Returns (straight, resumed) for checks of their other state."""
    import torch

    straight = make_trainer("a")
    for _ in range(steps):
        straight.train_step()
    first = make_trainer("b")
    for _ in range(stop):
        first.train_step()
    first.save()
    resumed = make_trainer("b")
    resumed.restore()
    assert resumed.step == stop
    for _ in range(steps - stop):
        resumed.train_step()
    for key, value in straight.scene.params.items():
        assert torch.equal(value, resumed.scene.params[key]), key
    return straight, resumed
