"""The synthetic prior's exact score, the particle estimator, the Janus metrics, and a short benchmark run."""

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from small_runs import resumed_and_straight

from esd_gs.cameras import OrbitSampler
from esd_gs.diffusion import mixture_eps, posterior_mean, sd_alphas_cumprod
from esd_gs.distillation import DistillationConfig, ScoreDistillation
from esd_gs.distillation.timesteps import TimestepSchedule
from esd_gs.errors import ConfigError, UserError
from esd_gs.estimators import ParticleEstimator
from esd_gs.evaluation.janus import aligned_psnr, count_arcs, inception_quality_variety, janus_metrics
from esd_gs.priors.synthetic import SyntheticPrior, SyntheticPriorConfig, biased_cameras
from esd_gs.priors.synthetic_objects import object_named
from esd_gs.reference_objects import reference_path

ROOT = Path(__file__).resolve().parents[1]


def brute_force_eps(x_t, data, abar):
    """-sigma * grad log p_t(x_t) of the Dirac mixture, by autograd in float64 (no tricks)."""
    x = x_t.double().clone().requires_grad_(True)
    alpha, sigma = math.sqrt(abar), math.sqrt(1 - abar)
    flat = x.reshape(x.shape[0], -1)
    d = data.double().reshape(data.shape[0], -1)
    log_comp = -((flat[:, None, :] - alpha * d[None]) ** 2).sum(-1) / (2 * sigma**2)
    log_p = torch.logsumexp(log_comp, dim=1).sum()
    (grad,) = torch.autograd.grad(log_p, x)
    return (-sigma * grad).float()


@pytest.mark.parametrize("t", [1, 30, 400, 999])
def test_exact_score_matches_brute_force(t):
    gen = torch.Generator().manual_seed(0)
    data = torch.rand(37, 3, 4, 4, generator=gen) * 2 - 1
    abar_all = sd_alphas_cumprod()
    abar = float(abar_all[t])
    x_t = math.sqrt(abar) * data[:3] + math.sqrt(1 - abar) * torch.randn(3, 3, 4, 4, generator=gen)
    got = mixture_eps(x_t, data, abar_all, torch.full((3,), t), chunk=8)  # several chunks: log-space merging
    expected = brute_force_eps(x_t, data, abar)
    assert torch.allclose(got, expected, atol=2e-4, rtol=1e-3)


def test_small_t_recovers_the_injected_noise_and_large_t_the_mean():
    gen = torch.Generator().manual_seed(1)
    data = torch.rand(16, 3, 8, 8, generator=gen) * 2 - 1
    abar = sd_alphas_cumprod()
    noise = torch.randn(2, 3, 8, 8, generator=gen)
    t = torch.tensor([0, 0])
    x_t = abar[0].sqrt() * data[[3, 7]] + (1 - abar[0]).sqrt() * noise
    assert torch.allclose(mixture_eps(x_t, data, abar, t), noise, atol=1e-3)  # stable at sigma ~ 0.03
    mean = posterior_mean(torch.zeros(1, 3, 8, 8), data, torch.tensor([1e-4]), torch.tensor([1.0]))
    assert torch.allclose(mean[0], data.mean(0), atol=1e-3)


def test_biased_cameras_follow_p_front():
    cams = biased_cameras(4000, OrbitSampler(), p_front=0.8, front_std=20.0, generator=torch.Generator().manual_seed(0))
    near_front = (cams.azimuth.abs() < 60).float().mean().item()
    # 0.8 inside +-3 std, plus the uniform part's share 0.2 * 120/360.
    assert abs(near_front - (0.8 * 0.9973 + 0.2 / 3)) < 0.03


def test_prior_cfg_with_two_references_is_union_based(tmp_path):
    from esd_gs.example import make_head_scene
    from esd_gs.io import write_ply

    a, b = tmp_path / "a.ply", tmp_path / "b.ply"
    write_ply(make_head_scene(300, seed=0), a)
    shifted = make_head_scene(300, seed=1)
    with torch.no_grad():
        shifted.params["sh0"].neg_()
    write_ply(shifted, b)
    config = SyntheticPriorConfig(reference=(a, b), reference_prompts=("head a", "head b"), num_images=8)
    prior = SyntheticPrior.build(config, "head b", 16, OrbitSampler(), torch.device("cpu"))
    text = prior.text_embeddings("head b")
    gen = torch.Generator().manual_seed(0)
    x_t, t = torch.randn(2, 3, 16, 16, generator=gen), torch.tensor([300, 600])
    cond = text.conditional(torch.zeros(2), torch.zeros(2))
    eps_b = mixture_eps(x_t, prior.images[8:], prior.alphas_cumprod, t)
    eps_all = mixture_eps(x_t, prior.images, prior.alphas_cumprod, t)
    assert torch.allclose(prior.eps(x_t, t, cond, text.negative, 3.0), eps_all + 3.0 * (eps_b - eps_all), atol=1e-5)
    assert torch.equal(prior.reference_latents(1), prior.images[8:])  # each prompt's own images, as latents
    assert torch.allclose(prior.reference_images(1), (prior.images[8:] + 1) / 2)
    assert not torch.allclose(prior.reference_latents(0), prior.reference_latents(1))
    with pytest.raises(Exception, match="knows the prompts"):
        SyntheticPrior.build(config, "a cat", 16, OrbitSampler(), torch.device("cpu"))


@pytest.mark.parametrize(
    "prompt, name",
    [
        ("a red car", "car"),
        ("A bald Head", "head"),
        ("two mugs", "mug"),
        ("two buses", "bus"),
        ("a penguin.", "penguin"),
        ("HOUSE", "house"),
    ],
)
def test_the_prompt_names_the_object(prompt, name):
    assert object_named(prompt) == name


