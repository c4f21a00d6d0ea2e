"""``esd-gs generate`` end to end: the real CLI in a subprocess with a tiny Stable Diffusion on CPU."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import plyfile
import pytest
import yaml
from cli_process import start_cli

from esd_gs.io import read_ply
from esd_gs.testing.tiny_sd import build_tiny_stable_diffusion

ROOT = Path(__file__).resolve().parents[1]
FAST = [
    "--resolution",
    "64",
    "--init.num-points",
    "400",
    "--densify.max-gaussians",
    "1500",
    "--output.turntable-views",
    "6",
    "--output.turntable-size",
    "48",
    "--output.preview-every",
    "0.5",
    "--output.checkpoint-every",
    "0.25",
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_stable_diffusion(tmp_path_factory.mktemp("sd") / "tiny", "epsilon")


def esd_gs(*args, cwd=ROOT):
    env = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="120", OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "esd_gs", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )


def start(*args):
    return start_cli(*args, env=dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="120", OMP_NUM_THREADS="1"))


def test_generate_writes_every_output(tiny_model, tmp_path):
    out = tmp_path / "run"
    result = esd_gs("generate", "a head", "--prior.model", tiny_model, "--steps", 12, "--out", out, "--seed", 3, *FAST)
    assert result.returncode == 0, result.stderr[-2000:]
    # The standard 3DGS .ply, read by a third-party reader.
    vertex = plyfile.PlyData.read(str(out / "scene.ply"))["vertex"]
    names = [p.name for p in vertex.properties]
    assert names[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert names[-8:] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    n = len(vertex["x"])
    assert 1 <= n <= 1500 and np.isfinite(vertex["x"]).all()
    assert (out / "scene.splat").stat().st_size == 32 * n
    frames = [frame for frame in iio.imiter(out / "turntable.mp4")]
    assert len(frames) == 6 and frames[0].shape == (48, 48, 3)
    assert iio.imread(out / "contact_sheet.png").ndim == 3
    assert sorted(p.name for p in (out / "previews").iterdir()) == ["step_000006.png", "step_000012.png"]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, 13))
    assert all({"loss", "t", "gaussians", "it_s", "psi_loss"} <= set(m) for m in metrics)
    assert all(m["psi_loss"] is not None for m in metrics)  # ESD trains psi every step
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["prompt"] == "a head" and saved["method"] == "esd" and saved["steps"] == 12
    assert json.loads((out / "run.json").read_text())["status"] == "finished"

    # A finished run is never overwritten by accident.
    again = esd_gs("generate", "a head", "--prior.model", tiny_model, "--steps", 12, "--out", out, *FAST)
    assert again.returncode == 2 and "already holds a finished run" in again.stderr
    assert (out / "scene.ply").stat().st_size > 0


def test_interrupted_and_resumed_run_matches_uninterrupted(tiny_model, tmp_path):
    common = ["generate", "a head", "--prior.model", tiny_model, "--steps", 16, "--seed", 5, *FAST]
    straight = esd_gs(*common, "--out", tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-2000:]

    run = tmp_path / "interrupted"
    proc = start(*common, "--out", run)
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 6:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    status = json.loads((run / "run.json").read_text())
    if proc.returncode == 0:  # finished before the signal landed: nothing to resume (rare on a fast machine)
        pytest.skip("the run finished before it could be interrupted")
    assert proc.returncode == 130, stderr[-2000:]
    assert status["status"] == "interrupted" and 0 < status["step"] < 16
    assert (run / "scene.ply").exists()  # what exists is exported on interrupt
    assert "esd-gs: interrupted" in stderr

    resumed = esd_gs("generate", "--resume", run)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (run / "scene.ply").read_bytes() == (tmp_path / "straight" / "scene.ply").read_bytes()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines][-1] == 16


def test_sigterm_saves_and_exits_non_zero(tiny_model, tmp_path):
    run = tmp_path / "term"
    proc = start("generate", "a head", "--prior.model", tiny_model, "--steps", 400, "--out", run, *FAST)
    deadline = time.time() + 300
    while time.time() < deadline and not (run / "metrics.jsonl").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    assert read_ply(run / "scene.ply").num_gaussians > 0
    assert (run / "checkpoint" / "meta.json").exists()
    # The unfinished run is protected too: a new generate there asks for --resume or --overwrite.
    again = esd_gs("generate", "a head", "--prior.model", tiny_model, "--out", run)
    assert again.returncode == 2 and "--resume" in again.stderr


@pytest.mark.parametrize(
    "args, expected",
    [
        (["generate", ""], "prompt is empty"),
        (["generate", "x", "--lambda-entropy", "1.5"], "--lambda-entropy"),
        (["generate", "x", "--steps", "-1"], "--steps"),
        (["generate", "x", "--method", "dds"], "--method"),
        (["generate", "x", "--densify.grow-ratio", "0"], "--densify.grow-ratio must be > 0"),
        (["generate", "x", "--prior.model", "/no/such/model"], "from /no/such/model: no such folder"),
        (["generate", "x", "--config", "configs/nope.yaml"], "does not exist"),
        (["generate", "x", "--out", "/proc/esd-gs-cannot-write-here"], "cannot create output directory"),
        (["generate", "--resume", "/tmp"], "not an esd-gs run directory"),
    ],
)
def test_bad_generate_input_gives_one_line_and_exit_2(args, expected):
    result = esd_gs(*args)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and "torchvision" not in line]
    assert len(lines) == 1 and lines[0].startswith("esd-gs: error:") and expected in lines[0], result.stderr


def test_presets_load_and_flags_override():
    from esd_gs.cli.main import parse_args

    for name in ("esd", "vsd", "sds", "preview"):
        config = parse_args(["generate", "x", "--config", str(ROOT / "configs" / f"{name}.yaml")])
        config.validate()
    sds = parse_args(["generate", "x", "--config", str(ROOT / "configs" / "sds.yaml")])
    assert (sds.distill.method, sds.distill.guidance_scale, sds.densify.grow_ratio) == (
        "sds",
        100.0,
        2.0,
    )  # the same relative growth for every method
    # The preset sets vsd with lambda 0 and 2500 steps; flags on the command line win, the rest stays.
    mixed = parse_args(
        ["generate", "x", "--config", str(ROOT / "configs" / "vsd.yaml"), "--method", "esd", "--steps", "7"]
    )
    assert (mixed.distill.method, mixed.steps, mixed.distill.lambda_entropy, mixed.resolution_start) == (
        "esd",
        7,
        0.0,
        256,
    )
    plain = parse_args(["generate", "x"])
    assert (plain.distill.method, plain.distill.lambda_entropy, plain.steps) == ("esd", 0.5, 2500)


def test_nan_steps_are_skipped_counted_and_stop_when_persistent(tiny_model, tmp_path, monkeypatch):
    import torch

    from esd_gs.cli.main import parse_args
    from esd_gs.pipeline.build import build_trainer
    from esd_gs.training.trainer import TrainingError

    config = parse_args(
        ["generate", "a head", "--prior.model", str(tiny_model), "--steps", "10", "--max-bad-steps", "3", *FAST]
    )
    trainer = build_trainer(config, tmp_path, torch.device("cpu"))
    real_step = trainer.distill.step
    poisoned = {3, 5, 6, 7}  # step 3 alone is skipped; 5, 6, 7 in a row stop the run

    def step(images, cameras, progress, generator=None):
        out = real_step(images, cameras, progress, generator)
        if trainer.step in poisoned:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(trainer.distill, "step", step)
    before = {k: v.detach().clone() for k, v in trainer.scene.params.items()}
    trainer.train_step(), trainer.train_step(), trainer.train_step()
    row = trainer.train_step()  # step index 3: NaN
    assert row["loss"] is None and row["skipped"] == 1
    assert all(torch.isfinite(v).all() for v in trainer.scene.params.values())
    assert any(not torch.equal(before[k], v) for k, v in trainer.scene.params.items())
    trainer.train_step()  # index 4: fine again, the run of bad steps resets
    assert trainer.bad_in_a_row == 0
    trainer.train_step(), trainer.train_step()
    with pytest.raises(TrainingError, match="NaN/Inf for 3 steps in a row"):
        trainer.train_step()
    assert trainer.skipped == 4


def test_preset_synthetic_brings_its_own_defaults_and_flags_still_win():
    from esd_gs.cli.main import parse_args
    from esd_gs.configs.presets import PRESETS

    config = parse_args(["generate", "a head", "--preset", "synthetic"])
    assert (config.prior.name, config.resolution, config.background, config.psi.name) == (
        "synthetic",
        32,
        "white",
        "residual",
    )
    assert (config.psi.train_steps_per_iter, config.timesteps.name) == (4, "dreamtime")  # the learned psi's best
    assert config.distill.lambda_entropy == 1.0 and config.prior.p_front == 0.5
    assert config == replace(PRESETS["synthetic"].config, prompt="a head")
    tweaked = parse_args(["generate", "a head", "--preset=synthetic", "--steps", "5", "psi:residual"])
    assert (tweaked.steps, tweaked.psi.name, tweaked.resolution) == (5, "residual", 32)
    assert (tweaked.psi.lr, tweaked.psi.loss_weighting) == (1e-3, "x0")  # the synthetic prior's learned psi


def test_default_generate_is_the_esd_preset():
    from dataclasses import replace

    from esd_gs.cli.main import parse_args

    plain = parse_args(["generate", "x"])
    preset = parse_args(["generate", "x", "--config", str(ROOT / "configs" / "esd.yaml")])
    assert replace(preset, config=None) == plain


def _cheap_outputs(config):
    from dataclasses import replace

    return replace(
        config,
        output=replace(config.output, preview_every=0.0, checkpoint_every=0.0, turntable_views=4, turntable_size=32),
    )


@pytest.mark.parametrize("encoder", ["vae", "linear"])
def test_default_preset_feeds_the_unet_its_native_latent_size_and_trains_the_lora(tiny_model, tmp_path, encoder):
    """The default preset renders at 256 then 512 px; the tiny UNet's native size is 64 px (8x8 latents), as SD
    2.1-base's is 512 px (64x64): every UNet pass must see the native size, and psi's LoRA must move."""
    import torch

    from esd_gs.cli.main import parse_args
    from esd_gs.pipeline.build import build_trainer

    config = parse_args(
        [
            "generate",
            "a head",
            "--prior.model",
            str(tiny_model),
            "--steps",
            "4",
            "--prior.encoder",
            encoder,
            "--init.num-points",
            "300",
        ]
    )
    assert (config.resolution_start, config.resolution) == (256, 512)
    trainer = build_trainer(_cheap_outputs(config), tmp_path, torch.device("cpu"))
    seen = []
    trainer.prior.unet.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape[-2:])))
    sizes = [trainer.train_step()["resolution"] for _ in range(4)]
    assert sizes == ([256, 256, 512, 512] if encoder == "vae" else [32, 32, 64, 64])
    assert seen and set(seen) == {(8, 8)}
    lora_b = [p for name, p in trainer.prior.unet.named_parameters() if "lora_B" in name]
    assert lora_b and all(float(p.detach().abs().max()) > 0 for p in lora_b)


def test_resume_on_another_device_type_reseeds_the_noise_with_a_notice(tiny_model, tmp_path, capsys):
    """A checkpoint written on CUDA holds a 16-byte CUDA generator state; on CPU it must resume, not crash."""
    import torch

    from esd_gs.cli.main import parse_args
    from esd_gs.pipeline.build import build_trainer
    from esd_gs.training.checkpoint import load_checkpoint, save_checkpoint

    config = _cheap_outputs(parse_args(["generate", "a head", "--prior.model", str(tiny_model), "--steps", "6", *FAST]))
    trainer = build_trainer(config, tmp_path, torch.device("cpu"))
    trainer.train_step(), trainer.train_step()
    trainer.save()
    tensors, meta = load_checkpoint(tmp_path / "checkpoint")
    assert meta["device"] == "cpu"
    tensors["rng.noise"] = torch.arange(16, dtype=torch.uint8)  # what a CUDA generator's state looks like
    meta["device"] = "cuda"
    save_checkpoint(tmp_path / "checkpoint", tensors, meta)

    resumed = build_trainer(config, tmp_path, torch.device("cpu"))
    resumed.restore()
    assert "checkpointed on cuda and resumes on cpu" in " ".join(capsys.readouterr().err.split())
    assert resumed.step == 2 and torch.equal(resumed.scene.params["means"], trainer.scene.params["means"])
    row = resumed.train_step()
    assert row["step"] == 3 and row["loss"] is not None


def test_the_synthetic_prior_shows_the_object_the_prompt_names(tmp_path):
    """Issue 30: "a plush dragon toy" on the synthetic prior made the head, silently. Now the prompt picks the object:
    "a bald head" is the head of "a head" (byte-identical scene), "a red car" the car (another scene), and a prompt
    naming none is refused in one line before any work."""
    small = ["--preset", "synthetic", "--steps", "3", "--batch-size", "2", "--prior.num-images", "8"]
    small += ["--init.num-points", "200", "--output.turntable-views", "2", "--output.turntable-size", "16"]
    small += ["--output.preview-every", "0", "--output.checkpoint-every", "0", "--output.video-formats", "gif"]
    scenes = {}
    for prompt in ("a head", "a bald head", "a red car"):
        done = esd_gs("generate", prompt, *small, "--out", tmp_path / prompt)
        assert done.returncode == 0, done.stderr[-2000:]
        scenes[prompt] = (tmp_path / prompt / "scene.ply").read_bytes()
    assert scenes["a bald head"] == scenes["a head"] != scenes["a red car"]
    refused = esd_gs("generate", "a plush dragon toy", *small, "--out", tmp_path / "dragon")
    lines = [line for line in refused.stderr.splitlines() if line.strip() and "torchvision" not in line]
    assert refused.returncode == 2 and len(lines) == 1, refused.stderr
    assert "names none: name one of head, car, house, mug, chair, penguin, cat, bus, radio" in lines[0]
    assert not (tmp_path / "dragon").exists()
