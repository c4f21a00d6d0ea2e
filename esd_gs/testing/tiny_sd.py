"""A tiny, randomly initialised Stable Diffusion (2.x-like, or 1.x-like) pipeline directory, built offline from configs.

Why: the guidance code loads its prior phi through the public diffusers / transformers ``from_pretrained`` path
(``UNet2DConditionModel.from_pretrained(path, subfolder="unet")`` and friends). Tests and benchmarks must exercise
exactly that path, with real library objects (real ``Attention`` modules with ``to_q`` / ``to_k`` / ``to_v`` /
``to_out.0`` for LoRA, the real VAE with its factor-8 downsampling, the real CLIP tokenizer and text encoder, the real
DDPM schedule), yet run without network access and in seconds on a CPU. Real checkpoints are gigabytes and need the
Hugging Face Hub, so instead we build the same architecture at toy width from configs, initialise it from a fixed seed
and write it with ``save_pretrained``. The weights are random: the model is structurally faithful, not a useful prior.

What is built (``path`` then holds a standard diffusers pipeline directory with a ``model_index.json``):

- ``unet``: ``UNet2DConditionModel`` with block_out_channels (32, 64), one cross-attention down block and one
  cross-attention up block plus the cross-attention mid block, head dimension 8, time-embedding width 4 * 32 = 128,
  4 latent channels in and out; linear transformer projections for the 2.x family, 1x1 convolutions for 1.x.
- ``vae``: ``AutoencoderKL`` with 4 encoder / decoder blocks, hence the same spatial factor 8 as SD, 4 latent
  channels, scaling_factor 0.18215.
- ``text_encoder`` / ``tokenizer``: a 2-layer ``CLIPTextModel`` (hidden size = the UNet's cross_attention_dim: 32
  for the 2.x family, 24 for 1.x, as 1024 and 768 in the real models; gelu for 2.x's OpenCLIP tower, quick_gelu for
  1.x's CLIP) and a
  byte-level BPE ``CLIPTokenizer`` with a small generated vocabulary (all 256 byte symbols, with and without the
  ``</w>`` end-of-word marker, so any prompt tokenizes; a few whole-word merges), model_max_length 77.
- ``scheduler``: ``DDPMScheduler`` with SD 2.1's training schedule (1000 steps, scaled_linear betas from 0.00085 to
  0.012) and the requested prediction type.

The same seed gives bit-identical weight files (initialisation runs under ``torch.random.fork_rng``, so the caller's
global RNG is left untouched).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch

from ..diffusion import SD_BETA_SCHEDULE, PredictionType

Family = Literal["sd1", "sd2"]
TEXT_WIDTH: dict[str, int] = {"sd1": 24, "sd2": 32}
"""Tiny text widths of the two families (the real ones: 768 for SD 1.x, 1024 for SD 2.x)."""

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"
MODEL_MAX_LENGTH = 77

# Whole words that get their own token (everything else falls back to sub-word / byte pieces).
TINY_VOCAB_WORDS: tuple[str, ...] = (
    "a",
    "an",
    "the",
    "of",
    "and",
    "view",
    "front",
    "back",
    "side",
    "overhead",
    "head",
    "photo",
    "toy",
    "plush",
    "dragon",
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP's reversible map from bytes to printable unicode characters (the ByteLevel alphabet)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _apply_merges(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Plain BPE: repeatedly merge the adjacent pair with the lowest rank."""
    symbols = list(symbols)
    while len(symbols) > 1:
        pairs = [(ranks.get((a, b)), i) for i, (a, b) in enumerate(zip(symbols[:-1], symbols[1:]))]
        pairs = [(r, i) for r, i in pairs if r is not None]
        if not pairs:
            break
        _, i = min(pairs)
        symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
    return symbols


