"""phi, psi and the SDS / VSD / ESD step on a tiny Stable Diffusion built offline and loaded via from_pretrained."""

import pytest
import torch

from esd_gs.cameras import OrbitSampler
from esd_gs.diffusion import eps_from_prediction
from esd_gs.distillation import DistillationConfig, ScoreDistillation
from esd_gs.distillation.rule import weight_of_t
from esd_gs.distillation.timesteps import TimestepSchedule
from esd_gs.errors import UserError
from esd_gs.estimators import CameraLoRAEstimator, LoRAPsiConfig
from esd_gs.initial import BallInit
from esd_gs.priors import RunContext, StableDiffusionConfig, StableDiffusionPrior
from esd_gs.render import render
from esd_gs.testing.tiny_sd import build_tiny_stable_diffusion

PROMPT = "a head"


@pytest.fixture(scope="module")
def tiny_eps(tmp_path_factory):
    return build_tiny_stable_diffusion(tmp_path_factory.mktemp("sd") / "tiny-eps", "epsilon", seed=0)


@pytest.fixture(scope="module")
def tiny_v(tmp_path_factory):
    return build_tiny_stable_diffusion(tmp_path_factory.mktemp("sd") / "tiny-v", "v_prediction", seed=1)


def make(path, method="esd", lam=0.5, psi_config=None, schedule=None, encoder="vae"):
    """ScoreDistillation on the tiny SD at ``path``, its prior built by prior:sd's config (``encoder``)."""
    context = RunContext(PROMPT, 64, OrbitSampler(), "random")  # what Stable Diffusion does not read
    prior = StableDiffusionConfig(model=str(path), encoder=encoder).build(torch.device("cpu"), context)
    text = prior.text_embeddings(PROMPT)
    config = DistillationConfig(method=method, lambda_entropy=lam, guidance_scale=7.5)
    psi = CameraLoRAEstimator.create(prior, psi_config or LoRAPsiConfig()) if config.needs_psi else None
    return ScoreDistillation(prior, text, config, schedule or TimestepSchedule(), psi)


def images_and_cameras(batch=2, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    cams = OrbitSampler().sample(batch, generator=g)
    images = torch.rand(batch, 3, size, size, generator=g).requires_grad_(True)
    return images, cams


def train_psi(distill, steps=5, seed=3):
    """A few psi updates with a raised learning rate so its LoRA and camera MLP move away from zero."""
    for group in distill.psi.optimizer.param_groups:
        group["lr"] = 1e-2
    images, cams = images_and_cameras(seed=seed)
    latents = distill.prior.encode_images(images).detach()
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        distill.psi.train_step(latents, distill.text.plain, cams.embedding(), gen)


def test_sds_gradient_is_weighted_cfg_eps_minus_injected_noise(tiny_eps):
    distill = make(tiny_eps, method="sds")
    prior = distill.prior
    images, cams = images_and_cameras()
    out = distill.step(images, cams, progress=0.1, generator=torch.Generator().manual_seed(42))

    # Recompute independently: same generator stream (timesteps, then noise), plain UNet calls.
    gen = torch.Generator().manual_seed(42)
    t = TimestepSchedule().sample(0.1, 2, prior.alphas_cumprod, generator=gen)
    noise = torch.randn(out.latents.shape, generator=gen)
    abar = prior.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = abar.sqrt() * out.latents + (1 - abar).sqrt() * noise
    cond = distill.text.conditional(cams.azimuth, cams.elevation)
    with torch.no_grad():
        eps_u = prior.unet(x_t, t, encoder_hidden_states=distill.text.negative.expand(2, -1, -1)).sample
        eps_c = prior.unet(x_t, t, encoder_hidden_states=cond).sample
    expected = (1 - abar) * (eps_u + 7.5 * (eps_c - eps_u) - noise)
    assert torch.equal(out.timesteps, t)
    assert torch.allclose(out.grad, expected, atol=1e-5)

    # The loss's gradient at the latents is grad / B: pulled back through the VAE it equals the VJP of the encoder.
    (d_images,) = torch.autograd.grad(out.loss, images)
    (vjp,) = torch.autograd.grad(prior.encode_images(images), images, grad_outputs=out.grad / 2)
    assert torch.allclose(d_images, vjp, atol=1e-6)


def test_esd_with_lambda_zero_equals_vsd(tiny_eps):
    results = []
    for method, lam in (("vsd", 0.5), ("esd", 0.0)):
        torch.manual_seed(0)  # identical LoRA / camera MLP initialisation
        distill = make(tiny_eps, method=method, lam=lam)
        train_psi(distill)
        images, cams = images_and_cameras(seed=5)
        out = distill.step(images, cams, progress=0.5, generator=torch.Generator().manual_seed(9))
        results.append((out.grad, out.loss.detach()))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])


