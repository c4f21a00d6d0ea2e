"""Perp-Neg on phi's text guidance (``priors.perp_neg``, ``UNetPrior.eps_perp_neg``, ``--perp-neg``): known answers of
the pure functions, the batched UNet pass against separate passes, the step (phi changes, psi does not), the CLI."""

import math
import os

import pytest
import torch
import yaml
from cli_process import run_cli

from esd_gs.cameras import OrbitSampler, orbit_cameras
from esd_gs.cli.main import main, parse_args
from esd_gs.configs.yaml_io import config_from_dict, dump_yaml_config
from esd_gs.distillation import DistillationConfig, ScoreDistillation, TimestepSchedule
from esd_gs.errors import ConfigError
from esd_gs.estimators import CameraLoRAEstimator, LoRAPsiConfig
from esd_gs.priors import RunContext, StableDiffusionConfig, SyntheticPrior, TextEmbeddings
from esd_gs.priors.perp_neg import (
    PerpNegWeights,
    perp_neg_guidance,
    perpendicular_component,
    shifted_exponential,
    view_conditions,
)
from esd_gs.testing.tiny_sd import build_tiny_stable_diffusion

PROMPT = "a head"
ENV = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="120", OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return build_tiny_stable_diffusion(tmp_path_factory.mktemp("sd") / "tiny", "epsilon", seed=0)


# ------------------------------------------------------------------ pure functions, known answers
def test_perpendicular_component_hand_computed_per_batch_element():
    x = torch.tensor([[3.0, 4.0], [1.0, 2.0], [5.0, -1.0]]).view(3, 1, 1, 2)
    y = torch.tensor([[1.0, 0.0], [2.0, 2.0], [0.0, 0.0]]).view(3, 1, 1, 2)
    # [3, 4] - 3 [1, 0]; [1, 2] - (6 / 8) [2, 2]; a zero y removes nothing.
    expected = torch.tensor([[0.0, 4.0], [-0.5, 0.5], [5.0, -1.0]]).view(3, 1, 1, 2)
    assert torch.allclose(perpendicular_component(x, y), expected)


def test_perpendicular_component_is_orthogonal_and_keeps_the_rest():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(3, 4, 8, 8, generator=gen), torch.randn(3, 4, 8, 8, generator=gen)
    perp = perpendicular_component(x, y)
    assert (perp * y).sum(dim=(1, 2, 3)).abs().max() < 1e-3
    along = x - perp  # what was removed is a multiple of y, per element
    ratio = along.sum(dim=(1, 2, 3)) / y.sum(dim=(1, 2, 3))
    assert torch.allclose(along, ratio.view(-1, 1, 1, 1) * y, atol=1e-5)


def test_shifted_exponential_defaults():
    w = PerpNegWeights()
    value = lambda triple, r: float(shifted_exponential(torch.tensor(r), triple))  # noqa: E731
    assert abs(value(w.f_fs, 1.0)) < 2e-4  # chosen so the front negative vanishes at the front
    assert value(w.f_fs, 0.0) == pytest.approx(1.574)
    assert value(w.f_sf, 0.0) == pytest.approx(1.574)
    assert value(w.f_sb, 0.0) == pytest.approx(0.394)
    assert value(w.f_fsb, 0.0) == pytest.approx(1.967)
    assert value(w.f_sb, 1.0) == pytest.approx(math.exp(-0.5) - 0.606)
    assert value((2.0, 1.0, 3.0), 2.0) == pytest.approx(2.0 * math.exp(-2.0) + 3.0)


# front 1, side 10, back 100, overhead 1000: positives read as the interpolation itself.
VIEWS = torch.tensor([1.0, 10.0, 100.0, 1000.0]).view(4, 1)
E25, E50 = math.exp(-0.25), math.exp(-0.5)


