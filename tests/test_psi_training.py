"""psi's LoRA really trains (shared and separate UNet), phi stays clean, and precision does not spoil the gradients.

Each test here asserts the effect of a mechanism, not only that it ran: LoRA weights that must train have a gradient
and move, a loss that must fall falls, a pass that must stay clean is unchanged, fp16 gradients match fp32 ones.
"""

import pytest
import torch

from esd_gs.cameras import OrbitSampler
from esd_gs.distillation import DistillationConfig, ScoreDistillation
from esd_gs.distillation.timesteps import TimestepSchedule
from esd_gs.estimators import CameraLoRAEstimator, LoRAPsiConfig
from esd_gs.priors import StableDiffusionPrior
from esd_gs.testing.tiny_sd import build_tiny_stable_diffusion

PROMPT = "a head"


@pytest.fixture(scope="module")
def tiny_eps(tmp_path_factory):
    return build_tiny_stable_diffusion(tmp_path_factory.mktemp("sd") / "tiny-eps", "epsilon", seed=0)


def load_prior(path, dtype=torch.float32) -> StableDiffusionPrior:
    """The tiny prior through from_pretrained; other dtypes by casting its modules (fp16 is refused on CPU by the
    CLI's precision option, but the arithmetic is what matters here)."""
    prior = StableDiffusionPrior.from_pretrained(str(path), device="cpu")
    if dtype != torch.float32:
        for module in (prior.unet, prior.vae, prior.text_encoder):
            module.to(dtype)
        prior.dtype = dtype
    return prior


def lora_b(psi) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in psi.unet.named_parameters() if "lora_B" in name}


def fixed_batch(batch=2, size=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, 4, size, size, generator=gen)
    cams = OrbitSampler().sample(batch, generator=gen).embedding()
    return latents, cams


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "separate"])
def test_one_psi_step_gives_every_lora_b_a_gradient_and_moves_it(tiny_eps, shared):
    torch.manual_seed(0)
    prior = load_prior(tiny_eps)
    psi = CameraLoRAEstimator.create(prior, LoRAPsiConfig(shared_unet=shared, p_null_camera=0.0))
    text = prior.text_embeddings(PROMPT).plain
    weights = lora_b(psi)
    assert weights and all(float(p.abs().max()) == 0.0 for p in weights.values())  # B = 0: psi starts as phi
    # An ESD-like order of passes: phi's (no-grad) pass switches the shared UNet to phi before psi trains.
    latents, cams = fixed_batch()
    with torch.no_grad():
        prior.eps(latents, torch.tensor([500, 500]), text.expand(2, -1, -1), text, 7.5)
    psi.train_step(latents, text, cams, torch.Generator().manual_seed(1))
    for name, param in weights.items():
        assert param.grad is not None and float(param.grad.abs().max()) > 0, name
        assert float(param.abs().max()) > 0, name
    assert all(p.requires_grad for p in weights.values())


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "separate"])
@pytest.mark.parametrize("rank", [2, 4])
def test_lora_starts_as_the_reference_a_gaussian_of_std_one_over_rank_and_b_zero(tiny_eps, shared, rank):
    """threestudio's LoRA (ProlificDreamer, ESD; diffusers' ``LoRALinearLayer``) draws A ~ N(0, (1/r)^2) and B = 0,
    so psi equals its base at step 0. peft's default A (kaiming-uniform, std 1/sqrt(3 * fan_in): 0.07 to 0.10 on
    this UNet, 0.016 to 0.032 on Stable Diffusion) is what esd-gs drew before; ``--psi.lora-init kaiming`` keeps it."""
    torch.manual_seed(0)
    prior = load_prior(tiny_eps)
    text = prior.text_embeddings(PROMPT).plain
    latents, cams = fixed_batch(batch=2, seed=5)
    timesteps = torch.tensor([300, 700])
    with torch.no_grad():
        base = prior.unet(latents, timesteps, encoder_hidden_states=text.expand(2, -1, -1)).sample
    psi = CameraLoRAEstimator.create(prior, LoRAPsiConfig(shared_unet=shared, lora_rank=rank, lora_alpha=rank))
    a_matrices = {name: p.detach() for name, p in psi.unet.named_parameters() if "lora_A" in name}
    assert len(a_matrices) == len(lora_b(psi)) > 0
    target = 1.0 / rank
    for name, weight in a_matrices.items():
        assert weight.shape[0] == rank, name
        assert abs(float(weight.std()) - target) < 0.3 * target, (name, float(weight.std()))
    pooled = torch.cat([p.flatten() for p in a_matrices.values()])
    assert abs(float(pooled.std()) - target) < 0.05 * target, float(pooled.std())
    assert abs(float(pooled.mean())) < 0.05 * target
    assert all(float(p.abs().max()) == 0.0 for p in lora_b(psi).values())
    assert torch.equal(psi.eps(latents, timesteps, text, cams), base)  # psi == its base at step 0, camera or not
    assert torch.equal(psi.eps(latents, timesteps, text, None), base)

    kaiming = CameraLoRAEstimator.create(load_prior(tiny_eps), LoRAPsiConfig(shared_unet=shared, lora_init="kaiming"))
    for name, weight in kaiming.unet.named_parameters():
        if "lora_A" in name:  # kaiming-uniform with a = sqrt(5): |A| <= 1/sqrt(fan_in)
            assert float(weight.abs().max()) <= weight.shape[1] ** -0.5, name


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "separate"])
def test_psi_lowers_its_own_denoising_loss_through_the_lora(tiny_eps, shared):
    """50 steps on a fixed set of latents, camera MLP frozen: only the LoRA can lower the loss (eq. 3)."""
    torch.manual_seed(0)
    prior = load_prior(tiny_eps)
    psi = CameraLoRAEstimator.create(prior, LoRAPsiConfig(shared_unet=shared, lr=3e-3))
    psi.camera_embedding.requires_grad_(False)
    text = prior.text_embeddings(PROMPT).plain
    latents, cams = fixed_batch(batch=2, seed=3)

    gen = torch.Generator().manual_seed(7)
    eval_t = torch.tensor([100, 300, 500, 700, 900]).repeat_interleave(2)
    eval_noise = torch.randn(10, *latents.shape[1:], generator=gen)
    eval_z = latents.repeat(5, 1, 1, 1)

    def held_loss() -> float:
        x_t = prior.add_noise(eval_z, eval_noise, eval_t)
        with torch.no_grad():  # phi's pass in between, as in a real step, must not matter
            prior.eps(x_t[:2], eval_t[:2], text.expand(2, -1, -1), text, 7.5)
        eps = psi.eps(x_t, eval_t, text, cams.repeat(5, 1))
        return float(torch.nn.functional.mse_loss(eps, eval_noise))

    before = held_loss()
    train_gen = torch.Generator().manual_seed(11)
    for _ in range(50):
        psi.train_step(latents, text, cams, train_gen)
    after = held_loss()
    assert after < 0.9 * before, (before, after)


