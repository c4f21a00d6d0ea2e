"""Runs written before the prior and the estimator had configs of their own (esd-gs at ec7f55f: ``prior: synthetic``
with a flat ``synthetic:`` section and one ``psi:`` mapping with ``estimator: learned|particle``) load and resume
as they did. ``tests/data/flat-config-runs/make_fixtures.py`` made them with that version: each run interrupted at
step 2 of 4, and the scene that version reached uninterrupted."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from esd_gs.configs.yaml_io import load_yaml_config, run_config_text, with_synthetic_object
from esd_gs.estimators import ParticlePsiConfig, ResidualPsiConfig
from esd_gs.pipeline.build import build_trainer
from esd_gs.priors import SyntheticPriorConfig

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "tests" / "data" / "flat-config-runs"
ROUNDING = 2e-5
"""As ``test_compatibility.ROUNDING``: the fixtures' scenes are compared to float rounding, in case they were made on
another CPU (on the machine that made them the resumed run matches bit for bit)."""


@pytest.mark.parametrize(
    ("name", "psi_type"), [("particle-esd", ParticlePsiConfig), ("learned-esd", ResidualPsiConfig)]
)
def test_a_flat_config_run_resumes_to_the_scene_its_version_reached(tmp_path, name, psi_type):
    run = tmp_path / name
    shutil.copytree(RUNS / name, run)
    config = load_yaml_config(run / "config.yaml")
    assert isinstance(config.prior, SyntheticPriorConfig) and config.prior.num_images == 8
    assert type(config.psi) is psi_type  # estimator: learned with the synthetic prior meant its residual psi
    if psi_type is ResidualPsiConfig:
        assert (config.psi.lr, config.psi.loss_weighting) == (1e-3, "x0")
    else:
        assert config.psi.bank_size == 8
    trainer = build_trainer(config, run, torch.device("cpu"))
    trainer.restore()
    assert trainer.step == 2
    while trainer.step < config.steps:
        trainer.train_step()
    expected = load_file(str(RUNS / name / "expected_scene.safetensors"))
    for key, value in expected.items():
        torch.testing.assert_close(trainer.scene.params[key].detach(), value, rtol=0, atol=ROUNDING, msg=key)
    # saved again, the config is in this version's layout and reads back to the same config, now naming the object
    # the synthetic prior showed (the built-in head: these runs predate the objects' names)
    (tmp_path / "again.yaml").write_text(run_config_text(config))
    assert load_yaml_config(tmp_path / "again.yaml") == with_synthetic_object(config, name="head")


def test_the_command_line_resumes_a_flat_config_run(tmp_path):
    run = tmp_path / "particle-esd"
    shutil.copytree(RUNS / "particle-esd", run)
    done = subprocess.run(
        [sys.executable, "-m", "esd_gs", "generate", "--resume", str(run)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming" in done.stderr and (run / "scene.ply").is_file()
    assert '"status": "finished"' in (run / "run.json").read_text()
