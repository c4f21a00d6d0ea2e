"""The fitted synthetic UNet prior (prior:synthetic-unet): its fit learns the prior's images and is cached and
loaded through from_pretrained, and the paper's LoRA psi (shared and separate) trains on it as on Stable Diffusion."""

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from small_runs import resumed_and_straight, small_synthetic_config

import esd_gs.priors.synthetic_unet as synthetic_unet
from esd_gs.cameras import OrbitSampler
from esd_gs.estimators import CameraLoRAEstimator, LoRAPsiConfig
from esd_gs.priors import SyntheticUNetPrior
from esd_gs.priors.synthetic_unet import SyntheticUNetConfig, fit_errors

ROOT = Path(__file__).resolve().parents[1]
TINY_FIT = {"widths": (8, 16), "steps": 60, "batch": 16, "lr": 3e-3}


def tiny_config(cache: Path, **fit):
    """The synthetic-unet preset's small run with its LoRA psi (lr 1e-3) and a tiny fit cached in ``cache``."""
    config = small_synthetic_config(
        3, psi={"name": "lora"}, preset="synthetic-unet", prior={"cache": cache, **TINY_FIT, **fit}, resolution=16
    )
    assert isinstance(config.prior, SyntheticUNetConfig) and config.prior.images.num_images == 16
    assert isinstance(config.psi, LoRAPsiConfig) and config.psi.lr == 1e-3
    return config


def build_prior(config, device):
    return config.prior.build(device, config.run_context)


@pytest.fixture(scope="module")
def fitted_config(tmp_path_factory):
    config = tiny_config(tmp_path_factory.mktemp("unet-cache"))
    build_prior(config, torch.device("cpu"))  # fits once for the module
    return config


def test_the_fit_learns_the_images_and_is_cached_and_reloaded(fitted_config, monkeypatch):
    import json

    (folder,) = [p for p in fitted_config.prior.cache.iterdir() if not p.name.startswith(".")]
    assert (folder / "unet" / "config.json").is_file()
    losses = json.loads((folder / "prompts.json").read_text())["losses"]
    assert len(losses) == 60 and sum(losses[-10:]) < 0.8 * sum(losses[:10])  # the DDPM loss fell
    monkeypatch.setattr(synthetic_unet, "fit_unet", lambda *a, **k: pytest.fail("fitted again instead of cached"))
    first = build_prior(fitted_config, torch.device("cpu"))
    second = SyntheticUNetPrior.from_pretrained(folder)
    assert isinstance(first, SyntheticUNetPrior)
    x_t, t = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([10, 500, 990])
    text = first.text_embeddings("a head").plain.expand(3, -1, -1)
    torch.testing.assert_close(first.eps(x_t, t, text, text[:1], 1.0), second.eps(x_t, t, text, text[:1], 1.0))
    oracle = fitted_config.prior.images.build(torch.device("cpu"), fitted_config.run_context)
    monkeypatch.undo()  # fitting allowed again: a one-step fit is the untrained baseline
    untrained = build_prior(tiny_config(fitted_config.prior.cache, steps=1), torch.device("cpu"))
    fitted_err, untrained_err = (fit_errors(p, oracle, (300, 700), count=16) for p in (first, untrained))
    assert all(fitted_err[t] < 0.8 * untrained_err[t] for t in (300, 700)), (fitted_err, untrained_err)


def test_guidance_and_bad_prompts(fitted_config):
    prior = build_prior(fitted_config, torch.device("cpu"))
    text = prior.text_embeddings("a head")
    assert text.views is None and torch.equal(text.negative, torch.zeros_like(text.plain))
    x_t, t = torch.randn(2, 3, 16, 16), torch.tensor([200, 800])
    cond, uncond = (prior.eps(x_t, t, e.expand(2, -1, -1), text.negative, 1.0) for e in (text.plain, text.negative))
    guided = prior.eps(x_t, t, text.plain.expand(2, -1, -1), text.negative, 3.0)
    torch.testing.assert_close(guided, uncond + 3.0 * (cond - uncond), atol=1e-5, rtol=1e-4)
    from esd_gs.errors import UserError

    with pytest.raises(UserError, match="knows the prompts"):
        prior.text_embeddings("a dragon")


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "separate"])
def test_the_lora_psi_trains_on_the_fitted_unet_and_leaves_phi_alone(fitted_config, shared):
    prior = build_prior(fitted_config, torch.device("cpu"))
    torch.manual_seed(0)
    config = replace(fitted_config.psi, shared_unet=shared, lr=1e-2)
    psi = config.build(prior)
    assert isinstance(psi, CameraLoRAEstimator) and (psi.unet is prior.unet) == shared
    text = prior.text_embeddings("a head")
    gen = torch.Generator().manual_seed(1)
    x_t, t = torch.randn(2, 3, 16, 16, generator=gen), torch.tensor([300, 700])
    phi_before = prior.eps(x_t, t, text.plain.expand(2, -1, -1), text.negative, 1.0)
    lora_before = {n: p.detach().clone() for n, p in psi.unet.named_parameters() if "lora_B" in n}
    camera_before = psi.camera_embedding.linear_2.weight.detach().clone()
    latents = torch.rand(2, 3, 16, 16, generator=gen) * 2 - 1
    cams = OrbitSampler().sample(2, generator=gen).embedding()
    for _ in range(6):
        psi.train_step(latents, text.plain, cams, gen)
    # The prompt is one token ([1, 1, D]): cross-attention's softmax over one key is 1 whatever q and k are, so their
    # LoRAs get no gradient (exactly 0 on some CPUs, rounding noise on others). Every other LoRA must have moved.
    assert text.plain.shape[1] == 1
    blind = {n for n in lora_before if ".attn2.to_q." in n or ".attn2.to_k." in n}
    assert blind and len(blind) < len(lora_before)
    moved = {n for n, p in psi.unet.named_parameters() if n in lora_before and not torch.equal(p, lora_before[n])}
    assert set(lora_before) - blind <= moved, sorted(set(lora_before) - blind - moved)
    assert not torch.equal(psi.camera_embedding.linear_2.weight, camera_before)  # the camera MLP learned too
    with_camera, null = psi.eps_camera_and_null(x_t, t, text.plain, cams)
    assert (with_camera - null).abs().max() > 1e-6  # the camera changes psi's prediction
    phi_after = prior.eps(x_t, t, text.plain.expand(2, -1, -1), text.negative, 1.0)
    torch.testing.assert_close(phi_after, phi_before, atol=1e-6, rtol=0)  # phi is untouched by psi's training


