"""psi's loss weighting omega(t) (eq. 3, ``--psi.loss-weighting``): the x0 weighting is the MSE of psi's implied
clean image, for an eps and for a v network, and it is the loss psi's training step computes and descends."""

import pytest
import torch

from esd_gs.cameras import OrbitSampler
from esd_gs.diffusion import eps_from_prediction, loss_weight, prediction_target, sd_alphas_cumprod
from esd_gs.estimators import CameraLoRAEstimator, LoRAPsiConfig, ResidualPsiConfig
from esd_gs.estimators.residual import SyntheticResidualEstimator
from esd_gs.priors import StableDiffusionPrior, SyntheticPrior
from esd_gs.testing.tiny_sd import build_tiny_stable_diffusion


def implied_x0(output, x_t, alphas_cumprod, timesteps, prediction_type):
    """x_0 = (x_t - sigma_t eps) / alpha_t from a network's raw output (the forward process solved for z)."""
    eps = eps_from_prediction(output, x_t, alphas_cumprod, timesteps, prediction_type)
    abar = alphas_cumprod[timesteps].view(-1, 1, 1, 1)
    return (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_x0_weighting_is_the_mse_of_the_implied_clean_image(prediction_type):
    gen = torch.Generator().manual_seed(0)
    abar = sd_alphas_cumprod()
    timesteps = torch.tensor([0, 20, 300, 700, 999])
    z, noise, output = (torch.randn(5, 3, 4, 4, generator=gen) for _ in range(3))
    x_t = abar[timesteps].sqrt().view(-1, 1, 1, 1) * z + (1 - abar[timesteps]).sqrt().view(-1, 1, 1, 1) * noise
    target = prediction_target(z, noise, abar, timesteps, prediction_type)
    plain = (output - target).pow(2).flatten(1).mean(1)

    weighted = loss_weight(abar, timesteps, prediction_type, "x0") * plain
    x0_mse = (implied_x0(output, x_t, abar, timesteps, prediction_type) - z).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(weighted, x0_mse, rtol=1e-4, atol=1e-6)
    assert torch.equal(loss_weight(abar, timesteps, prediction_type, "prediction"), torch.ones(5))
    # the x0 weighting lowers the low-t samples against the high-t ones (sigma_t grows with t)
    w = loss_weight(abar, timesteps, prediction_type, "x0")
    assert bool((w[1:] > w[:-1]).all())


def lora_psi(tmp_path):
    """The LoRA psi of Stable Diffusion runs (an eps network), on a tiny SD loaded through from_pretrained."""
    path = build_tiny_stable_diffusion(tmp_path / "tiny", "epsilon", seed=0)
    prior = StableDiffusionPrior.from_pretrained(str(path), device="cpu")
    config = LoRAPsiConfig(p_null_camera=0.0, loss_weighting="x0", lr=1e-2)
    return CameraLoRAEstimator.create(prior, config), prior.text_embeddings("a head").plain, 4


def residual_psi(tmp_path):
    """The synthetic prior's residual psi (a v network) on an exact prior of 8 images."""
    prior = SyntheticPrior(torch.rand(8, 3, 8, 8) * 2 - 1, ["x"], torch.zeros(8), torch.device("cpu"))
    psi = SyntheticResidualEstimator(prior, ResidualPsiConfig(p_null_camera=0.0, loss_weighting="x0", lr=1e-2))
    return psi, prior.text_embeddings("x").plain, 3


@pytest.mark.parametrize("build", [lora_psi, residual_psi], ids=["lora-eps", "residual-v"])
def test_psi_training_step_returns_the_x0_loss_and_steps_on_it(tmp_path, build):
    """The loss train_step returns (before its update) is the x0 MSE of psi's own prediction, computed here
    independently with the same draws of t, noise and camera dropout; the step then lowers that same loss."""
    psi, text, channels = build(tmp_path)
    gen = torch.Generator().manual_seed(3)
    z = torch.rand(3, channels, 8, 8, generator=gen) * 2 - 1
    cams = OrbitSampler().sample(3, generator=gen).embedding()
    abar = psi.prior.alphas_cumprod

    def losses() -> tuple[float, float]:
        """(x0 MSE, plain MSE to the network's own target) at the draws of train_step's generator seed 5."""
        draws = torch.Generator().manual_seed(5)
        timesteps = torch.randint(0, psi.prior.num_train_timesteps, (3,), generator=draws)
        noise = torch.randn(z.shape, generator=draws)
        x_t = psi.prior.add_noise(z, noise, timesteps)
        with torch.no_grad():
            out = psi._forward(x_t, timesteps, text.expand(3, *text.shape[1:]), cams)
        x0 = implied_x0(out, x_t, abar, timesteps, psi.prediction_type)
        target = prediction_target(z, noise, abar, timesteps, psi.prediction_type)
        return float((x0 - z).pow(2).mean()), float((out - target).pow(2).mean())

    expected, plain = losses()
    loss = psi.train_step(z, text, cams, torch.Generator().manual_seed(5))
    assert loss == pytest.approx(expected, rel=1e-4)
    assert abs(loss - plain) > 1e-3 * plain  # the weighting changed the loss
    for _ in range(5):
        psi.train_step(z, text, cams, torch.Generator().manual_seed(5))
    assert losses()[0] < expected  # the steps descend the weighted loss on these draws
