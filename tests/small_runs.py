"""A small synthetic-prior generate config for tests that drive the Trainer directly (seconds on CPU)."""

from dataclasses import replace

from esd_gs.configs.generate import GenerateConfig, synthetic_defaults


def small_synthetic_config(steps: int, psi: dict | None = None, **changes) -> GenerateConfig:
    """``synthetic_defaults()`` with 200 Gaussians, 16 prior images, batch 2, no previews or checkpoints and a tiny
    gif turntable; ``psi`` changes fields of ``--psi.*``, ``changes`` any other top-level field."""
    base = synthetic_defaults()
    return replace(
        base,
        prompt="a head",
        steps=steps,
        batch_size=2,
        init=replace(base.init, num_points=200),
        synthetic=replace(base.synthetic, num_images=16),
        psi=replace(base.psi, **(psi or {})),
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