def test_esd_bracket_is_lambda_mix_of_null_and_camera_psi(tiny_eps):
    distill = make(tiny_eps, method="esd", lam=0.3)
    train_psi(distill)
    prior, psi = distill.prior, distill.psi
    images, cams = images_and_cameras(seed=6)
    out = distill.step(images, cams, progress=0.0, generator=torch.Generator().manual_seed(11))

    gen = torch.Generator().manual_seed(11)
    t = distill.schedule.sample(0.0, 2, prior.alphas_cumprod, generator=gen)
    noise = torch.randn(out.latents.shape, generator=gen)
    x_t = prior.add_noise(out.latents, noise, t)
    cond = distill.text.conditional(cams.azimuth, cams.elevation)
    eps_phi = prior.eps(x_t, t, cond, distill.text.negative, 7.5)
    eps_cam = psi.eps(x_t, t, distill.text.plain, cams.embedding())
    eps_null = psi.eps(x_t, t, distill.text.plain, None)
    assert (eps_cam - eps_null).abs().max() > 1e-4  # the camera matters after training
    expected = weight_of_t(prior.alphas_cumprod, t).view(-1, 1, 1, 1) * (eps_phi - 0.3 * eps_null - 0.7 * eps_cam)
    assert torch.allclose(out.grad, expected, atol=1e-5)


def test_psi_starts_equal_to_phi_and_shared_unet_keeps_phi_clean(tiny_eps):
    distill = make(tiny_eps, method="esd")
    prior, psi = distill.prior, distill.psi
    clean = StableDiffusionPrior.from_pretrained(str(tiny_eps))
    gen = torch.Generator().manual_seed(1)
    x_t = torch.randn(2, 4, 8, 8, generator=gen)
    t = torch.tensor([100, 700])
    cams = OrbitSampler().sample(2, generator=gen).embedding()
    plain = distill.text.plain.expand(2, -1, -1)
    with torch.no_grad():
        phi_plain = clean.unet(x_t, t, encoder_hidden_states=plain).sample
    # Algorithm 1 initialises psi with phi: zero LoRA B and zero last camera layer make them equal.
    assert torch.allclose(psi.eps(x_t, t, distill.text.plain, cams), phi_plain, atol=1e-6)
    train_psi(distill)
    assert (psi.eps(x_t, t, distill.text.plain, cams) - phi_plain).abs().max() > 1e-4
    cond = distill.text.conditional(torch.tensor([0.0, 180.0]), torch.tensor([0.0, 0.0]))
    shared = prior.eps(x_t, t, cond, distill.text.negative, 7.5)
    reference = clean.eps(x_t, t, cond, distill.text.negative, 7.5)
    assert torch.equal(shared, reference)


def test_null_camera_rate_matches_p_null(tiny_eps):
    distill = make(tiny_eps, method="esd", psi_config=LoRAPsiConfig(p_null_camera=0.25))
    psi = distill.psi
    seen = []
    psi.camera_embedding.register_forward_hook(lambda module, inputs, output: seen.append(bool((inputs[0] == 0).all())))
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    cams = OrbitSampler().sample(1, generator=torch.Generator().manual_seed(1)).embedding()
    gen = torch.Generator().manual_seed(2)
    steps = 240
    for _ in range(steps):
        psi.train_step(latents, distill.text.plain, cams, gen)
    assert len(seen) == steps
    rate = sum(seen) / steps
    # Binomial(240, 0.25): standard deviation 0.028; allow 3.5 sigma.
    assert abs(rate - 0.25) < 0.1
    assert psi.null_rate_counter == [sum(seen), steps]


def test_v_prediction_conversion_matches_scheduler_identities(tiny_v):
    prior = StableDiffusionPrior.from_pretrained(str(tiny_v))
    assert prior.prediction_type == "v_prediction"
    gen = torch.Generator().manual_seed(0)
    z, noise = torch.randn(3, 4, 8, 8, generator=gen), torch.randn(3, 4, 8, 8, generator=gen)
    t = torch.tensor([1, 500, 999])
    x_t = prior.add_noise(z, noise, t)
    assert torch.allclose(x_t, prior.scheduler.add_noise(z, noise, t), atol=1e-5)
    v = prior.scheduler.get_velocity(z, noise, t)
    assert torch.allclose(eps_from_prediction(v, x_t, prior.alphas_cumprod, t, "v_prediction"), noise, atol=1e-4)
    assert torch.equal(eps_from_prediction(noise, x_t, prior.alphas_cumprod, t, "epsilon"), noise)


def test_separate_v_prediction_psi_base(tiny_eps, tiny_v):
    prior = StableDiffusionPrior.from_pretrained(str(tiny_eps))
    psi = CameraLoRAEstimator.create(prior, LoRAPsiConfig(shared_unet=False, base_model=str(tiny_v)))
    assert psi.prediction_type == "v_prediction" and psi.unet is not prior.unet
    text = prior.text_embeddings(PROMPT).plain
    gen = torch.Generator().manual_seed(4)
    z, noise = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 4, 8, 8, generator=gen)
    t = torch.tensor([200, 800])
    x_t = prior.add_noise(z, noise, t)
    with torch.no_grad():
        # LoRA B and the camera MLP's last layer are zero at init: psi's own UNet gives its base model's output.
        v = psi.unet(x_t, t, encoder_hidden_states=text.expand(2, -1, -1), class_labels=torch.zeros(2, 16)).sample
    abar = prior.alphas_cumprod[t].view(-1, 1, 1, 1)
    assert torch.allclose(psi.eps(x_t, t, text, None), (1 - abar).sqrt() * x_t + abar.sqrt() * v, atol=1e-5)
    loss = psi.train_step(z, text, torch.zeros(2, 16), torch.Generator().manual_seed(0))
    assert loss > 0