@pytest.mark.parametrize(
    ("azimuth", "elevation", "positive", "negatives", "weights"),
    [
        (0.0, 10.0, 1.0, (1.0, 10.0), (-(4 * E50 - 2.426), -(4 - 2.426))),  # r = 1: the front
        (45.0, 10.0, 5.5, (1.0, 10.0), (-(4 * E25 - 2.426), -(4 * E25 - 2.426))),  # r = 0.5
        (-45.0, 0.0, 5.5, (1.0, 10.0), (-(4 * E25 - 2.426), -(4 * E25 - 2.426))),  # the other side is the same
        (90.0, 0.0, 10.0, (10.0, 1.0), (-(E50 - 0.606), -(E50 + 0.967))),  # back half, r = 1: the side
        (135.0, 30.0, 55.0, (10.0, 1.0), (-(E25 - 0.606), -(E25 + 0.967))),  # r = 0.5
        (225.0, 0.0, 55.0, (10.0, 1.0), (-(E25 - 0.606), -(E25 + 0.967))),  # = -135 after wrapping
        (180.0, 0.0, 100.0, (10.0, 1.0), (-(1 - 0.606), -(1 + 0.967))),  # r = 0: the back
        (45.0, 70.0, 1000.0, (1000.0, 1000.0), (0.0, 0.0)),  # overhead: no negatives
    ],
)
def test_view_conditions_hand_computed(azimuth, elevation, positive, negatives, weights):
    pos, negs, w = view_conditions(VIEWS, torch.tensor([azimuth]), torch.tensor([elevation]))
    assert pos.shape == (1, 1) and negs.shape == (1, 2, 1) and w.shape == (1, 2)
    assert pos.item() == pytest.approx(positive)
    assert negs.flatten().tolist() == pytest.approx(list(negatives))
    assert w.flatten().tolist() == pytest.approx(list(weights), abs=1e-6)


def test_view_conditions_take_the_configured_weights_batched():
    weights = PerpNegWeights(f_sb=(1.0, 0.0, 1.0), f_fsb=(0.0, 0.0, 3.0), f_fs=(2.0, 0.0, 0.0), f_sf=(0.0, 1.0, 5.0))
    _, _, w = view_conditions(VIEWS, torch.tensor([30.0, 120.0]), torch.tensor([0.0, 0.0]), weights)
    assert w.tolist() == [[-2.0, -5.0], [-2.0, -3.0]]


def test_guidance_hand_computed():
    # Differences from eps_u: positive [2, 0]; negatives [1, 1] (perpendicular part [0, 1]) and [0, -3] (all of it).
    eps_u = torch.tensor([1.0, 1.0]).view(1, 1, 1, 2)
    eps_pos = torch.tensor([3.0, 1.0]).view(1, 1, 1, 2)
    eps_negs = torch.tensor([[2.0, 2.0], [1.0, -2.0]]).view(1, 2, 1, 1, 2)
    weights = torch.tensor([[-0.5, -1.0]])
    out = perp_neg_guidance(eps_u, eps_pos, eps_negs, weights, 2.0)
    # 1 + 2 ([2, 0] - 0.5 [0, 1] - 1 [0, -3]) = [1, 1] + 2 [2, 2.5]
    assert torch.allclose(out, torch.tensor([5.0, 6.0]).view(1, 1, 1, 2))


def test_guidance_with_zero_weights_is_plain_cfg():
    gen = torch.Generator().manual_seed(1)
    eps_u, eps_pos = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 4, 8, 8, generator=gen)
    eps_negs = torch.randn(2, 2, 4, 8, 8, generator=gen)
    out = perp_neg_guidance(eps_u, eps_pos, eps_negs, torch.zeros(2, 2), 7.5)
    assert torch.allclose(out, eps_u + 7.5 * (eps_pos - eps_u), atol=1e-6)


def test_weight_triples_are_checked():
    assert DistillationConfig().perp_neg is False
    assert DistillationConfig(perp_neg_f_fs=(1.0, 2.0, 3.0)).perp_neg_weights.f_fs == (1.0, 2.0, 3.0)
    with pytest.raises(ConfigError, match="--perp-neg-f-sb must be three finite numbers"):
        DistillationConfig(perp_neg_f_sb=(1.0, float("nan"), 0.0))


