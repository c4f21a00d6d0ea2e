"""ESD's objective with exact densities (``monitors.objective``): Theorem 1's KL terms on cases with closed forms."""

import math

import pytest
import torch

from esd_gs.cameras import OrbitSampler
from esd_gs.diffusion import mixture_log_kernel, sd_alphas_cumprod
from esd_gs.monitors.objective import kl_terms, scene_objective
from esd_gs.reference_objects import REFERENCE_OBJECTS
from esd_gs.render.views import render_images


def test_log_kernel_is_the_mixture_log_density_and_leaves_one_out():
    gen = torch.Generator().manual_seed(0)
    data, x = torch.randn(5, 2, 3, generator=gen), torch.randn(4, 2, 3, generator=gen)
    alpha, sigma = torch.full((4,), 0.8), torch.full((4,), 0.6)
    dist2 = (x[:, None] - 0.8 * data[None]).flatten(2).square().sum(-1)  # [4, 5]
    expected = torch.log(torch.exp(-dist2 / (2 * 0.36)).mean(1))
    assert torch.allclose(mixture_log_kernel(x, data, alpha, sigma).float(), expected, atol=1e-5)
    left_out = torch.tensor([0, 3, 4, 1])
    keep = torch.ones(4, 5, dtype=torch.bool)
    keep[torch.arange(4), left_out] = False
    expected_loo = torch.log((torch.exp(-dist2 / (2 * 0.36)) * keep).sum(1) / 4)
    assert torch.allclose(mixture_log_kernel(x, data, alpha, sigma, exclude=left_out).float(), expected_loo, atol=1e-5)


def test_two_gaussians_give_the_closed_form_kl():
    """q = N(alpha a, sigma^2 I), p = N(alpha b, sigma^2 I): every term is alpha^2 ||a - b||^2 / (2 sigma^2), exactly
    (the antithetic noise cancels the Monte Carlo term, linear in eps)."""
    gen = torch.Generator().manual_seed(1)
    a, b = torch.rand(1, 3, 4, 4, generator=gen), torch.rand(1, 3, 4, 4, generator=gen)
    alpha, sigma = 0.7, 0.5
    exact = alpha**2 * float((a - b).double().square().sum()) / (2 * sigma**2)
    est = kl_terms(torch.cat([a, a]), b, alpha, sigma, gen, draws=3)
    for value in (est.marginal_upper, est.marginal_lower, est.conditional):
        assert value == pytest.approx(exact, rel=1e-9)


def test_the_same_distribution_has_zero_marginal_kl():
    gen = torch.Generator().manual_seed(2)
    images = torch.rand(6, 3, 4, 4, generator=gen) * 2 - 1
    est = kl_terms(images, images, 0.9, 0.4, gen)
    assert est.marginal_upper == pytest.approx(0.0, abs=1e-9)
    assert est.conditional > 0.5  # each view alone is one image of six: KL(q(x|c) || p) >= 0, here ~log 6
    assert est.marginal_lower < -1.0  # the leave-one-out bank has no image near the sample: far below


def test_far_apart_images_reduce_to_the_kl_of_the_view_weights():
    """The Janus argument in miniature: two well-separated images, a front (a) and a back (b). The prior shows the
    front 3 times in 4; an object shows each half the time. Then KL(q || p) = 1/2 log(2/3) + 1/2 log 2 (the
    view weights' KL) and the per-view term is 1/2 log(4/3) + 1/2 log 4 (each view's image against the prior)."""
    gen = torch.Generator().manual_seed(3)
    a, b = torch.full((1, 3, 4, 4), -1.0), torch.full((1, 3, 4, 4), 1.0)
    est = kl_terms(torch.cat([a, a, b, b]), torch.cat([a, a, a, b]), 0.9, 0.05, gen, draws=2)
    assert est.marginal_upper == pytest.approx(0.5 * math.log(4 / 3), abs=1e-6)
    assert est.marginal_lower == pytest.approx(0.5 * math.log((1 / 3) / (3 / 4)) + 0.5 * math.log(4 / 3), abs=1e-6)
    assert est.conditional == pytest.approx(0.5 * math.log(4 / 3) + 0.5 * math.log(4), abs=1e-6)
    # A one-faced object beats a two-faced one (all front) when the prior shows the back as often as the front.
    even = torch.cat([a, b])
    assert kl_terms(torch.cat([a, b]), even, 0.9, 0.05, gen).marginal_upper == pytest.approx(0.0, abs=1e-6)
    assert kl_terms(torch.cat([a, a]), even, 0.9, 0.05, gen).marginal_upper == pytest.approx(math.log(2), abs=1e-6)