def tiny_clip_vocab(words: tuple[str, ...] = TINY_VOCAB_WORDS) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A small CLIP-style byte-level BPE vocabulary and merge list.

    Layout follows CLIP's: the 256 byte symbols, the same with ``</w>``, then merge results, then
    ``<|startoftext|>`` and ``<|endoftext|>`` last. Merges are chosen so that each of ``words`` becomes one token.
    """
    alphabet = list(_bytes_to_unicode().values())
    tokens = alphabet + [c + END_OF_WORD for c in alphabet]
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    known = set(tokens)
    for word in words:
        symbols = list(word[:-1]) + [word[-1] + END_OF_WORD]
        pieces = _apply_merges(symbols, ranks)
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            merged = pair[0] + pair[1]
            if merged not in known:
                known.add(merged)
                tokens.append(merged)
            pieces = [merged] + pieces[2:]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def tiny_clip_tokenizer(folder: Path):
    """A CLIPTokenizer on the tiny vocabulary, whose files are written into ``folder`` first."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(
        write_tiny_clip_tokenizer_files(folder),
        model_max_length=MODEL_MAX_LENGTH,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
    )


def write_tiny_clip_tokenizer_files(directory: str | Path) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` (with CLIP's ``#version`` header line) into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = tiny_clip_vocab()
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (directory / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


def tiny_unet_config(cross_attention_dim: int = 32, sample_size: int = 8, family: Family = "sd2") -> dict:
    """UNet2DConditionModel config: the SD 2.x layout (linear projections) or 1.x (conv projections), head dim 8,
    at toy width."""
    return dict(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        center_input_sample=False,
        flip_sin_to_cos=True,
        freq_shift=0,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        only_cross_attention=False,
        block_out_channels=(32, 64),
        layers_per_block=1,
        downsample_padding=1,
        mid_block_scale_factor=1,
        act_fn="silu",
        norm_num_groups=8,
        norm_eps=1e-5,
        cross_attention_dim=cross_attention_dim,
        # diffusers' (legacy) name: this is the number of heads per block, so 32/4 = 64/8 = head dim 8.
        attention_head_dim=(4, 8),
        use_linear_projection=family == "sd2",
        upcast_attention=False,
    )


def tiny_vae_config(sample_size: int = 64) -> dict:
    """AutoencoderKL config: 4 blocks (spatial factor 8, like SD), 4 latent channels, SD's scaling factor."""
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        act_fn="silu",
        latent_channels=4,
        norm_num_groups=8,
        sample_size=sample_size,
        scaling_factor=0.18215,
    )


def tiny_text_encoder_config(hidden_size: int = 32, vocab_size: int | None = None, family: Family = "sd2") -> dict:
    """CLIPTextConfig kwargs: 2 layers, 4 heads, ids consistent with :func:`tiny_clip_vocab`."""
    vocab, _ = tiny_clip_vocab()
    if vocab_size is None:
        vocab_size = len(vocab)
    return dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=37,
        projection_dim=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MODEL_MAX_LENGTH,
        hidden_act="gelu" if family == "sd2" else "quick_gelu",  # OpenCLIP ViT-H (2.x) vs OpenAI CLIP ViT-L (1.x)
        layer_norm_eps=1e-5,
        bos_token_id=vocab[BOS_TOKEN],
        eos_token_id=vocab[EOS_TOKEN],
        pad_token_id=vocab[EOS_TOKEN],
    )


def sd21_scheduler_config(prediction_type: PredictionType = "epsilon") -> dict:
    """DDPMScheduler config with Stable Diffusion 2.1's training noise schedule (``SD_BETA_SCHEDULE``)."""
    return dict(
        **SD_BETA_SCHEDULE,
        clip_sample=False,
        # SD 2.1's scheduler_config.json also carries set_alpha_to_one=False, a DDIM/PNDM-only option that
        # DDPMScheduler does not accept (and ignores when loading the real file), so it is left out here.
        steps_offset=1,
        prediction_type=prediction_type,
    )


def build_tiny_stable_diffusion(
    path: str | Path,
    prediction_type: PredictionType = "epsilon",
    seed: int = 0,
    sample_size: int = 8,
    cross_attention_dim: int | None = None,
    family: Family = "sd2",
) -> Path:
    """Build a tiny random SD 2.x-like (``family="sd2"``) or 1.x-like (``"sd1"``) pipeline and ``save_pretrained``
    it to ``path``; returns ``path``.

    ``sample_size`` is the UNet's latent size (the VAE's image size is 8x that); ``cross_attention_dim`` is also the
    text encoder's hidden size (default: the family's tiny width, ``TEXT_WIDTH``). Loads back with the usual
    ``from_pretrained(path, subfolder=...)`` calls and with
    ``StableDiffusionPipeline.from_pretrained(path, safety_checker=None, feature_extractor=None,
    requires_safety_checker=False)``. Deterministic in ``seed``.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if family not in TEXT_WIDTH:
        raise ValueError(f"family must be 'sd1' or 'sd2', got {family!r}")
    cross_attention_dim = TEXT_WIDTH[family] if cross_attention_dim is None else cross_attention_dim
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")
    if cross_attention_dim % 4 != 0:
        raise ValueError(f"cross_attention_dim must be divisible by 4 (text encoder heads), got {cross_attention_dim}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)

    # vocab.json / merges.txt stay in the saved tokenizer folder next to whatever save_pretrained writes
    # (transformers 5 writes only tokenizer.json; 4.x's slow CLIPTokenizer needs the two plain files).
    tokenizer = tiny_clip_tokenizer(path / "tokenizer")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**tiny_unet_config(cross_attention_dim, sample_size, family))
        # diffusers leaves conv_out at PyTorch's default init (not zero), but guard against a zero init anyway:
        # the output must depend on the input for tests to mean anything.
        if not unet.conv_out.weight.detach().abs().sum() > 0:
            torch.nn.init.normal_(unet.conv_out.weight, std=0.02)
        vae = AutoencoderKL(**tiny_vae_config(sample_size * 8))
        text_config = CLIPTextConfig(**tiny_text_encoder_config(cross_attention_dim, len(tokenizer), family))
        text_encoder = CLIPTextModel(text_config)

    scheduler = DDPMScheduler(**sd21_scheduler_config(prediction_type))
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return path


# ---------------------------------------------------------------------------------------------- full size
def sd21_base_unet_config() -> dict:
    """UNet2DConditionModel config of Stable Diffusion 2.1-base (865M parameters; 64x64 latents, text width 1024)."""
    return dict(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        attention_head_dim=(5, 10, 20, 20),
        cross_attention_dim=1024,
        use_linear_projection=True,
    )


def sd21_vae_config() -> dict:
    """AutoencoderKL config of Stable Diffusion (84M parameters, factor 8, 4 latent channels)."""
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
        scaling_factor=0.18215,
    )


def sd21_text_encoder_config(vocab_size: int, num_hidden_layers: int = 23) -> dict:
    """CLIPTextConfig kwargs of SD 2.x's OpenCLIP ViT-H text tower as diffusers ships it (23 of its 24 layers,
    width 1024, gelu), over the tiny vocabulary (ids from :func:`tiny_clip_vocab`)."""
    return tiny_text_encoder_config(1024, vocab_size, "sd2") | dict(
        intermediate_size=4096, num_hidden_layers=num_hidden_layers, num_attention_heads=16
    )


def build_full_size_stable_diffusion(
    path: str | Path, prediction_type: PredictionType = "epsilon", seed: int = 0, dtype: torch.dtype = torch.float16
) -> Path:
    """SD 2.1-base's architecture at full size with random weights, saved as a diffusers folder (weights in
    ``dtype``: 2.6 GB at fp16). For GPU acceptance runs and benchmarks: real shapes, memory and time, no download."""
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_clip_tokenizer(path / "tokenizer")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**sd21_base_unet_config()).to(dtype)
        vae = AutoencoderKL(**sd21_vae_config()).to(dtype)
        text_encoder = CLIPTextModel(CLIPTextConfig(**sd21_text_encoder_config(len(tokenizer)))).to(dtype)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDPMScheduler(**sd21_scheduler_config(prediction_type)),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return path