def test_phi_is_unchanged_by_psi_training_in_the_shared_unet(tiny_eps):
    torch.manual_seed(0)
    prior = load_prior(tiny_eps)
    psi = CameraLoRAEstimator.create(prior, LoRAPsiConfig(lr=1e-2))
    text = prior.text_embeddings(PROMPT)
    gen = torch.Generator().manual_seed(2)
    x_t = torch.randn(2, 4, 8, 8, generator=gen)
    t = torch.tensor([150, 750])
    cond = text.views[[0, 2]]
    before = prior.eps(x_t, t, cond, text.negative, 7.5)
    psi_before = psi.eps(x_t, t, text.plain, None)
    latents, cams = fixed_batch(seed=4)
    for _ in range(5):
        psi.train_step(latents, text.plain, cams, gen)
    after = prior.eps(x_t, t, cond, text.negative, 7.5)
    assert (psi.eps(x_t, t, text.plain, None) - psi_before).abs().max() > 1e-3  # psi did move
    assert all(float(p.detach().abs().max()) > 0 for p in lora_b(psi).values())  # through its LoRA too
    assert torch.allclose(after, before, atol=1e-6)


def test_adapters_switch_once_per_change_of_role_not_per_pass(tiny_eps, monkeypatch):
    from peft.tuners.tuners_utils import BaseTunerLayer

    torch.manual_seed(0)
    prior = load_prior(tiny_eps)
    config = DistillationConfig(method="esd", lambda_entropy=0.5)
    psi = CameraLoRAEstimator.create(prior, LoRAPsiConfig())
    distill = ScoreDistillation(prior, prior.text_embeddings(PROMPT), config, TimestepSchedule(), psi)

    def whole_unet_walk(*args, **kwargs):
        raise AssertionError("the whole UNet was walked to toggle adapters")

    monkeypatch.setattr(type(prior.unet), "disable_adapters", whole_unet_walk)
    monkeypatch.setattr(type(prior.unet), "enable_adapters", whole_unet_walk)
    calls = []
    original = BaseTunerLayer.enable_adapters
    monkeypatch.setattr(BaseTunerLayer, "enable_adapters", lambda self, on: (calls.append(on), original(self, on)))

    layers = len(psi.roles.lora_layers)
    assert layers > 0
    gen = torch.Generator().manual_seed(0)
    cams = OrbitSampler().sample(2, generator=gen)
    for step in range(3):
        images = torch.rand(2, 3, 64, 64, generator=gen, requires_grad=True)
        out = distill.step(images, cams, progress=0.5, generator=gen)
        out.loss.backward()
        distill.update_psi(out.latents, cams, generator=gen)
        # phi's CFG pass: one switch to phi; psi's camera+null pass and its training: one switch back.
        assert calls == [False] * layers + [True] * layers, step
        calls.clear()


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


