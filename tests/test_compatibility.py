"""What esd-gs 0.1 wrote still works: its checkpoints resume to the scene 0.1 reached, its presets load.

The scene 0.1 reached was stored on another CPU. Vectorised float kernels (AVX2, AVX-512) round differently, so a
resumed run is compared with it to float rounding (``ROUNDING``, far below one optimiser step). Resuming this
version's own checkpoint is compared bit for bit with an uninterrupted run on the same machine.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from esd_gs.configs.yaml_io import dump_yaml_config, load_yaml_config
from esd_gs.pipeline.build import build_trainer

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "tests" / "data" / "v0.1-runs"
ROUNDING = 2e-5
"""Largest difference allowed from the scene stored by 0.1 after its 4 steps (measured: 6e-6 on the quaternions on
an AVX-512 machine; one Adam step moves each parameter by about its lr, 1e-3 for the means and the quaternions)."""


def test_a_checkpoint_of_version_0_1_resumes_to_the_scene_0_1_reached(tmp_path):
    """Interrupted by 0.1 at step 2 of 4 (the particle bank in 0.1's layout): resumed here, the run ends where 0.1's
    own uninterrupted run ended (to float rounding, module docstring)."""
    name = "particle-esd"
    run = tmp_path / name
    shutil.copytree(RUNS / name, run)
    config = load_yaml_config(run / "config.yaml")
    trainer = build_trainer(config, run, torch.device("cpu"))
    trainer.restore()
    assert trainer.step == 2
    assert trainer.psi.bank is not None and trainer.psi.bank.shape[0] == config.psi.bank_size
    while trainer.step < config.steps:
        trainer.train_step()
    expected = load_file(str(RUNS / name / "expected_scene_v0.1.safetensors"))
    for key, value in expected.items():
        torch.testing.assert_close(trainer.scene.params[key].detach(), value, rtol=0, atol=ROUNDING, msg=key)


def test_a_0_1_checkpoint_of_the_old_synthetic_psi_is_refused_in_one_line(tmp_path):
    """esd-gs 0.1's learned synthetic psi read x_t only; this version's also reads phi's score and predicts v, so
    such a run cannot continue: --resume says so in one line (exit 2) and leaves the run as it was. Its 0.1-layout
    optimiser state is still read (``psi_checkpoint_state``) before the architecture is compared."""
    run = tmp_path / "learned-esd"
    shutil.copytree(RUNS / "learned-esd", run)
    before = {p.name: p.read_bytes() for p in (run / "checkpoint").iterdir()}
    result = subprocess.run(
        [sys.executable, "-m", "esd_gs", "generate", "--resume", str(run)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("resuming")]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "an earlier residual network" in lines[0] and "--overwrite" in lines[0]
    assert {p.name: p.read_bytes() for p in (run / "checkpoint").iterdir()} == before


def test_the_checkpoint_written_now_resumes_the_same_way(tmp_path):
    """Resave the 0.1 run in this version's layout mid-way, restore it in a fresh trainer: the same end result, bit
    for bit, as the trainer that went on without the round trip (and 0.1's, to float rounding)."""
    run = tmp_path / "run"
    shutil.copytree(RUNS / "particle-esd", run)
    config = load_yaml_config(run / "config.yaml")
    first = build_trainer(config, run, torch.device("cpu"))
    first.restore()
    first.train_step()
    first.save()  # this version's layout: psi's state and settings under psi.*
    second = build_trainer(config, run, torch.device("cpu"), prior=first.prior)
    second.restore()
    assert second.step == 3 and torch.equal(second.psi.bank, first.psi.bank)
    first.train_step()  # on without the round trip
    second.train_step()
    assert first.step == second.step == config.steps
    for key, value in first.scene.params.items():
        assert torch.equal(second.scene.params[key].detach(), value.detach()), key
    expected = load_file(str(RUNS / "particle-esd" / "expected_scene_v0.1.safetensors"))
    for key, value in expected.items():
        torch.testing.assert_close(second.scene.params[key].detach(), value, rtol=0, atol=ROUNDING, msg=key)


@pytest.mark.parametrize("preset", ["esd", "vsd", "sds", "preview"])
def test_shipped_presets_and_0_1_configs_keep_their_flat_update_rule(preset):
    """The update rule's settings stay at the top of a preset (``method: sds``), as on the command line."""
    config = load_yaml_config(ROOT / "configs" / f"{preset}.yaml")
    assert config.distill.method == {"esd": "esd", "vsd": "vsd", "sds": "sds", "preview": "esd"}[preset]
    text = dump_yaml_config(config)
    assert "\nmethod: " in "\n" + text and "distill" not in text
    saved = load_yaml_config(RUNS / "learned-esd" / "config.yaml")
    assert (saved.distill.method, saved.distill.lambda_entropy) == ("esd", 0.5)


def test_the_0_1_layout_of_a_learned_psi_maps_onto_this_version_s():
    """0.1 kept psi's AdamW tensors under psi_optim.* and its settings at the top of meta.json (the LoRA psi's layout
    too): they come back as this version's psi state."""
    from esd_gs.training.checkpoint import load_checkpoint, psi_checkpoint_state

    tensors, meta = load_checkpoint(RUNS / "learned-esd" / "checkpoint")
    state, psi_meta = psi_checkpoint_state(tensors, meta)
    assert any(k.startswith("net.") for k in state) and any(k.startswith("optim.psi.") for k in state)
    assert psi_meta["optimizer"] == meta["optimizers"]["psi"] and psi_meta["null_rate_counter"][1] == 2
