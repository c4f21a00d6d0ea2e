"""The psi diagnostic: exact values on constructed cases, and a run that measures without changing its training."""

import json
from dataclasses import replace

import pytest
import torch
from small_runs import small_synthetic_config

from esd_gs.diffusion import mixture_eps
from esd_gs.estimators import ParticleEstimator, ScoreEstimator
from esd_gs.monitors import psi_error
from esd_gs.monitors.psi_error import (
    PsiDiagnostic,
    PsiDiagnosticCallback,
    PsiDiagnosticConfig,
    psi_errors,
    relative_error,
)
from esd_gs.pipeline.build import build_trainer
from esd_gs.priors import SyntheticPrior

TIMESTEPS = (50, 400, 900)


def prior():
    return SyntheticPrior(torch.zeros(2, 3, 8, 8), ["a"], torch.zeros(2), torch.device("cpu"))


class Exact(ScoreEstimator):
    """The right answer by construction: the injected noise with a camera, the bank's mixture score without."""

    trains = False

    def __init__(self, prior, bank):
        self.prior, self.bank = prior, bank

    def eps(self, x_t, timesteps, text, cameras, noise=None):
        if cameras is not None:
            return noise
        return mixture_eps(x_t, self.bank, self.prior.alphas_cumprod, timesteps)

    def checkpoint_state(self):
        return {}, {}

    def load_checkpoint_state(self, tensors, meta):
        pass


class Zero(Exact):
    def eps(self, x_t, timesteps, text, cameras, noise=None):
        return torch.zeros_like(x_t)


def test_relative_error_known_values():
    exact = torch.tensor([3.0, 4.0])
    assert relative_error(exact, exact) == 0.0
    assert relative_error(torch.zeros(2), exact) == 1.0
    assert relative_error(exact * 1.5, exact) == pytest.approx(0.5)


def test_an_exact_psi_has_zero_error_and_a_zero_psi_has_error_one():
    gen = torch.Generator().manual_seed(0)
    p = prior()
    bank = torch.rand(6, 3, 8, 8, generator=gen) * 2 - 1
    latents, cameras = bank[:3], torch.randn(3, 16, generator=gen)
    rows = psi_errors(
        {"exact": Exact(p, bank), "zero": Zero(p, bank)},
        p,
        torch.tensor([0]),
        latents,
        cameras,
        bank,
        TIMESTEPS,
        torch.Generator().manual_seed(1),
    )
    assert [row["t"] for row in rows] == list(TIMESTEPS)
    for row in rows:
        assert row["exact_null"] == 0.0 and row["exact_camera"] == 0.0 and row["exact_entropy"] == 0.0
        assert row["zero_null"] == pytest.approx(1.0) and row["zero_camera"] == pytest.approx(1.0)
        assert row["zero_entropy"] == pytest.approx(1.0)


class Phi(Exact):
    """psi = phi for both terms (Algorithm 1's initialisation)."""

    def eps(self, x_t, timesteps, text, cameras, noise=None):
        return self.prior.eps(x_t, timesteps, text.expand(x_t.shape[0]), text[:1], 1.0)


class ExactNullPhiCamera(Exact):
    def eps(self, x_t, timesteps, text, cameras, noise=None):
        if cameras is None:
            return super().eps(x_t, timesteps, text, None)
        return self.prior.eps(x_t, timesteps, text.expand(x_t.shape[0]), text[:1], 1.0)


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_the_update_error_of_known_estimators(lam):
    """eq. 9's bracket: exact psi -> 0; psi = phi -> a zero bracket, error exactly 1; an exact null with phi as
    the camera score -> the error is (1 - lambda) ||noise - phi|| / ||phi - lambda null* - (1 - lambda) noise||."""
    gen = torch.Generator().manual_seed(4)
    images = torch.rand(3, 3, 8, 8, generator=gen) * 2 - 1
    p = SyntheticPrior(images, ["a"], torch.zeros(3), torch.device("cpu"))
    bank = torch.rand(5, 3, 8, 8, generator=gen) * 2 - 1
    latents, cameras = bank[:2], torch.randn(2, 16, generator=gen)
    estimators = {"exact": Exact(p, bank), "phi": Phi(p, bank), "mixed": ExactNullPhiCamera(p, bank)}
    rows = psi_errors(
        estimators, p, torch.tensor([0]), latents, cameras, bank, (300, 800), torch.Generator().manual_seed(5), lam
    )
    replay = torch.Generator().manual_seed(5)
    for row in rows:
        steps = torch.full((2,), row["t"])
        noise = torch.randn(latents.shape, generator=replay)
        x_t = p.add_noise(latents, noise, steps)
        phi = p.eps(x_t, steps, torch.tensor([0, 0]), torch.tensor([0]), 1.0)
        null = mixture_eps(x_t, bank, p.alphas_cumprod, steps)
        exact_update = phi - lam * null - (1 - lam) * noise
        assert row["exact_update"] == 0.0
        assert row["phi_update"] == pytest.approx(1.0)
        expected = float((1 - lam) * (noise - phi).norm() / exact_update.norm())
        assert row["mixed_update"] == pytest.approx(expected, rel=1e-5, abs=1e-6)
        assert (row["mixed_update"] > 0.01) == (lam < 1)  # the camera term only counts when lambda < 1