def test_fp16_psi_gradients_match_fp32_ones(tiny_eps):
    """At 64x64 latents the fp16 UNet's LoRA gradients underflow without loss scaling."""
    grads = {}
    for dtype in (torch.float32, torch.float16):
        torch.manual_seed(0)
        prior = load_prior(tiny_eps, dtype)
        psi = CameraLoRAEstimator.create(prior, LoRAPsiConfig())  # the gradients are read before any step uses them
        gen = torch.Generator().manual_seed(5)
        with torch.no_grad():  # the same non-zero LoRA B and camera layer in both, so every gradient is non-zero
            for param in lora_b(psi).values():
                param.copy_(0.05 * torch.randn(param.shape, generator=gen))
            last = psi.camera_embedding.linear_2.weight
            last.copy_(0.05 * torch.randn(last.shape, generator=gen))
        latents = torch.randn(1, 4, 64, 64, generator=gen)
        cams = OrbitSampler().sample(1, generator=gen).embedding()
        psi.train_step(latents, prior.text_embeddings(PROMPT).plain, cams, torch.Generator().manual_seed(6))
        lora = torch.cat([p.grad.flatten() for n, p in psi.unet.named_parameters() if "lora_" in n])
        camera = torch.cat([p.grad.flatten() for p in psi.camera_embedding.parameters()])
        grads[dtype] = (lora, camera, psi.grad_scaler.is_enabled())
    (lora32, camera32, scaled32), (lora16, camera16, scaled16) = grads[torch.float32], grads[torch.float16]
    assert not scaled32 and scaled16  # the scaler runs only for fp16
    assert cosine(lora16, lora32) > 0.999
    assert cosine(camera16, camera32) > 0.999
    assert float((lora16 - lora32).norm() / lora32.norm()) < 0.01


def test_bf16_step_keeps_latents_float32_and_the_target_trick_exact(tiny_eps, monkeypatch):
    prior = StableDiffusionPrior.from_pretrained(str(tiny_eps), device="cpu", precision="bf16")
    config = DistillationConfig(method="sds", guidance_scale=7.5)
    distill = ScoreDistillation(prior, prior.text_embeddings(PROMPT), config, TimestepSchedule())
    captured = []
    encode = prior.encode_images

    def capturing_encode(images):
        latents = encode(images)
        latents.retain_grad()
        captured.append(latents)
        return latents

    monkeypatch.setattr(prior, "encode_images", capturing_encode)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 64, 64, generator=gen, requires_grad=True)
    cams = OrbitSampler().sample(2, generator=gen)
    out = distill.step(images, cams, progress=0.9, generator=torch.Generator().manual_seed(1))
    out.loss.backward()
    (latents,) = captured
    assert latents.dtype == torch.float32 and out.latents.dtype == torch.float32
    expected = out.grad / 2
    assert float((latents.grad - expected).abs().max()) <= 1e-3 * float(expected.abs().max())


def test_steps_the_fp16_loss_scaler_skips_are_counted_and_checkpointed(tiny_eps):
    """A scale so large that the fp16 gradients overflow: the scaler skips the step (psi does not move) and halves its
    scale, and ``scaler_skipped`` counts it; a sane scale trains again without counting. Resume keeps the count."""
    torch.manual_seed(0)
    prior = load_prior(tiny_eps, torch.float16)
    psi = CameraLoRAEstimator.create(prior, LoRAPsiConfig())
    assert psi.grad_scaler.is_enabled() and psi.scaler_skipped == 0
    psi.grad_scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)
    text = prior.text_embeddings(PROMPT).plain
    latents, cams = fixed_batch()
    gen = torch.Generator().manual_seed(1)
    for _ in range(2):
        psi.train_step(latents, text, cams, gen)
    assert psi.scaler_skipped == 2 and psi.grad_scaler.get_scale() == 2.0**38
    assert all(float(p.abs().max()) == 0.0 for p in lora_b(psi).values())  # both steps skipped
    psi.grad_scaler.update(new_scale=2.0**10)
    psi.train_step(latents, text, cams, gen)
    assert psi.scaler_skipped == 2 and any(float(p.abs().max()) > 0.0 for p in lora_b(psi).values())
    tensors, meta = psi.checkpoint_state()
    assert meta["scaler_skipped"] == 2
    psi.scaler_skipped = 0
    psi.load_checkpoint_state(tensors, meta)
    assert psi.scaler_skipped == 2