def test_scene_objective_is_zero_when_the_prior_is_the_scenes_own_renders():
    """The prior's images are the scene's renders at the very cameras the objective draws: the marginal term
    vanishes at every t, the per-view one does not, and J(lambda) mixes them as Theorem 1 says."""
    scene = REFERENCE_OBJECTS["mug"](num_gaussians=300)
    sampler, size, n = OrbitSampler(), 12, 16
    cameras = sampler.sample(n, generator=torch.Generator().manual_seed(7))
    prior_images = render_images(scene, cameras, size, background=1.0).clamp(0, 1) * 2 - 1
    abar = sd_alphas_cumprod()
    curve = scene_objective(scene, prior_images, abar, sampler, size, timesteps=(100, 600), num_renders=n, seed=7)
    for term in curve.terms:
        assert term.marginal_upper == pytest.approx(0.0, abs=1e-6)
        assert term.conditional > 0.0
    weights = [float(1 - abar[t]) for t in (100, 600)]
    assert curve.weights == pytest.approx(weights)
    j0 = sum(w * term.conditional for w, term in zip(weights, curve.terms, strict=True)) / 2
    assert curve.value(0.0) == pytest.approx(j0)
    assert curve.value(0.25) == pytest.approx(0.75 * j0)
    assert curve.to_dict()["J_lambda1"][1] == pytest.approx(0.0, abs=1e-6)


def test_the_bracket_holds_in_expectation_over_banks():
    """Banks drawn from q = 1/4 a + 3/4 b (far apart) against p = 1/2 a + 1/2 b: over many banks the mean upper
    estimate is above KL(q || p) = 1/4 log(1/2) + 3/4 log(3/2) and the mean lower one below it; the upper one
    approaches it as the bank grows."""
    gen = torch.Generator().manual_seed(8)
    a, b = torch.full((1, 3, 2, 2), -1.0), torch.full((1, 3, 2, 2), 1.0)
    exact = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    means = {}
    for size in (8, 64):
        uppers, lowers = [], []
        for _ in range(200):
            pick = torch.rand(size, generator=gen) < 0.25
            bank = torch.where(pick[:, None, None, None], a, b)
            est = kl_terms(bank, torch.cat([a, b]), 0.9, 0.05, gen)
            uppers.append(est.marginal_upper)
            lowers.append(max(est.marginal_lower, -50.0))  # a lone image has no neighbour: a huge negative value
        means[size] = (sum(uppers) / 200, sum(lowers) / 200)
        assert means[size][1] < exact < means[size][0]
    assert means[64][0] - exact < means[8][0] - exact < 0.2
    assert means[64][0] - exact < 0.03


def test_leave_one_out_uses_each_sample_s_own_render_across_batches():
    gen = torch.Generator().manual_seed(9)
    renders, prior_images = torch.randn(6, 3, 4, 4, generator=gen), torch.randn(5, 3, 4, 4, generator=gen)
    whole = kl_terms(renders, prior_images, 0.8, 0.5, torch.Generator().manual_seed(1), batch=256)
    pieces = kl_terms(renders, prior_images, 0.8, 0.5, torch.Generator().manual_seed(1), batch=2)
    for key in ("marginal_upper", "marginal_lower", "conditional"):
        assert getattr(pieces, key) == pytest.approx(getattr(whole, key), rel=1e-9), key