def test_a_prior_without_view_prompts_has_no_perp_neg():
    prior = SyntheticPrior(torch.zeros(4, 3, 8, 8), ["a"], torch.zeros(4), torch.device("cpu"))
    text = prior.text_embeddings("a")
    with pytest.raises(ValueError, match="view-dependent prompts"):
        text.perp_neg(torch.zeros(1), torch.zeros(1))
    x_t = torch.zeros(1, 3, 8, 8)
    with pytest.raises(NotImplementedError, match="SyntheticPrior has no Perp-Neg"):
        prior.eps_perp_neg(
            x_t, torch.tensor([10]), text.plain, text.plain[None].expand(1, 2), torch.zeros(1, 2), text.negative, 7.5
        )


def test_text_embeddings_perp_neg_reads_its_views():
    text = TextEmbeddings(plain=torch.zeros(1, 1), negative=torch.zeros(1, 1), views=VIEWS)
    positive, negatives, weights = text.perp_neg(torch.tensor([45.0, 180.0]), torch.tensor([0.0, 0.0]))
    assert positive.flatten().tolist() == pytest.approx([5.5, 100.0])
    assert negatives.flatten().tolist() == [1.0, 10.0, 10.0, 1.0]
    assert weights.shape == (2, 2)


def test_the_flags_reach_the_config_and_survive_its_yaml(capsys):
    config = parse_args(["generate", PROMPT, "--perp-neg", "--perp-neg-f-sb", "2", "0.25", "-1"])
    assert config.distill.perp_neg and config.distill.perp_neg_f_sb == (2.0, 0.25, -1.0)
    text = dump_yaml_config(config)
    assert "\nperp_neg: true" in text  # a top-level key, as the flag is top-level
    assert config_from_dict(yaml.safe_load(text)) == config
    assert main(["generate", PROMPT, "--perp-neg-f-fs", "1", "inf", "0"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "--perp-neg-f-fs must be three finite numbers" in lines[0]
    assert "got (1.0, inf, 0.0)" in lines[0]


# ------------------------------------------------------------------ phi on a tiny Stable Diffusion
def build_prior(path):
    context = RunContext(PROMPT, 64, OrbitSampler(), "random")  # what Stable Diffusion does not read
    return StableDiffusionConfig(model=str(path)).build(torch.device("cpu"), context)


def test_unet_prior_batched_pass_equals_four_separate_passes(tiny_sd):
    prior = build_prior(tiny_sd)
    text = prior.text_embeddings(PROMPT)
    gen = torch.Generator().manual_seed(2)
    x_t = torch.randn(3, 4, 8, 8, generator=gen)
    t = torch.tensor([50, 400, 900])
    positive, negatives, weights = text.perp_neg(torch.tensor([20.0, 100.0, 170.0]), torch.tensor([5.0, 15.0, 0.0]))
    out = prior.eps_perp_neg(x_t, t, positive, negatives, weights, text.negative, 7.5)

    def single(condition):
        with torch.no_grad():
            return prior.unet(x_t, t, encoder_hidden_states=condition).sample  # epsilon model: the output is eps

    eps_u, eps_pos = single(text.negative.expand(3, -1, -1)), single(positive)
    e_pos = eps_pos - eps_u
    total = e_pos.clone()
    for i in range(2):
        e_i = single(negatives[:, i]) - eps_u
        dot = (e_i * e_pos).sum(dim=(1, 2, 3), keepdim=True) / (e_pos * e_pos).sum(dim=(1, 2, 3), keepdim=True)
        total += weights[:, i].view(-1, 1, 1, 1) * (e_i - dot * e_pos)
    assert torch.allclose(out, eps_u + 7.5 * total, atol=1e-4)  # eps ~ 1; batching rounds at ~1e-6
    assert (out - prior.eps(x_t, t, positive, text.negative, 7.5)).abs().max() > 1e-3  # the negatives count


def test_step_changes_phi_and_leaves_psi_alone(tiny_sd):
    prior = build_prior(tiny_sd)
    text = prior.text_embeddings(PROMPT)
    torch.manual_seed(0)
    psi = CameraLoRAEstimator.create(prior, LoRAPsiConfig())
    gen = torch.Generator().manual_seed(3)
    cameras = orbit_cameras(
        torch.tensor([30.0, 150.0]), torch.tensor([10.0, 20.0]), torch.full((2,), 3.0), torch.full((2,), 0.7)
    )
    images = torch.rand(2, 3, 64, 64, generator=gen)
    calls, phi_calls = [], []
    original, original_phi = psi.eps_camera_and_null, prior.eps_perp_neg

    def recording(*args):
        result = original(*args)
        calls.append([a.clone() if torch.is_tensor(a) else a for a in args] + [r.clone() for r in result])
        return result

    def recording_phi(*args):
        result = original_phi(*args)
        phi_calls.append(result)
        return result

    psi.eps_camera_and_null, prior.eps_perp_neg = recording, recording_phi
    grads = []
    for perp_neg in (False, True):
        config = DistillationConfig(method="esd", lambda_entropy=0.5, guidance_scale=7.5, perp_neg=perp_neg)
        distill = ScoreDistillation(prior, text, config, TimestepSchedule(), psi)
        out = distill.step(images.clone(), cameras, progress=0.2, generator=torch.Generator().manual_seed(4))
        grads.append(out)
    assert len(calls) == 2 and len(phi_calls) == 1  # Perp-Neg only with the flag
    for before, after in zip(*calls):  # psi saw the same x_t, t, text, cameras, noise and answered the same
        assert torch.equal(before, after)
    off, on = grads
    assert (off.grad - on.grad).abs().max() > 1e-4  # phi's term changed
    eps_cam, eps_null = calls[1][-2:]
    weight = (1 - prior.alphas_cumprod[on.timesteps]).view(-1, 1, 1, 1)
    assert torch.allclose(on.grad, weight * (phi_calls[0] - 0.5 * eps_null - 0.5 * eps_cam), atol=1e-5)


# ------------------------------------------------------------------ the command line
def test_generate_with_perp_neg_on_a_tiny_sd(tiny_sd, tmp_path):
    out = tmp_path / "run"
    fast = ["--resolution", "64", "--init.num-points", "300", "--densify.max-gaussians", "600"]
    fast += ["--output.turntable-views", "2", "--output.turntable-size", "32", "--output.preview-every", "0"]
    result = run_cli(
        "generate", PROMPT, "--prior.model", tiny_sd, "--steps", 3, "--out", out, "--perp-neg", *fast, env=ENV
    )
    assert result.returncode == 0, result.stderr[-2000:]
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["perp_neg"] is True and saved["perp_neg_f_fs"] == [4.0, 0.5, -2.426]
    assert yaml.safe_load((out / "run.json").read_text())["status"] == "finished"


def test_perp_neg_on_the_synthetic_prior_is_refused_in_one_line(tmp_path):
    result = run_cli("generate", PROMPT, "--preset", "synthetic", "--perp-neg", "--out", tmp_path / "run", env=ENV)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert lines == [
        "esd-gs: error: --perp-neg needs view-dependent prompts, which prior:synthetic has not (use prior:sd)"
    ]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--prior.no-view-dependent-prompt"], "--perp-neg needs view-dependent prompts: drop --prior.no-view-dep"),
        (["--preset", "synthetic-unet"], "which prior:synthetic-unet has not (use prior:sd)"),
    ],
)
def test_perp_neg_without_view_prompts_is_refused(flags, expected, capsys):
    code = main(["generate", PROMPT, "--perp-neg", *flags])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and expected in lines[0], lines