def test_gradient_reaches_every_scene_parameter(tiny_eps):
    distill = make(tiny_eps, method="esd")
    scene = BallInit(num_points=300, opacity=0.5, sh_degree=1).scene(generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        scene.params["shN"].normal_(0, 0.1)
        scene.params["scales"][:, 0] += 0.5  # anisotropic, so that rotations change the image
    cams = OrbitSampler().sample(2, generator=torch.Generator().manual_seed(1))
    out = render(scene, cams, 64, 64, background=0.5)
    step = distill.step(out.rgb, cams, progress=0.3, generator=torch.Generator().manual_seed(2))
    step.loss.backward()
    for key, param in scene.params.items():
        assert param.grad is not None and param.grad.abs().max() > 0, key
    assert distill.update_psi(step.latents, cams, torch.Generator().manual_seed(3)) > 0


def test_psi_save_and_reload_give_identical_outputs(tiny_eps, tmp_path):
    distill = make(tiny_eps, method="esd")
    train_psi(distill)
    path = tmp_path / "psi.safetensors"
    distill.psi.save(path)
    fresh = make(tiny_eps, method="esd")
    gen = torch.Generator().manual_seed(7)
    x_t, cams = torch.randn(2, 4, 8, 8, generator=gen), OrbitSampler().sample(2, generator=gen).embedding()
    t = torch.tensor([50, 950])
    before = fresh.psi.eps(x_t, t, fresh.text.plain, cams)
    fresh.psi.load(path)
    after = fresh.psi.eps(x_t, t, fresh.text.plain, cams)
    original = distill.psi.eps(x_t, t, distill.text.plain, cams)
    assert not torch.allclose(before, original)
    assert torch.equal(after, original)
    assert torch.equal(fresh.psi.eps(x_t, t, fresh.text.plain, None), distill.psi.eps(x_t, t, distill.text.plain, None))


def test_psi_base_with_another_noise_schedule_is_refused(tiny_eps, tmp_path):
    import json

    other = build_tiny_stable_diffusion(tmp_path / "other", "epsilon", seed=2)
    config_path = other / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    config["beta_end"] = 0.02
    config_path.write_text(json.dumps(config))
    prior = StableDiffusionPrior.from_pretrained(str(tiny_eps))
    with pytest.raises(UserError, match="same noise"):
        CameraLoRAEstimator.create(prior, LoRAPsiConfig(shared_unet=False, base_model=str(other)))


def test_bad_distillation_values_are_user_errors():
    with pytest.raises(UserError, match="lambda"):
        DistillationConfig(method="esd", lambda_entropy=1.5)
    with pytest.raises(UserError, match="unknown method"):
        DistillationConfig(method="dds")


def test_linear_encoder_is_the_least_squares_fit_of_the_vae(tiny_eps):
    prior = StableDiffusionPrior.from_pretrained(str(tiny_eps))
    weight, bias = prior.rgb_to_latent_map()
    assert weight.shape == (4, 3) and bias.shape == (4,)
    # Normal equations: on the fitting data the residual is orthogonal to every regressor (rgb and the constant).
    gen = torch.Generator().manual_seed(0)
    blocks = torch.rand(16, 3, 8, 8, generator=gen)
    with torch.no_grad():
        vae = prior.encode_images(blocks.repeat_interleave(8, 2).repeat_interleave(8, 3))
    residual = vae - prior.encode_images_linear(blocks)
    design = torch.cat([blocks, torch.ones(16, 1, 8, 8)], dim=1)
    normal = torch.einsum("bchw,blhw->cl", design.double(), residual.double())
    assert normal.abs().max() < 1e-3 * residual.abs().sum()
    # It is differentiable and used by the step when asked for (prior:sd's --prior.encoder linear).
    assert not make(tiny_eps, method="sds").prior.approximate_encoder
    distill = make(tiny_eps, method="sds", encoder="linear")
    assert distill.prior.approximate_encoder
    small = torch.rand(2, 3, 8, 8, generator=gen).requires_grad_(True)
    cams = OrbitSampler().sample(2, generator=gen)
    out = distill.step(small, cams, progress=0.0, generator=gen)
    assert out.latents.shape == (2, 4, 8, 8)
    (d_images,) = torch.autograd.grad(out.loss, small)
    expected = torch.einsum("lc,blhw->bchw", weight, out.grad / 2)
    assert torch.allclose(d_images, expected, atol=1e-6)
