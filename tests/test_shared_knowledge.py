"""The facts many parts rely on, each defined once: checked against known answers and independent libraries."""

import numpy as np
import pytest
import torch

from esd_gs.cameras import EMBEDDING_SIZE, null_embedding, turntable, wrap_azimuth
from esd_gs.diffusion import (
    SD_BETA_SCHEDULE,
    add_noise,
    alpha_sigma,
    eps_from_prediction,
    prediction_target,
    sd_alphas_cumprod,
)
from esd_gs.example import make_head_scene
from esd_gs.render.views import render_images, render_views
from esd_gs.sh import sh_degree_of
from esd_gs.video import turntable_sheet


def test_sd_beta_schedule_is_diffusers_own():
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(**SD_BETA_SCHEDULE)
    assert torch.allclose(sd_alphas_cumprod(), scheduler.alphas_cumprod.float(), atol=1e-7)


def test_forward_process_and_predictions_invert_each_other():
    gen = torch.Generator().manual_seed(0)
    abar = sd_alphas_cumprod()
    z, noise = torch.randn(3, 4, 8, 8, generator=gen), torch.randn(3, 4, 8, 8, generator=gen)
    t = torch.tensor([0, 500, 999])
    alpha, sigma = alpha_sigma(abar, t, z.dim())
    assert alpha.shape == (3, 1, 1, 1) and torch.allclose(alpha**2 + sigma**2, torch.ones(3, 1, 1, 1))
    x_t = add_noise(abar, z, noise, t)
    assert torch.allclose(x_t, alpha * z + sigma * noise)
    for kind in ("epsilon", "v_prediction"):  # a perfect network's output gives back the noise exactly
        target = prediction_target(z, noise, abar, t, kind)
        assert torch.allclose(eps_from_prediction(target, x_t, abar, t, kind), noise, atol=1e-5)
    from diffusers import DDPMScheduler

    v = DDPMScheduler(**SD_BETA_SCHEDULE).get_velocity(z, noise, t)
    assert torch.allclose(prediction_target(z, noise, abar, t, "v_prediction"), v, atol=1e-5)


def test_azimuth_wrap_and_null_camera():
    az = torch.tensor([0.0, 179.0, 180.0, 190.0, -180.0, -190.0, 540.0, 720.0])
    assert wrap_azimuth(az).tolist() == [0.0, 179.0, -180.0, -170.0, -180.0, 170.0, -180.0, 0.0]
    assert torch.equal(null_embedding(3), torch.zeros(3, EMBEDDING_SIZE))
    assert turntable(8).embedding().shape == (8, EMBEDDING_SIZE)


@pytest.mark.parametrize(("coeffs", "degree"), [(1, 0), (4, 1), (9, 2), (16, 3)])
def test_sh_degree_from_coefficient_count(coeffs, degree):
    assert sh_degree_of(coeffs) == degree


@pytest.mark.parametrize("coeffs", [0, 2, 5, 15, 25])
def test_sh_degree_refuses_counts_that_are_not_squares_up_to_16(coeffs):
    with pytest.raises(ValueError):
        sh_degree_of(coeffs)


def test_float_views_are_the_frames_before_their_8_bit_rounding():
    scene = make_head_scene(400, seed=1)
    cams = turntable(6)
    images = render_images(scene, cams, 24)
    frames = render_views(scene, cams, 24)
    assert images.dtype == torch.float32 and images.shape == (6, 3, 24, 24)
    rounded = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(rounded, frames)
    assert not torch.equal(images, torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255)  # finer than 8 bits


def test_turntable_sheet_picks_evenly_from_the_front():
    frames = np.stack([np.full((4, 4, 3), i, np.uint8) for i in range(12)])
    sheet = turntable_sheet(frames, count=4, max_columns=8)
    pad = 2
    picked = [int(sheet[pad, pad + c * (4 + pad), 0]) for c in range(4)]
    assert picked == [0, 3, 6, 9] and sheet.shape == (4 + 2 * pad, 4 * (4 + pad) + pad, 3)