def test_a_bank_of_one_image_makes_the_null_score_the_noise():
    """One render: q_t is a single Gaussian around it, whose exact eps at x_t = alpha x0 + sigma eps is eps. The
    particle estimator with that one-image bank is then right with and without the camera."""
    gen = torch.Generator().manual_seed(2)
    p = prior()
    image = torch.rand(1, 3, 8, 8, generator=gen) * 2 - 1
    particle = ParticleEstimator(p, bank_size=1)
    particle.refresh(image)
    camera_is_noise = Exact(p, image)
    camera_is_noise.eps = lambda x_t, t, text, cameras, noise=None: noise  # the Dirac's score, with or without c
    rows = psi_errors(
        {"particle": particle, "noise": camera_is_noise},
        p,
        torch.tensor([0]),
        image,
        torch.randn(1, 16, generator=gen),
        image,
        TIMESTEPS,
        torch.Generator().manual_seed(3),
    )
    for row in rows:
        assert row["particle_null"] == 0.0 and row["particle_camera"] == 0.0
        assert row["noise_null"] < 1e-4  # the mixture of one image gives the noise back, up to float rounding


def metrics_rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("estimator", ["residual", "particle"])
def test_a_run_measures_psi_without_changing_its_training(tmp_path, estimator):
    """The diagnostic callback adds psi_error to the rows at every --diagnose.every of the run and at its last step;
    on its own random streams, the run trains exactly as without it."""
    bank = {"bank_size": 4, "bank_refresh_every": 3} if estimator == "particle" else {}
    config = small_synthetic_config(6, psi={"name": estimator, **bank})
    measured = replace(config, diagnose=replace(config.diagnose, enabled=True, every=0.5, holdout=3, bank_size=8))
    plain = build_trainer(config, tmp_path / "plain", torch.device("cpu"))
    plain.run()
    diagnosed = build_trainer(measured, tmp_path / "diagnosed", torch.device("cpu"), prior=plain.prior)
    assert [type(c) for c in diagnosed.callbacks if isinstance(c, PsiDiagnosticCallback)] == [PsiDiagnosticCallback]
    diagnosed.run()
    for key, value in plain.scene.params.items():
        assert torch.equal(diagnosed.scene.params[key], value), key  # its own random streams: training unchanged
    rows = metrics_rows(tmp_path / "diagnosed")
    assert [row["step"] for row in rows] == list(range(1, 7))
    measured_at = [row["step"] for row in rows if "psi_error" in row]
    assert measured_at == [3, 6]
    assert list(rows[2])[-2:] == ["psi_error", "it_s"]  # added before the row is written
    unmeasured = [{k: v for k, v in row.items() if k != "it_s"} for row in metrics_rows(tmp_path / "plain")]
    assert [{k: v for k, v in row.items() if k not in ("it_s", "psi_error")} for row in rows] == unmeasured
    errors = rows[-1]["psi_error"]
    assert [e["t"] for e in errors] == list(measured.diagnose.timesteps)
    names = {f"{who}_{kind}" for who in ("psi", "particle") for kind in ("null", "camera", "entropy", "update")}
    names = names if estimator == "residual" else {n for n in names if n.startswith("psi_")}
    objective = {"kl_marginal_lower", "kl_marginal_upper", "kl_conditional"}  # the exact prior: the objective too
    assert all(set(e) - {"t"} == names | objective for e in errors)
    assert all(e["kl_conditional"] > 0.0 and e["kl_marginal_lower"] < e["kl_marginal_upper"] for e in errors)
    if estimator == "particle":  # its camera score is the Dirac's, exactly
        assert all(e["psi_camera"] == 0.0 for e in errors)
    assert all(0.0 < e["psi_null"] < 2.0 for e in errors)


