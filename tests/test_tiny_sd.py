"""The tiny offline Stable Diffusion directory loads through the public from_pretrained path and behaves like SD."""

import json

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import CLIPTextModel, CLIPTokenizer  # noqa: E402

from esd_gs.testing.tiny_sd import build_tiny_stable_diffusion  # noqa: E402

PROMPT = "a plush dragon toy, front view"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The models are tiny: intra-op threading only adds overhead, and on a busy 2-core machine each parallel op
    can stall for milliseconds waiting on a preempted worker (measured: 0.85 s vs 7 ms per UNet forward)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=["epsilon", "v_prediction"])
def tiny_sd(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(f"tiny_sd_{request.param}")
    out = build_tiny_stable_diffusion(path, prediction_type=request.param)
    return out, request.param


def test_directory_layout(tiny_sd):
    path, _ = tiny_sd
    index = json.loads((path / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (path / name).is_dir()
        assert index[name][0] in ("diffusers", "transformers")
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    assert size < 5 * 2**20


def test_tokenizer_and_text_encoder(tiny_sd):
    path, _ = tiny_sd
    tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer")
    assert tokenizer.model_max_length == 77
    enc = tokenizer(PROMPT, padding="max_length", max_length=77, return_tensors="pt")
    ids = enc.input_ids
    assert ids.shape == (1, 77)
    assert ids[0, 0].item() == tokenizer.bos_token_id
    # Whole-word merges: <bos> a plush dragon toy , front view <eos>.
    tokens = tokenizer.convert_ids_to_tokens(ids[0, :9].tolist())
    assert tokens[1:8] == ["a</w>", "plush</w>", "dragon</w>", "toy</w>", ",</w>", "front</w>", "view</w>"]
    assert tokens[8] == "<|endoftext|>"
    decoded = tokenizer.decode(ids[0], skip_special_tokens=True)
    assert decoded.replace(" ", "") == PROMPT.replace(" ", "")
    assert tokenizer(decoded).input_ids == tokenizer(PROMPT).input_ids
    # Anything tokenizes (byte-level fallback), with no unknown tokens.
    odd = "Überhead víew #42 🐉"
    odd_ids = tokenizer(odd).input_ids
    assert tokenizer.unk_token_id not in odd_ids[1:-1]
    assert tokenizer.decode(odd_ids, skip_special_tokens=True).replace(" ", "") == odd.lower().replace(" ", "")

    text_encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder")
    assert text_encoder.config.vocab_size == len(tokenizer)
    assert text_encoder.config.eos_token_id == tokenizer.eos_token_id
    with torch.no_grad():
        hidden = text_encoder(ids).last_hidden_state
    assert hidden.shape == (1, 77, 32)
    assert torch.isfinite(hidden).all()


def test_vae_factor_8(tiny_sd):
    path, _ = tiny_sd
    vae = AutoencoderKL.from_pretrained(path, subfolder="vae")
    assert vae.config.scaling_factor == pytest.approx(0.18215)
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        mean = vae.encode(image).latent_dist.mean
        decoded = vae.decode(mean).sample
    assert mean.shape == (1, 4, 8, 8)
    assert decoded.shape == (1, 3, 64, 64)
    assert torch.isfinite(decoded).all()


@pytest.mark.parametrize("size", [8, 32])
def test_unet_forward(tiny_sd, size):
    path, _ = tiny_sd
    unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet")
    assert unet.time_embedding.linear_1.out_features == unet.config.block_out_channels[0] * 4
    attn_names = [n for n, _ in unet.named_modules() if n.endswith("attn2")]
    assert attn_names
    attn = unet.get_submodule(attn_names[0])
    for name in ("to_q", "to_k", "to_v"):
        assert isinstance(getattr(attn, name), torch.nn.Linear)
    assert isinstance(attn.to_out[0], torch.nn.Linear)

    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, size, size, generator=g)
    t = torch.tensor([20, 700])
    ctx = torch.randn(2, 77, 32, generator=g)
    with torch.no_grad():
        y = unet(x, t, encoder_hidden_states=ctx).sample
        y_shifted = unet(x + 0.5 * torch.randn(x.shape, generator=g), t, encoder_hidden_states=ctx).sample
        y_ctx = unet(x, t, encoder_hidden_states=ctx.flip(0)).sample
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    assert y.abs().mean() > 1e-3
    assert (y - y_shifted).abs().max() > 1e-4  # depends on the latent
    assert (y - y_ctx).abs().max() > 1e-6  # and on the text conditioning


def test_scheduler_is_sd21(tiny_sd):
    path, prediction_type = tiny_sd
    scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler")
    assert scheduler.config.prediction_type == prediction_type
    assert scheduler.config.num_train_timesteps == 1000
    assert scheduler.config.clip_sample is False
    assert scheduler.config.steps_offset == 1
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    expected = torch.cumprod(1 - betas, dim=0)
    torch.testing.assert_close(scheduler.alphas_cumprod.double(), expected, rtol=1e-5, atol=1e-6)


def test_pipeline_loads(tiny_sd):
    from diffusers import StableDiffusionPipeline

    path, prediction_type = tiny_sd
    pipe = StableDiffusionPipeline.from_pretrained(
        path, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    assert isinstance(pipe.unet, UNet2DConditionModel)
    assert isinstance(pipe.tokenizer, CLIPTokenizer)
    assert pipe.vae_scale_factor == 8
    assert pipe.scheduler.config.prediction_type == prediction_type


def test_deterministic_in_seed(tmp_path):
    state = torch.random.get_rng_state()
    a = build_tiny_stable_diffusion(tmp_path / "a", seed=3)
    b = build_tiny_stable_diffusion(tmp_path / "b", seed=3)
    c = build_tiny_stable_diffusion(tmp_path / "c", seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is untouched
    name = "unet/diffusion_pytorch_model.safetensors"
    assert (a / name).read_bytes() == (b / name).read_bytes()
    wa, wc = load_file(a / name), load_file(c / name)
    assert wa.keys() == wc.keys()
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)
    for sub in ("vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        assert (a / sub).read_bytes() == (b / sub).read_bytes()
