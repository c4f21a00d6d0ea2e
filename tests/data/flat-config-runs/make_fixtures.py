"""Made with esd-gs at ec7f55f (flat configs): two synthetic runs interrupted at step 2 of 4, and the scene each
reaches uninterrupted."""

import sys
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from esd_gs.configs.generate import synthetic_defaults
from esd_gs.training.run_dir import RunDir
from esd_gs.training.trainer import Trainer

out = Path(sys.argv[1])
base = synthetic_defaults()
base = replace(
    base,
    prompt="a head",
    steps=4,
    batch_size=2,
    resolution=16,
    init=replace(base.init, num_points=48),
    synthetic=replace(base.synthetic, num_images=8),
    output=replace(
        base.output,
        preview_every=0.0,
        checkpoint_every=0.0,
        turntable_views=4,
        turntable_size=16,
        video_formats=("gif",),
    ),
)
for name, estimator in (("particle-esd", "particle"), ("learned-esd", "learned")):
    config = replace(base, psi=replace(base.psi, estimator=estimator, bank_size=8))
    run = out / name
    run.mkdir(parents=True)
    trainer = Trainer(config, run, torch.device("cpu"))
    trainer.train_step()
    trainer.train_step()
    trainer.save()
    files = RunDir(run)
    files.write_config(config)
    files.write_status("interrupted", 2, 4)
    trainer.train_step()
    trainer.train_step()
    save_file(
        {k: v.detach().contiguous() for k, v in trainer.scene.params.items()}, str(run / "expected_scene.safetensors")
    )
    print(name, trainer.step, [p.name for p in (run / "checkpoint").iterdir()])