def test_an_sds_run_has_no_psi_to_diagnose(tmp_path):
    config = small_synthetic_config(2)
    config = replace(
        config, distill=replace(config.distill, method="sds"), diagnose=replace(config.diagnose, enabled=True)
    )
    trainer = build_trainer(config, tmp_path, torch.device("cpu"))
    assert trainer.psi is None and not any(isinstance(c, PsiDiagnosticCallback) for c in trainer.callbacks)


def test_the_run_plots_its_psi_error(tmp_path):
    pytest.importorskip("matplotlib")
    config = small_synthetic_config(4, psi={"name": "particle", "bank_size": 4})
    config = replace(config, diagnose=replace(config.diagnose, enabled=True, every=0.5, holdout=2, bank_size=4))
    trainer = build_trainer(config, tmp_path, torch.device("cpu"))
    trainer.run()
    rows = metrics_rows(tmp_path)
    assert sum("psi_error" in row for row in rows) == 2
    png = (tmp_path / "psi_error.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_a_plot_that_fails_never_fails_the_finished_run(tmp_path, monkeypatch, capsys):
    def broken(metrics, out):
        raise ValueError("no axes")

    monkeypatch.setattr(psi_error, "plot_psi_errors", broken)
    config = small_synthetic_config(2, psi={"name": "particle", "bank_size": 4})
    config = replace(config, diagnose=replace(config.diagnose, enabled=True, every=1.0, holdout=2, bank_size=4))
    build_trainer(config, tmp_path, torch.device("cpu")).run()
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "finished"
    assert (tmp_path / "scene.ply").is_file() and not (tmp_path / "psi_error.png").exists()
    assert "could not plot psi_error.png: ValueError: no axes" in " ".join(capsys.readouterr().err.split())


def test_the_diagnostic_measures_the_objective_against_the_exact_prior():
    """Theorem 1's KL terms of the bank: zero marginal KL when the bank is the prior's own images, the closed form
    alpha^2 ||a - b||^2 / (2 sigma^2) when both are one image (a bank of two copies of a against a prior of b)."""
    gen = torch.Generator().manual_seed(6)
    images = torch.rand(4, 3, 8, 8, generator=gen) * 2 - 1
    p = SyntheticPrior(images, ["a"], torch.zeros(4), torch.device("cpu"))
    args = ({"exact": Exact(p, images)}, p, torch.tensor([0]), images[:2], torch.randn(2, 16, generator=gen))
    same = psi_errors(*args, images, (200, 700), torch.Generator().manual_seed(7), 1.0, prior_images=images)
    assert all(row["kl_marginal_upper"] == pytest.approx(0.0, abs=1e-9) for row in same)
    a, b = images[:1], images[1:2]
    one = psi_errors(*args, torch.cat([a, a]), (200, 700), torch.Generator().manual_seed(7), 1.0, prior_images=b)
    for row in one:
        abar = float(p.alphas_cumprod[row["t"]])
        exact = abar * float((a - b).double().square().sum()) / (2 * (1 - abar))
        for key in ("kl_marginal_lower", "kl_marginal_upper", "kl_conditional"):
            assert row[key] == pytest.approx(exact, rel=1e-6), key
    without = psi_errors(*args, images, (200,), torch.Generator().manual_seed(7), 1.0)
    assert "kl_marginal_upper" not in without[0]  # a prior without exact images: no objective


def test_the_objective_is_measured_against_the_prompt_s_own_reference():
    """A prior of two references: the run's KL is against its prompt's images, not the union of both (against the
    union, a bank equal to one reference's images would have KL log 2)."""
    gen = torch.Generator().manual_seed(8)
    first, second = torch.rand(4, 3, 8, 8, generator=gen) * 2 - 1, torch.rand(4, 3, 8, 8, generator=gen) * 2 - 1
    p = SyntheticPrior(torch.cat([first, second]), ["a", "b"], torch.zeros(8), torch.device("cpu"))
    config = PsiDiagnosticConfig(enabled=True, holdout=2, bank_size=4, timesteps=(300, 800))
    for index, images in ((0, first), (1, second)):
        diagnostic = PsiDiagnostic(config, p, particle_bank_size=4)
        psi = ParticleEstimator(p, bank_size=4)
        psi.refresh(images)
        rows = diagnostic.measure(psi, torch.tensor([index]), lambda n, g, x=images: (x[:n], torch.zeros(n, 16)))
        assert all(row["kl_marginal_upper"] == pytest.approx(0.0, abs=1e-9) for row in rows)