def test_generate_with_the_synthetic_unet_and_its_lora_psi(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "esd_gs", "generate", "a head", "--preset", "synthetic-unet", "--steps", "4",
         "--resolution", "16", "--init.num-points", "200", "--output.turntable-views", "4",
         "--output.turntable-size", "16", "--output.video-formats", "gif", "--out", str(tmp_path / "run"),
         "--prior.images.num-images", "16", "--prior.steps", "5", "--prior.widths", "8", "16",
         "--prior.cache", str(tmp_path / "cache"), "psi:lora", "--psi.no-shared-unet"],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "scene.ply").is_file() and "fitting a UNet" in result.stdout + result.stderr
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "name: synthetic-unet" in saved and "name: lora" in saved and "shared_unet: false" in saved
    bad = subprocess.run(
        [sys.executable, "-m", "esd_gs", "generate", "a head", "--preset", "synthetic-unet", "--prior.widths", "8",
         "--out", str(tmp_path / "bad")],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2 and "--prior.widths needs 2 or more" in bad.stderr.strip().splitlines()[-1]


def test_the_janus_benchmark_runs_on_the_fitted_unet_and_scores_against_the_exact_prior(
    fitted_config, tmp_path, monkeypatch
):
    """bench janus --prior synthetic-unet, through its Python entry: one phi for every run, whose shared-UNet LoRA
    psi is removed after each run (phi predicts as before the benchmark), and the results name the prior."""
    import json

    import esd_gs.bench.janus as janus
    from esd_gs.bench.janus import BenchRun, bench_base_config, run_janus_benchmark

    base = bench_base_config(steps=4, prior="synthetic-unet")
    base = replace(
        base,
        resolution=16,
        batch_size=2,
        init=replace(base.init, num_points=200),
        prior=replace(fitted_config.prior, images=replace(base.prior.images, num_images=16)),
    )
    assert isinstance(base.psi, LoRAPsiConfig)  # the fitted UNet's learned psi
    phi = build_prior(base, torch.device("cpu"))
    monkeypatch.setattr(janus.SyntheticUNetPrior, "from_oracle", lambda *args: phi)  # the benchmark's phi, seen here
    x_t, t = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3)), torch.tensor([250, 750])
    text = phi.text_embeddings("a head").plain.expand(2, -1, -1)
    before = phi.eps(x_t, t, text, text[:1], 1.0)
    runs = [BenchRun("esd", 1.0, "learned"), BenchRun("sds")]
    out = run_janus_benchmark(runs, 1, base, tmp_path / "bench", torch.device("cpu"))
    data = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in data["runs"]] == ["esd", "sds"]
    assert all(r["prior"] == "synthetic-unet" for r in data["runs"])
    assert "the fitted synthetic UNet" in (out / "results.md").read_text()
    assert not getattr(phi.unet, "peft_config", None) and phi.shared_unet_roles is None  # psi's LoRA removed
    torch.testing.assert_close(phi.eps(x_t, t, text, text[:1], 1.0), before, atol=1e-6, rtol=0)


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "separate"])
def test_a_run_on_the_fitted_unet_resumes_exactly_from_a_checkpoint(fitted_config, tmp_path, shared):
    """Checkpoint mid-run, restore into a fresh trainer (its own phi from the cache), finish: the same scene and the
    same LoRA as a straight run, as with Stable Diffusion."""
    from esd_gs.pipeline.build import build_trainer

    config = replace(fitted_config, steps=6, seed=3, psi=replace(fitted_config.psi, shared_unet=shared))
    device = torch.device("cpu")

    def trainer(folder):
        return build_trainer(config, tmp_path / folder, device, prior=build_prior(config, device))

    straight, second = resumed_and_straight(trainer, steps=6, stop=4)
    for key, value in straight.psi.state_dict().items():
        assert torch.equal(value, second.psi.state_dict()[key]), key


def test_bench_unet_steps_sets_the_fit_and_its_cache_key():
    """bench janus --unet-steps N: the fitted UNet's optimiser steps, a fit of its own (another cache key); the
    default is generate's."""
    from esd_gs.bench.janus import bench_base_config

    default, longer = bench_base_config(prior="synthetic-unet"), bench_base_config(prior="synthetic-unet", unet_steps=7)
    assert default.prior.steps == synthetic_unet.SyntheticUNetConfig().steps and longer.prior.steps == 7
    from esd_gs.priors.synthetic import SyntheticPrior

    oracle = SyntheticPrior(torch.rand(4, 3, 8, 8) * 2 - 1, ["a head"], torch.zeros(4), torch.device("cpu"))
    assert synthetic_unet.cache_key(oracle, 8, default.prior) != synthetic_unet.cache_key(oracle, 8, longer.prior)
