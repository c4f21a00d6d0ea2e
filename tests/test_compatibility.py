"""What esd-gs 0.1 wrote still works: its checkpoints resume to the very scene 0.1 reached, its presets load."""

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from esd_gs.configs.presets import dump_yaml_config, load_yaml_config
from esd_gs.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "tests" / "data" / "v0.1-runs"


@pytest.mark.parametrize("name", ["learned-esd", "particle-esd"])
def test_a_checkpoint_of_version_0_1_resumes_to_the_scene_0_1_reached(tmp_path, name):
    """Interrupted by 0.1 at step 2 of 4 (psi's optimiser, dropout counter or particle bank in 0.1's layout):
    resumed here, the run ends bit for bit where 0.1's own uninterrupted run ended."""
    run = tmp_path / name
    shutil.copytree(RUNS / name, run)
    config = load_yaml_config(run / "config.yaml")
    trainer = Trainer(config, run, torch.device("cpu"))
    trainer.restore()
    assert trainer.step == 2
    if config.psi.estimator == "learned":
        assert trainer.psi.null_rate_counter[1] == 2  # the counter came back from 0.1's meta.json
        assert len(trainer.psi.optimizer.state) > 0  # and AdamW's moments from its psi_optim.* tensors
    else:
        assert trainer.psi.bank is not None and trainer.psi.bank.shape[0] == config.psi.bank_size
    while trainer.step < config.steps:
        trainer.train_step()
    expected = load_file(str(RUNS / name / "expected_scene_v0.1.safetensors"))
    for key, value in expected.items():
        assert torch.equal(trainer.scene.params[key].detach(), value), key


def test_the_checkpoint_written_now_resumes_the_same_way(tmp_path):
    """Resave the 0.1 run in this version's layout mid-way, restore it in a fresh trainer: same end result."""
    run = tmp_path / "run"
    shutil.copytree(RUNS / "learned-esd", run)
    config = load_yaml_config(run / "config.yaml")
    first = Trainer(config, run, torch.device("cpu"))
    first.restore()
    first.train_step()
    first.save()  # this version's layout: psi's optimiser and settings under psi.*
    second = Trainer(config, run, torch.device("cpu"), prior=first.prior)
    second.restore()
    assert second.step == 3 and second.psi.null_rate_counter == first.psi.null_rate_counter
    second.train_step()
    expected = load_file(str(RUNS / "learned-esd" / "expected_scene_v0.1.safetensors"))
    assert all(torch.equal(second.scene.params[k].detach(), v) for k, v in expected.items())


@pytest.mark.parametrize("preset", ["esd", "vsd", "sds", "preview"])
def test_shipped_presets_and_0_1_configs_keep_their_flat_update_rule(preset):
    """The update rule's settings stay at the top of a preset (``method: sds``), as on the command line."""
    config = load_yaml_config(ROOT / "configs" / f"{preset}.yaml")
    assert config.distill.method == {"esd": "esd", "vsd": "vsd", "sds": "sds", "preview": "esd"}[preset]
    text = dump_yaml_config(config)
    assert "\nmethod: " in "\n" + text and "distill" not in text
    saved = load_yaml_config(RUNS / "learned-esd" / "config.yaml")
    assert (saved.distill.method, saved.distill.lambda_entropy) == ("esd", 0.5)
