"""The SDS / VSD / ESD update (eq. 1, 2, 9), the target-trick loss, w(t), timestep schedules, view prompts."""

import pytest
import torch

from esd_gs.distillation.rule import distillation_bracket, distillation_loss, weight_of_t
from esd_gs.distillation.timesteps import TimestepSchedule, dreamtime_timestep, dreamtime_weights
from esd_gs.priors.prompts import DIRECTIONS, view_direction_index, view_prompts


def sd21_alphas_cumprod():
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


def randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_sds_bracket_is_eps_phi_minus_injected_noise():
    eps_phi, noise = randn(2, 4, 8, 8, seed=0), randn(2, 4, 8, 8, seed=1)
    assert torch.equal(distillation_bracket("sds", eps_phi, noise), eps_phi - noise)


def test_esd_bracket_is_the_lambda_mix_of_the_two_psi_terms():
    eps_phi, noise, cam, null = (randn(2, 4, 8, 8, seed=s) for s in range(4))
    for lam in (0.0, 0.25, 0.5, 1.0):
        got = distillation_bracket("esd", eps_phi, noise, cam, null, lam)
        assert torch.allclose(got, eps_phi - lam * null - (1 - lam) * cam, atol=1e-6)


def test_esd_with_lambda_zero_is_vsd():
    eps_phi, noise, cam, null = (randn(2, 4, 8, 8, seed=s) for s in range(4))
    vsd = distillation_bracket("vsd", eps_phi, noise, cam, None, 0.9)  # VSD ignores lambda
    assert torch.equal(vsd, eps_phi - cam)
    assert torch.equal(distillation_bracket("esd", eps_phi, noise, cam, null, 0.0), vsd)


def test_bracket_rejects_missing_terms_and_bad_lambda():
    eps_phi, noise = randn(1, 4, 2, 2, seed=0), randn(1, 4, 2, 2, seed=1)
    with pytest.raises(ValueError):
        distillation_bracket("esd", eps_phi, noise, eps_phi, None, 0.5)
    with pytest.raises(ValueError):
        distillation_bracket("vsd", eps_phi, noise, None, None)
    with pytest.raises(ValueError):
        distillation_bracket("esd", eps_phi, noise, eps_phi, eps_phi, 1.5)


def test_target_trick_gradient_is_exactly_grad_over_batch():
    latents = randn(3, 4, 8, 8, seed=0).requires_grad_(True)
    grad = randn(3, 4, 8, 8, seed=1)
    grad[0, 0, 0, 0] = float("nan")
    loss, cleaned = distillation_loss(latents, grad)
    loss.backward()
    assert cleaned[0, 0, 0, 0] == 0  # nan_to_num
    assert torch.allclose(latents.grad, cleaned / 3, atol=1e-7)
    assert torch.allclose(loss, 0.5 * cleaned.square().sum() / 3)
    _, clipped = distillation_loss(latents.detach(), grad, grad_clip=0.5)
    assert clipped.abs().max() <= 0.5


def test_weight_is_one_minus_alphabar():
    abar = sd21_alphas_cumprod()
    t = torch.tensor([0, 500, 999])
    assert torch.allclose(weight_of_t(abar, t), 1 - abar[t])
    assert torch.equal(weight_of_t(abar, t, "uniform"), torch.ones(3))