@pytest.mark.parametrize(
    "prompt, problem",
    [
        ("a plush dragon toy", "names none"),
        ("a carpet", "names none"),  # whole words only
        ("a robot who cares", "names none"),  # "es" makes a plural of the bus only
        ("headphones", "names none"),
        ("a penguin on a chair", "names chair and penguin"),
    ],
)
def test_a_prompt_naming_no_object_or_two_is_refused_in_one_line(prompt, problem):
    with pytest.raises(UserError) as error:
        SyntheticPriorConfig().check_prompt(prompt)
    message = str(error.value)
    assert "\n" not in message and problem in message and f"'{prompt}'" in message
    assert "head, car, house, mug, chair, penguin, cat, bus, radio" in message and "--prior.reference PATH" in message


def test_the_object_the_prompt_names_is_the_priors_and_a_reference_file_overrides_the_prompt():
    def images(prompt, **settings):
        config = SyntheticPriorConfig(num_images=4, **settings)
        return SyntheticPrior.build(config, prompt, 16, OrbitSampler(), torch.device("cpu")).images

    car, head = images("a red car"), images("a bald head")
    assert torch.equal(car, images("anything at all", reference=(reference_path("car"),)))  # the file is the object
    assert torch.equal(head, images("a head", reference=(ROOT / "assets" / "head.ply",)))
    assert (car - head).abs().mean() > 0.05  # another object, not the head under another prompt
    with pytest.raises(UserError, match="give the files too"):
        SyntheticPriorConfig(reference_prompts=("a car",)).check_prompt("a car")


def test_particle_estimator_esd_bracket():
    """Particle psi: camera term = injected noise (Dirac), null term = exact bank score; VSD with it is SDS."""
    prior = SyntheticPrior(torch.rand(8, 3, 8, 8) * 2 - 1, ["x"], torch.zeros(8), torch.device("cpu"))
    text = prior.text_embeddings("x")
    psi = ParticleEstimator(prior, bank_size=4, refresh_every=5)
    bank = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
    psi.refresh(bank)
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    cams = OrbitSampler().sample(2, generator=torch.Generator().manual_seed(4))
    outs = {}
    for method, lam in (("esd", 0.7), ("vsd", 0.0), ("sds", 0.0)):
        distill = ScoreDistillation(
            prior,
            text,
            DistillationConfig(method=method, lambda_entropy=lam, guidance_scale=1.0),
            TimestepSchedule(),
            None if method == "sds" else psi,
        )
        outs[method] = distill.step(images, cams, 0.5, generator=torch.Generator().manual_seed(5))
    assert torch.equal(outs["vsd"].grad, outs["sds"].grad)
    gen = torch.Generator().manual_seed(5)
    t = TimestepSchedule().sample(0.5, 2, prior.alphas_cumprod, generator=gen)
    noise = torch.randn(2, 3, 8, 8, generator=gen)
    x_t = prior.add_noise(images * 2 - 1, noise, t)
    eps_phi = mixture_eps(x_t, prior.images, prior.alphas_cumprod, t)
    eps_bank = mixture_eps(x_t, bank, prior.alphas_cumprod, t)
    w = (1 - prior.alphas_cumprod[t]).view(-1, 1, 1, 1)
    assert torch.allclose(outs["esd"].grad, w * (eps_phi - 0.7 * eps_bank - 0.3 * noise), atol=1e-5)
    assert psi.needs_refresh(10) and not psi.needs_refresh(11)


def test_face_count_and_alignment_on_constructed_objects():
    # 120 views whose "images" are one-hot codes of the view's azimuth bin (12 bins of 30 deg); prior images are the
    # same codes with known azimuths.
    prior_az = torch.arange(12) * 30.0 - 180.0 + 15.0
    prior = torch.eye(12).view(12, 1, 1, 12).expand(12, 3, 1, 12).clone()
    view_az = torch.arange(120) * 3.0

    def views_for(az_of_view):
        bins = torch.floor(torch.remainder(az_of_view + 180.0, 360.0) / 30.0).long()
        return prior[bins]

    single = views_for(view_az)  # each view looks like the prior image of its own azimuth
    two_faced = views_for(torch.where(torch.remainder(view_az + 90, 360) < 180, view_az, view_az - 180))
    m1 = janus_metrics(single, single, prior, prior_az)
    m2 = janus_metrics(two_faced, single, prior, prior_az)
    assert m1.face_count == 1 and m2.face_count == 2
    assert m2.frontal_fraction == pytest.approx(2 * m1.frontal_fraction, abs=0.02)
    assert m1.aligned_psnr > 60 and m2.aligned_psnr < m1.aligned_psnr
    assert m1.iv > m2.iv  # a consistent object shows more varied views
    # Alignment: a rotated copy aligns perfectly at the right offset.
    psnr, shift = aligned_psnr(torch.roll(single, 10, dims=0), single)
    assert psnr > 60 and shift == 110
    assert count_arcs(torch.tensor([1, 1, 0, 0, 1, 0, 1], dtype=torch.bool)) == 2  # circular: ends join
    assert count_arcs(torch.ones(5, dtype=torch.bool)) == 1 and count_arcs(torch.zeros(5, dtype=torch.bool)) == 0
    iq, iv = inception_quality_variety(torch.rand(4, 12), prior_az)
    assert 0 <= iq <= math.log(8) + 1e-6 and 0 <= iv <= math.log(8) + 1e-6