def test_uniform_schedule_anneals_at_its_fraction_whatever_the_step_count():
    abar = sd21_alphas_cumprod()
    schedule = TimestepSchedule("uniform", t_min=0.02, t_max=0.98, t_max_end=0.5, anneal_at=0.2)
    gen = torch.Generator().manual_seed(0)
    for steps in (100, 2500):
        early = torch.cat([schedule.sample(i / steps, 64, abar, gen) for i in range(0, int(0.2 * steps))])
        late = torch.cat(
            [schedule.sample(i / steps, 64, abar, gen) for i in range(int(0.2 * steps), steps, max(1, steps // 100))]
        )
        assert early.min() >= 20 and early.max() < 980 and early.max() > 900
        assert late.min() >= 20 and late.max() < 500


def test_linear_schedule_bound_moves_linearly():
    schedule = TimestepSchedule("linear", t_max=0.98, t_max_end=0.5)
    assert schedule.max_fraction(0.0) == pytest.approx(0.98)
    assert schedule.max_fraction(0.5) == pytest.approx(0.74)
    assert schedule.max_fraction(1.0) == pytest.approx(0.5)


def test_dreamtime_is_monotone_and_follows_its_weights():
    abar = sd21_alphas_cumprod()
    schedule = TimestepSchedule("dreamtime")
    weights = dreamtime_weights(abar, schedule)
    assert torch.isclose(weights.sum(), torch.tensor(1.0, dtype=torch.float64))
    ts = [dreamtime_timestep(p, abar, schedule) for p in torch.linspace(0, 1, 101).tolist()]
    assert all(a >= b for a, b in zip(ts, ts[1:]))
    assert ts[0] >= 950 and ts[-1] <= 40
    # Half of the weight lies above t(0.5).
    mid = dreamtime_timestep(0.5, abar, schedule)
    assert abs(float(weights[mid:].sum()) - 0.5) < 0.01
    # The share of the run spent in [500, 800] is the weight mass there.
    inside = sum(500 <= t <= 800 for t in ts) / len(ts)
    assert abs(inside - float(weights[500:801].sum())) < 0.02
    sampled = schedule.sample(0.3, 4, abar)
    assert torch.equal(sampled, torch.full((4,), dreamtime_timestep(0.3, abar, schedule)))


def test_bad_schedule_values_are_refused():
    with pytest.raises(ValueError):
        TimestepSchedule(t_min=0.9, t_max=0.5)


def test_view_directions():
    az = torch.tensor([0.0, 29.0, 45.0, 90.0, 151.0, 180.0, -179.0, -90.0, 10.0])
    el = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 30.0, 75.0])
    names = [DIRECTIONS[i] for i in view_direction_index(az, el)]
    assert names == ["front", "front", "side", "side", "back", "back", "back", "side", "overhead"]
    assert view_prompts("a head") == [
        "a head, front view",
        "a head, side view",
        "a head, back view",
        "a head, overhead view",
    ]


# ---------------------------------------------------------------------------------------------- method names
def wide_help(command: str, monkeypatch, capsys) -> str:
    from esd_gs.cli.main import main

    monkeypatch.setenv("COLUMNS", "300")
    with pytest.raises(SystemExit):
        main([*command.split(), "--help"])
    return capsys.readouterr().out


def test_method_names_are_defined_once_and_everything_reads_them(monkeypatch, capsys):
    """``METHODS`` is the one list: the type states the same names, and the config, the batch jobs and the benchmark
    accept exactly those; the commands' help lists them."""
    import typing

    from esd_gs.batch import jobs
    from esd_gs.cli.bench_cmd import BenchArgs, bench_configs
    from esd_gs.distillation import METHODS, DistillationConfig, Method, entropy_weight
    from esd_gs.errors import ConfigError, UserError

    assert typing.get_args(Method) == METHODS == ("sds", "vsd", "esd")
    assert jobs.METHODS is METHODS
    for method in METHODS:
        assert DistillationConfig(method=method).method == method
        assert 0.0 <= entropy_weight(method, 0.5) <= 1.0
    assert [run.method for run in bench_configs(BenchArgs("janus"))][:2] == ["sds", "vsd"]
    assert {run.method for run in bench_configs(BenchArgs("janus"))} == set(METHODS)
    with pytest.raises(ConfigError, match="unknown method 'dds': use sds, vsd or esd"):
        DistillationConfig(method="dds")
    with pytest.raises(ValueError, match="unknown method"):
        entropy_weight("dds", 0.5)
    with pytest.raises(UserError, match="unknown method 'dds' in --methods: use sds, vsd, esd"):
        bench_configs(BenchArgs("janus", methods=("dds",)))
    assert "Methods to compare (space- or comma-separated): sds, vsd, esd." in wide_help("bench", monkeypatch, capsys)
    assert "(space- or comma-separated: sds, vsd, esd)" in wide_help("batch", monkeypatch, capsys)