def test_bench_janus_end_to_end(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="160", OMP_NUM_THREADS="1")
    out = tmp_path / "bench"
    command = [
        sys.executable,
        "-m",
        "esd_gs",
        "bench",
        "janus",
        "--methods",
        "sds,esd",
        "--lambdas",
        "1.0",
        "--estimators",
        "particle",
        "--seeds",
        "1",
        "--steps",
        "15",
        "--timesteps",
        "dreamtime",
        "--psi-loss-weighting",
        "prediction",
        "--psi-lr",
        "0.002",
        "--psi-steps",
        "2",
        "--psi-t-window",
        "50",
        "--psi-steps-until",
        "0.5",
        "--out",
        str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((out / "results.json").read_text())
    runs = data["runs"]
    assert len(runs) == 2
    for record in runs:
        assert {"method", "lambda_entropy", "estimator", "seed", "aligned_psnr", "face_count", "iq", "iv"} <= set(
            record
        )
    assert {(r["method"], r["seed"]) for r in runs} == {("sds", 0), ("esd", 0)}
    assert {r["timesteps"] for r in runs} == {"dreamtime"}  # --timesteps reaches every run's config
    assert "name: dreamtime" in (out / "runs" / "sds-l0---s0" / "config.yaml").read_text()
    # The learned psi's options reach the records and the saved base psi (the SDS run's config keeps the base's
    # learned psi, unread; the particle run's psi has none of these settings, only its bank's).
    sds_saved = (out / "runs" / "sds-l0---s0" / "config.yaml").read_text()
    particle_saved = (out / "runs" / "esd-l1-particle-s0" / "config.yaml").read_text()
    assert {r["psi_loss_weighting"] for r in runs} == {"prediction"}  # not the default (x0): the option got through
    assert "name: residual" in sds_saved and "loss_weighting: prediction" in sds_saved
    assert {r["psi_lr"] for r in runs} == {0.002} and "lr: 0.002" in sds_saved
    assert {r["psi_steps"] for r in runs} == {2} and "train_steps_per_iter: 2" in sds_saved
    assert {r["psi_t_window"] for r in runs} == {50} and "timestep_window: 50" in sds_saved
    assert {r["psi_steps_until"] for r in runs} == {0.5} and "train_steps_until: 0.5" in sds_saved
    assert "name: particle" in particle_saved and "loss_weighting" not in particle_saved
    assert data["reference"]["face_count"] == 1  # the ground truth has one face
    assert data["reference"]["true_back_share"] == 1.0  # its back is its own, not its twin's front
    assert all(0.0 <= r["true_back_share"] <= 1.0 for r in runs)
    text = (out / "results.md").read_text()
    assert "| true back | second front | frontal share | share gap | one face |" in text
    assert "- ESD l=1 (particle): target " in text and "dB over SDS" in text  # the verdict against SDS, per config
    from esd_gs.bench.janus import run_metrics

    for row, record in (("| SDS |", runs[0]), ("| ESD l=1 (particle) |", runs[1])):
        line = next(line for line in text.splitlines() if line.startswith(row))
        assert line.split(" | ")[8] == f"{int(run_metrics(record).one_face)}/1"  # the one face column: the verdict
    # A finished run scored by an older version (no true back share) is kept and scored again, not trained again.
    record_file = out / "runs" / "esd-l1-particle-s0" / "janus.json"
    saved = json.loads(record_file.read_text())
    scored = dict(saved["record"])
    del saved["record"]["true_back_share"]
    record_file.write_text(json.dumps(saved))
    scene_time = (out / "runs" / "esd-l1-particle-s0" / "scene.ply").stat().st_mtime_ns
    (out / "results.json").unlink()
    again = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "finished earlier, kept, scored again by this version" in again.stdout + again.stderr
    assert (out / "runs" / "esd-l1-particle-s0" / "scene.ply").stat().st_mtime_ns == scene_time
    rescored = json.loads(record_file.read_text())["record"]
    assert rescored.keys() == scored.keys()
    for key, value in scored.items():  # the scene read back from its .ply: float rounding only
        assert rescored[key] == (pytest.approx(value, rel=1e-6) if isinstance(value, float) else value), key
    assert (
        "| SDS |" in (out / "results.md").read_text()
        and "dreamtime timestep schedule" in (out / "results.md").read_text()
        and "no learned psi" in (out / "results.md").read_text()  # SDS and particle: psi's settings do not apply
    )
    import imageio.v3 as iio

    from esd_gs.bench.janus import FACE_MARK

    figure = iio.imread(out / "janus.png")
    assert figure.shape[0] > 3 * 32 and figure.shape[2] == 3
    marked_rows = np.flatnonzero((figure[..., :3] == FACE_MARK).all(-1).any(1))
    # The frontal views are marked (6 px bars): under the reference and at least one run (a 15-step run may have none).
    assert len(marked_rows) >= 2 * 6
    assert "aligned PSNR" in result.stdout or "aligned PSNR" in result.stderr
    assert "benchmark" in result.stderr and "2/2" in result.stderr  # one progress bar over the whole benchmark

    # An interrupted benchmark (here: results.json not written yet, one run unfinished) continues where it stopped.
    (out / "results.json").unlink()
    kept, redone = out / "runs" / "sds-l0---s0", out / "runs" / "esd-l1-particle-s0"
    kept_scene = (kept / "scene.ply").stat().st_mtime_ns
    (redone / "run.json").write_text('{"status": "interrupted", "step": 7, "steps": 15}')
    again = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("finished earlier, kept") == 1
    assert (kept / "scene.ply").stat().st_mtime_ns == kept_scene  # not trained again
    assert json.loads((redone / "run.json").read_text())["status"] == "finished"
    rerun = json.loads((out / "results.json").read_text())
    assert rerun["runs"] == data["runs"]  # the same numbers: the redone run is deterministic on CPU


@pytest.mark.parametrize("estimator", ["particle", "residual"])
def test_synthetic_run_resumes_exactly_from_a_checkpoint(tmp_path, estimator):
    """Checkpoint mid-run, restore into a fresh trainer, finish: same scene as a straight run (both psi kinds)."""
    from dataclasses import replace

    from esd_gs.configs.presets import PRESETS
    from esd_gs.pipeline.build import build_trainer

    base = PRESETS["synthetic"].with_psi(estimator)
    psi = replace(base.psi, bank_size=4, bank_refresh_every=3) if estimator == "particle" else base.psi
    config = replace(
        base,
        prompt="a head",
        steps=8,
        batch_size=2,
        seed=4,
        init=replace(base.init, num_points=300),
        prior=replace(base.prior, num_images=16),
        psi=psi,
    )
    device = torch.device("cpu")
    prior = config.prior.build(device, config.run_context)  # one phi for both runs
    resumed_and_straight(lambda folder: build_trainer(config, tmp_path / folder, device, prior=prior), steps=8, stop=5)


def test_janus_metrics_score_against_the_reference_s_own_labels():
    """An object whose side views look frontal to the classifier (here by construction) has several 'faces' of its
    own: a faithful copy has no excess face, a rotated copy is aligned, a copy with a second face has one excess."""
    prior_az = torch.arange(12) * 30.0 - 180.0 + 15.0
    prior = torch.eye(12).view(12, 1, 1, 12).expand(12, 3, 1, 12).clone()
    view_az = torch.arange(120) * 3.0
    bins_of = lambda az: torch.floor(torch.remainder(az + 180.0, 360.0) / 30.0).long()  # noqa: E731
    side = (torch.remainder(view_az - 60, 360) < 60) | (torch.remainder(view_az - 240, 360) < 60)  # 60..120, 240..300
    looks = torch.where(side, torch.zeros_like(view_az) + 15.0, view_az)  # its sides look like the front
    elongated = prior[bins_of(looks)]
    own = janus_metrics(elongated, elongated, prior, prior_az)
    assert own.face_count == 3 and own.excess_faces == 0  # raw count 3: the old measure would call it Janus
    assert own.frontal_share_gap == 0.0 and own.side_accuracy == 1.0
    rotated = janus_metrics(torch.roll(elongated, 7, dims=0), elongated, prior, prior_az)
    assert rotated.excess_faces == 0 and rotated.side_accuracy == 1.0 and rotated.aligned_psnr > 60
    back = torch.remainder(view_az - 150, 360) < 60  # 150..210 looks frontal too: a face on the back
    janus = janus_metrics(
        prior[bins_of(torch.where(back, torch.zeros_like(view_az) + 15.0, looks))], elongated, prior, prior_az
    )
    assert janus.excess_faces == 1 and janus.frontal_share_gap > 0.1 and janus.side_accuracy < 0.9


@pytest.mark.parametrize("stretch", [(1.0, 1.0, 1.0), (0.6, 1.7, 1.0), (1.0, 0.6, 1.5)])
def test_janus_metrics_on_rendered_objects_of_several_shapes(stretch):
    """The built-in head, squashed front-to-back and stretched sideways, or tall and thin: each reference scored
    against itself has no excess face, and its copy turned by 90 degrees is found at that offset."""
    from esd_gs.cameras import turntable
    from esd_gs.example import make_head_scene
    from esd_gs.render.views import render_images
    from esd_gs.scene import GaussianScene

    head = make_head_scene(1200, seed=0)
    params = head.raw()
    params["means"] = params["means"] * torch.tensor(stretch)
    params["scales"] = params["scales"] + torch.log(torch.tensor(stretch))
    scene = GaussianScene(params)
    sampler = OrbitSampler(elevation=(15.0, 15.0))
    cams = biased_cameras(96, sampler, 0.0, 26.0, torch.Generator().manual_seed(0))
    prior_images = render_images(scene, cams, 16)
    views = render_images(scene, turntable(120, elevation=15.0), 16)
    own = janus_metrics(views, views, prior_images, cams.azimuth)
    assert own.excess_faces == 0 and own.side_accuracy == 1.0 and own.frontal_share_gap == 0.0
    turned = janus_metrics(torch.roll(views, 30, dims=0), views, prior_images, cams.azimuth)
    assert turned.best_offset_deg == pytest.approx(270.0) and turned.excess_faces == 0 and turned.side_accuracy == 1.0


def test_true_back_share_compares_the_aligned_back_with_the_reference_s_and_the_twin_s():
    """Known answers on 8 views (azimuths 0, 45, .., 315: the back views are 135, 180 and 225): a run equal to the
    reference scores 1, one equal to the twin 0, one with the twin's back at 180 only 2/3; the run's views are turned
    by the aligned shift first, and the verdict needs the twin's test, the faces and the share all passed."""
    from esd_gs.evaluation.janus import JanusMetrics, back_views, true_back_share

    assert back_views(8).tolist() == [False, False, False, True, True, True, False, False]
    g = torch.Generator().manual_seed(0)
    reference = torch.rand(8, 3, 4, 4, generator=g)
    twin = reference.clone()
    twin[3:6] = torch.rand(3, 3, 4, 4, generator=g)  # another back
    assert true_back_share(reference, reference, twin, 0) == 1.0
    assert true_back_share(twin, reference, twin, 0) == 0.0
    mixed = reference.clone()
    mixed[4] = twin[4]
    assert true_back_share(mixed, reference, twin, 0) == pytest.approx(2 / 3)
    assert true_back_share(torch.roll(mixed, -3, dims=0), reference, twin, 3) == pytest.approx(2 / 3)
    assert true_back_share(torch.roll(twin, 5, dims=0), reference, twin, -5) == 0.0
    same_at_180 = twin.clone()
    same_at_180[4] = reference[4]  # only views 3 and 5 can tell the back from the twin's
    assert true_back_share(mixed, reference, same_at_180, 0) == 1.0
    assert math.isnan(true_back_share(reference, reference, reference.clone(), 0))  # no back view differs
    passing = JanusMetrics(20.0, 0.0, 1, 0.3, 1.0, 2.0, excess_faces=0, frontal_share_gap=0.1, true_back_share=0.6)
    assert passing.one_face and not passing.second_front
    assert not dataclasses.replace(passing, frontal_share_gap=-0.11).one_face  # the share: within 0.1 either way
    assert (
        not dataclasses.replace(passing, excess_faces=1).one_face
        and dataclasses.replace(passing, excess_faces=1).second_front
    )
    assert (
        not dataclasses.replace(passing, true_back_share=0.5).one_face
        and dataclasses.replace(passing, true_back_share=0.5).second_front
    )
    assert not dataclasses.replace(passing, true_back_share=math.nan).one_face  # not measured: no verdict of one face


def test_results_header_names_the_learned_psi_s_settings_only_where_a_run_has_one():
    from esd_gs.bench.janus import METRICS, BenchRun, results_markdown
    from esd_gs.evaluation.janus import JanusMetrics

    reference = JanusMetrics(
        aligned_psnr=120.0, best_offset_deg=0.0, face_count=1, frontal_fraction=0.22, iq=1.6, iv=2.0
    )
    common = {k: 0.5 for k in METRICS} | {"best_offset_deg": 0.0, "steps": 10, "p_front": 0.5, "seed": 0}
    sds = common | {
        "method": "sds",
        "lambda_entropy": 0.0,
        "estimator": "-",
        "psi_lr": 0.001,
        "psi_loss_weighting": "x0",
    }
    learned = common | {
        "method": "esd",
        "lambda_entropy": 1.0,
        "estimator": "learned",
        "psi_lr": 0.002,
        "psi_loss_weighting": "prediction",
    }
    runs = [BenchRun("sds"), BenchRun("esd", 1.0, "learned")]
    # The header takes psi's settings from a learned run, not from the SDS run listed first.
    text = results_markdown([sds, learned], runs, reference)
    assert "loss weighting prediction, learning rate 0.002 and 1 update per 3D step" in text
    assert "4 updates per 3D step" in results_markdown([sds, learned | {"psi_steps": 4}], runs, reference)
    assert "trained at t within" not in text  # t ~ U[0, T): nothing to say
    windowed = results_markdown([sds, learned | {"psi_t_window": 100}], runs, reference)
    assert "trained at t within 100 of each step's distillation t" in windowed
    assert "no learned psi" in results_markdown([sds], runs[:1], reference)
    older = {k: v for k, v in learned.items() if k != "psi_lr"}  # a record made before --psi-lr existed
    assert "learning rate not recorded" in results_markdown([sds, older], runs, reference)


def test_each_estimator_s_config_holds_only_its_own_settings():
    """Each ``psi:NAME`` config has only the settings its estimator reads: the learned ones share how they train
    (``OnlineTrainingConfig``), the particle one has only its bank's. So a saved run's psi settings are all its psi
    reads, and ``settings_of`` drops psi only for SDS runs (which read none)."""
    from dataclasses import fields

    from esd_gs.configs.yaml_io import settings_of
    from esd_gs.estimators import ESTIMATORS, OnlineTrainingConfig

    def names(cls):
        return {f.name for f in fields(cls)}

    training = names(OnlineTrainingConfig)
    assert set(ESTIMATORS) == {"lora", "residual", "particle"}
    assert names(ESTIMATORS["particle"]) == {"bank_size", "bank_refresh_every"}
    assert names(ESTIMATORS["residual"]) == training
    assert names(ESTIMATORS["lora"]) == training | {
        "lora_rank", "lora_alpha", "lora_init", "target_modules", "shared_unet", "base_model"
    }  # fmt: skip
    assert not names(ESTIMATORS["particle"]) & training
    psi = {"name": "residual", "lr": 1e-3}
    other = {"name": "residual", "lr": 3e-3}
    assert settings_of({"method": "sds", "psi": psi}) == settings_of({"method": "sds", "psi": other})  # SDS: no psi
    assert settings_of({"method": "sds", "psi": psi}) == settings_of({"method": "sds"})
    assert settings_of({"method": "esd", "psi": psi}) != settings_of({"method": "esd", "psi": other})
    assert settings_of({"method": "vsd", "psi": psi}) != settings_of({"method": "vsd", "psi": other})
    particle = {"name": "particle", "bank_size": 32}
    assert settings_of({"method": "esd", "psi": particle}) != settings_of(
        {"method": "esd", "psi": {**particle, "bank_size": 64}}
    )
    assert settings_of({"method": "esd", "psi": particle}) != settings_of({"method": "esd", "psi": psi})


def test_bench_resume_keeps_runs_of_the_same_settings_and_refuses_others(tmp_path):
    from dataclasses import replace

    from esd_gs.bench.janus import METRICS, RUN_RECORD, bench_base_config, finished_record, psi_config
    from esd_gs.configs.yaml_io import config_to_dict, run_settings
    from esd_gs.errors import UserError
    from esd_gs.estimators import ParticlePsiConfig, ResidualPsiConfig

    config = replace(bench_base_config(steps=10), out=tmp_path / "run", seed=0)
    run = tmp_path / "run"
    run.mkdir()
    assert finished_record(run, config) is None  # nothing there yet
    record = {k: 0.0 for k in METRICS}
    (run / RUN_RECORD).write_text(json.dumps({"config": run_settings(config), "record": record}))
    assert finished_record(run, config) is None  # scored but without a finished scene: done again
    (run / "scene.ply").write_bytes(b"ply")
    (run / "run.json").write_text('{"status": "finished", "step": 10, "steps": 10}')
    assert finished_record(run, config) == record
    moved = replace(config, out=Path("elsewhere") / "run", device="cpu")  # where it is written does not matter
    assert finished_record(run, moved) == record
    with pytest.raises(UserError, match="holds a run of other settings: pass --overwrite"):
        finished_record(run, replace(config, seed=1))
    uniform = replace(bench_base_config(steps=10, timesteps="uniform"), out=config.out, seed=0)
    assert uniform.timesteps.name == "uniform" and config.timesteps.name == "dreamtime"  # the preset's
    with pytest.raises(UserError, match="holds a run of other settings"):  # a schedule's runs are not reused
        finished_record(run, uniform)

    # psi's loss weighting: another setting for a run with a learned psi; a particle run has no such setting.
    def learned(cfg):
        return replace(cfg, out=config.out, seed=0)  # the bench's base psi is the prior's learned one

    x0, plain = (
        learned(bench_base_config(steps=10)),
        learned(bench_base_config(steps=10, psi_loss_weighting="prediction")),
    )
    assert isinstance(x0.psi, ResidualPsiConfig) and isinstance(plain.psi, ResidualPsiConfig)
    assert x0.psi.loss_weighting == "x0" and plain.psi.loss_weighting == "prediction"  # the exact prior's default: x0
    (run / RUN_RECORD).write_text(json.dumps({"config": run_settings(plain), "record": record}))
    assert finished_record(run, plain) == record
    with pytest.raises(UserError, match="holds a run of other settings"):
        finished_record(run, x0)
    # The particle runs of a learned psi's loss weighting or learning rate are one run (they read neither).
    particle = replace(config, psi=psi_config(config, "particle"))
    assert particle.psi == ParticlePsiConfig()
    assert replace(plain, psi=psi_config(plain, "particle")).psi == particle.psi
    (run / RUN_RECORD).write_text(json.dumps({"config": run_settings(particle), "record": record}))
    assert finished_record(run, particle) == record
    assert finished_record(run, replace(bench_base_config(steps=10, psi_lr=3e-3), out=config.out, seed=0,
                                        psi=ParticlePsiConfig())) == record  # fmt: skip
    with pytest.raises(UserError, match="holds a run of other settings"):
        finished_record(run, replace(particle, psi=ParticlePsiConfig(bank_size=8)))
    with pytest.raises(UserError, match="holds a run of other settings"):  # particle and learned: two runs
        finished_record(run, x0)
    # psi's learning rate: another run for a learned psi.
    older = config_to_dict(plain)
    older["psi"]["lr"] = 3e-3
    assert plain.psi.lr == 1e-3
    (run / RUN_RECORD).write_text(json.dumps({"config": older, "record": record}))
    with pytest.raises(UserError, match="holds a run of other settings"):
        finished_record(run, plain)


def test_bench_resume_reads_0_1_records_with_0_1_s_meaning(tmp_path):
    """A record of esd-gs 0.1 (``prior: synthetic``, ``psi: {estimator: ...}``) is the run it was: settings it lacks
    (added after it was made) are 0.1's defaults, which it ran with. Runs saved before --psi.loss-weighting existed
    ran with "prediction": a learned one is kept for that setting and refused for today's default (x0); a particle
    one is kept under either, and its learned-psi settings (0.1 wrote them all) do not matter."""
    from dataclasses import replace

    from esd_gs.bench.janus import METRICS, RUN_RECORD, bench_base_config, finished_record, psi_config
    from esd_gs.configs.yaml_io import config_to_dict
    from esd_gs.errors import UserError

    def as_0_1(cfg, estimator):
        """``cfg`` written in esd-gs 0.1's layout (psi with every 0.1 field but loss_weighting)."""
        data = config_to_dict(cfg)
        del data["preset"]  # 0.1 had no presets in code
        prior = data.pop("prior")
        del prior["name"]
        psi = {k: v for k, v in data.pop("psi").items() if k != "name"}
        psi = {"lr": 1e-3, "p_null_camera": 0.1, **psi, "estimator": estimator, "bank_size": 32}
        psi.pop("loss_weighting", None)
        return {**data, "prior": "synthetic", "model": "sd2.1-base", "synthetic": prior, "psi": psi}

    run = tmp_path / "run"
    run.mkdir()
    (run / "scene.ply").write_bytes(b"ply")
    (run / "run.json").write_text('{"status": "finished", "step": 10, "steps": 10}')
    record = {k: 0.0 for k in METRICS}
    x0 = replace(bench_base_config(steps=10), out=run, seed=0)
    plain = replace(bench_base_config(steps=10, psi_loss_weighting="prediction"), out=run, seed=0)
    (run / RUN_RECORD).write_text(json.dumps({"config": as_0_1(plain, "learned"), "record": record}))
    assert finished_record(run, plain) == record
    with pytest.raises(UserError, match="holds a run of other settings"):
        finished_record(run, x0)
    for cfg in (x0, plain):
        particle = replace(cfg, psi=psi_config(cfg, "particle"))
        (run / RUN_RECORD).write_text(json.dumps({"config": as_0_1(cfg, "particle"), "record": record}))
        assert finished_record(run, particle) == record


def test_trainer_start_from_trains_the_given_object_with_its_own_optimisers(tmp_path):
    """fixed_point.py's start: the run begins at a copy of the object (not the ball), and the optimisers step it."""
    from dataclasses import replace

    from esd_gs.configs.presets import PRESETS
    from esd_gs.example import make_head_scene
    from esd_gs.pipeline.build import build_trainer

    base = PRESETS["synthetic"].with_psi("particle")
    config = replace(base, prompt="a head", steps=4, batch_size=1, init=replace(base.init, num_points=100),
                     prior=replace(base.prior, num_images=8), psi=replace(base.psi, bank_size=2))  # fmt: skip
    trainer = build_trainer(config, tmp_path, torch.device("cpu"))
    head = make_head_scene(400, seed=0)
    trainer.start_from(head)
    assert trainer.scene.num_gaussians == 400
    assert all(torch.equal(trainer.scene.params[k].detach(), v.detach()) for k, v in head.params.items())
    assert trainer.scene.params["means"] is not head.params["means"]  # a copy: training leaves the object alone
    for key, optimizer in trainer.optimizers.items():
        assert optimizer.param_groups[0]["params"][0] is trainer.scene.params[key]
    before = trainer.scene.raw()
    trainer.train_step()
    assert not torch.allclose(trainer.scene.params["sh0"].detach(), before["sh0"])  # the new scene is what trains
    assert torch.equal(head.params["sh0"].detach(), before["sh0"])
    with pytest.raises(RuntimeError, match="before the first step"):
        trainer.start_from(head)


@pytest.mark.parametrize("window", [None, 10])
def test_psi_timestep_window_trains_psi_around_the_step_s_distillation_t(tmp_path, window):
    """--psi.timestep-window w: the learned psi's training t lie within w of the t the step distilled at (DreamTime:
    one t per step); without it they are drawn from [0, T) as in Alg. 1."""
    from dataclasses import replace

    from esd_gs.configs.presets import PRESETS
    from esd_gs.pipeline.build import build_trainer

    base = PRESETS["synthetic"].with_psi("residual")
    psi = replace(base.psi, train_steps_per_iter=2, timestep_window=window)
    schedule, images = replace(base.timesteps, name="dreamtime"), replace(base.prior, num_images=8)
    config = replace(base, prompt="a head", steps=6, batch_size=4, init=replace(base.init, num_points=100), psi=psi,
                     prior=images, timesteps=schedule)  # fmt: skip
    trainer = build_trainer(config, tmp_path, torch.device("cpu"))
    drawn = []
    draw = trainer.psi.draw_timesteps
    trainer.psi.draw_timesteps = lambda *args: drawn.append(draw(*args)) or drawn[-1]
    distilled = []
    for _ in range(config.steps):
        distilled.append(trainer.train_step()["t"])
    assert len(drawn) == 2 * config.steps and all(d.shape == (4,) for d in drawn)
    offsets = torch.stack([d.float() - t for d, t in zip(drawn, [t for t in distilled for _ in range(2)])])
    assert len(set(distilled)) > 1  # DreamTime's t moves, and the window with it
    if window is None:
        assert offsets.abs().max() > 100  # U[0, T)
    else:
        assert offsets.abs().max() <= window and len(torch.unique(offsets)) > 1


def test_psi_train_steps_until_gives_the_extra_updates_to_the_start_of_the_run(tmp_path):
    """--psi.train-steps-per-iter 3 with --psi.train-steps-until 0.5: three psi updates (AdamW steps, each moving
    psi's weights) in each of the first half's steps, one in each step after; the cost is 3 * 0.5 + 0.5 = 2 updates
    a step on average."""
    from dataclasses import replace

    from esd_gs.configs.presets import PRESETS
    from esd_gs.pipeline.build import build_trainer

    base = PRESETS["synthetic"].with_psi("residual")
    psi = replace(base.psi, train_steps_per_iter=3, train_steps_until=0.5)
    config = replace(base, prompt="a head", steps=6, batch_size=2, init=replace(base.init, num_points=100), psi=psi,
                     prior=replace(base.prior, num_images=8))  # fmt: skip
    trainer = build_trainer(config, tmp_path, torch.device("cpu"))
    updates, moved = [], []
    for _ in range(config.steps):
        before = [p.detach().clone() for p in trainer.psi.trainable_parameters]
        count = trainer.psi.null_rate_counter[1]
        trainer.train_step()
        updates.append(trainer.psi.null_rate_counter[1] - count)
        moved.append(any(not torch.equal(a, b) for a, b in zip(before, trainer.psi.trainable_parameters)))
    assert updates == [3, 3, 3, 1, 1, 1] and all(moved)  # steps 0-2 have progress 0, 1/6, 2/6 < 0.5
    state = trainer.psi.optimizer.state[trainer.psi.trainable_parameters[0]]
    assert int(state["step"]) == 12  # the optimiser stepped once per update
    with pytest.raises(Exception, match="train-steps-until"):
        replace(base.psi, train_steps_until=0.0)
    with pytest.raises(ConfigError, match="train-steps-per-iter, which is 1"):  # with one update it would do nothing
        replace(config, psi=replace(base.psi, train_steps_per_iter=1, train_steps_until=0.5)).validate()
    # Checked once the preset is in: the synthetic preset's four updates take the flag alone; one update refuses it
    from esd_gs.cli.main import parse_args

    alone = parse_args(["generate", "a head", "--preset", "synthetic", "--psi.train-steps-until", "0.5"])
    assert (alone.psi.train_steps_per_iter, alone.psi.train_steps_until) == (4, 0.5)
    alone.validate()
    lora = ["generate", "a head", "--preset", "synthetic-unet", "psi:lora", "--psi.train-steps-until", "0.5"]
    with pytest.raises(UserError, match="which is 1: give it a value above 1"):
        parse_args(lora).validate()


def test_psi_draw_timesteps_default_and_window():
    """draw_timesteps: without a window exactly Alg. 1's t ~ U[0, T) draw (the same numbers as before the option);
    with one, each sample uniform in its own window around its distillation t, clipped to [0, T) without piling
    up at the ends; w = 0 trains at t_d itself."""
    from dataclasses import replace

    from esd_gs.estimators import ResidualPsiConfig

    prior = SyntheticPrior(torch.rand(4, 3, 8, 8) * 2 - 1, ["a head"], torch.zeros(4), torch.device("cpu"))
    psi = ResidualPsiConfig(lr=1e-3).build(prior)
    drawn = psi.draw_timesteps(6, torch.full((6,), 500), torch.Generator().manual_seed(3), torch.device("cpu"))
    assert torch.equal(drawn, torch.randint(0, 1000, (6,), generator=torch.Generator().manual_seed(3)))
    centres = torch.tensor([0, 3, 500, 999]).repeat_interleave(5000)
    psi.config = replace(psi.config, timestep_window=100)
    t = psi.draw_timesteps(centres.numel(), centres, torch.Generator().manual_seed(0), torch.device("cpu"))
    for centre in (0, 3, 500, 999):
        own = t[centres == centre]
        lo, hi = max(centre - 100, 0), min(centre + 100, 999)
        assert own.min() == lo and own.max() == hi  # the whole clipped window, nothing outside it
        assert float((own == lo).float().mean()) < 3.0 / (hi - lo + 1)  # uniform: no pile-up at a clipped end
    psi.config = replace(psi.config, timestep_window=0)
    assert torch.equal(psi.draw_timesteps(4, torch.tensor([7, 70, 700, 999]), None, torch.device("cpu")),
                       torch.tensor([7, 70, 700, 999]))  # fmt: skip
    with pytest.raises(ValueError, match="distillation timesteps"):
        psi.draw_timesteps(4, None, None, torch.device("cpu"))


def test_evaluate_scores_a_car_run_against_the_car():
    """``esd-gs evaluate --sides reference`` measures a run against the object its prompt named, not the head."""
    from esd_gs.cli.main import parse_args
    from esd_gs.evaluation.evaluate import _benchmark_turntable, _synthetic_reference
    from esd_gs.io import read_ply
    from esd_gs.render.views import render_images

    run = parse_args(["generate", "a red car", "--preset", "synthetic", "--prior.num-images", "4"])
    _, _, reference_views, _ = _synthetic_reference(run, torch.device("cpu"))
    car = render_images(read_ply(reference_path("car")), _benchmark_turntable(), run.resolution, background=1.0)
    assert torch.equal(reference_views, car)


def test_a_named_object_without_its_shipped_file_is_built_by_its_procedure(tmp_path, monkeypatch):
    """An installed esd-gs has no assets/ folder: the objects are built as scripts/make_reference_assets.py does."""
    from esd_gs import reference_objects
    from esd_gs.io import read_ply
    from esd_gs.priors.synthetic_objects import load_object

    shipped = read_ply(reference_path("mug"))
    monkeypatch.setattr(reference_objects, "ASSETS", tmp_path)  # no .ply there
    built = load_object("mug")
    assert built.num_gaussians == shipped.num_gaussians
    assert torch.allclose(built.params["means"], shipped.params["means"], atol=1e-5)


def test_a_run_records_its_object_and_one_saved_before_objects_had_names_stays_the_head(tmp_path):
    """A run's config.yaml names the object it showed, so resuming or evaluating it reads that object back. A
    synthetic run saved before the objects had names showed the head whatever its prompt said ("a red car", "a plush
    dragon toy"): it is read back as the head, and evaluated against the head's views, not refused or re-read as the
    car."""
    import yaml

    from esd_gs.cli.main import parse_args
    from esd_gs.configs.yaml_io import load_run_config, run_config_text, run_settings
    from esd_gs.evaluation.evaluate import _benchmark_turntable, _synthetic_reference
    from esd_gs.example import builtin_head
    from esd_gs.render.views import render_images

    car = parse_args(["generate", "a red car", "--preset", "synthetic", "--prior.num-images", "4"])
    saved = yaml.safe_load(run_config_text(car))
    assert saved["prior"]["object"] == "car"
    (tmp_path / "config.yaml").write_text(run_config_text(car))
    assert load_run_config(tmp_path / "config.yaml").prior.object == "car"
    assert run_settings(load_run_config(tmp_path / "config.yaml")) == run_settings(car)  # a batch sees the same run
    for prompt in ("a red car", "a plush dragon toy"):
        old = dict(saved, prompt=prompt, prior={k: v for k, v in saved["prior"].items() if k != "object"})
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
        run = load_run_config(tmp_path / "config.yaml")
        assert run.prior.object == "head"
        run.validate()  # resumable: no refusal of its prompt
        _, _, reference_views, _ = _synthetic_reference(run, torch.device("cpu"))
        head = render_images(builtin_head(), _benchmark_turntable(), run.resolution, background=1.0)
        assert torch.equal(reference_views, head)


def test_prior_object_shows_a_named_object_whatever_the_prompt():
    from esd_gs.cli.main import parse_args

    run = parse_args(["generate", "something", "--preset", "synthetic", "--prior.object", "mug"])
    assert run.prior.references(run.prompt) == (["something"], ["mug"])
    with pytest.raises(UserError, match="--prior.object must be one of head, car"):
        dataclasses.replace(run.prior, object="dragon").references("something")


def test_bench_janus_defaults_are_the_presets_and_lambda_1():
    """With no option, ``bench janus`` runs SDS, VSD and ESD at lambda 1 with both psis (12 runs for 3 seeds), and
    each prior's runs take its preset's schedule and psi updates: DreamTime and four on the exact prior, the uniform
    schedule and one for the fitted UNet's LoRA psi; a flag still wins."""
    from esd_gs.bench.janus import BenchRun, bench_base_config
    from esd_gs.cli.bench_cmd import BenchArgs, bench_configs
    from esd_gs.cli.main import parse_args

    args = parse_args(["bench", "janus"])
    assert isinstance(args, BenchArgs) and (args.timesteps, args.psi_steps, args.seeds) == (None, None, 3)
    assert bench_configs(args) == [
        BenchRun("sds", 0.0, "-"),
        BenchRun("vsd", 0.0, "learned"),
        BenchRun("esd", 1.0, "learned"),
        BenchRun("esd", 1.0, "particle"),
    ]
    exact = bench_base_config(args.steps, prior=args.prior, timesteps=args.timesteps, psi_steps=args.psi_steps)
    assert (exact.timesteps.name, exact.psi.name, exact.psi.train_steps_per_iter) == ("dreamtime", "residual", 4)
    unet = bench_base_config(prior="synthetic-unet")
    assert (unet.timesteps.name, unet.psi.name, unet.psi.train_steps_per_iter) == ("uniform", "lora", 1)
    flagged = bench_base_config(timesteps="uniform", psi_steps=1)
    assert (flagged.timesteps.name, flagged.psi.train_steps_per_iter) == ("uniform", 1)
