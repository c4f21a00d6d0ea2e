"""Tiny, randomly initialised evaluation models (CLIP, an image classifier) written with ``save_pretrained``.

Why: ``esd-gs evaluate`` loads its models through transformers' ``from_pretrained`` from a Hub id or a local folder.
Tests and benchmarks exercise exactly that path offline, with real ``CLIPModel`` / ``ViTForImageClassification``
objects and their real tokenizer and image processors, at toy width (32 px images, 2 layers, width 32):

- ``build_tiny_clip``: ``CLIPModel`` (text and vision towers, projection 16) with the tiny byte-level BPE tokenizer
  of ``tiny_sd.py`` and a ``CLIPImageProcessor`` at 32 px;
- ``build_tiny_classifier``: ``ViTForImageClassification`` over ``num_labels`` labels with a ``ViTImageProcessor``.

The weights are random (deterministic in ``seed``; the caller's RNG is left untouched): the models are structurally
faithful, not useful judges.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .tiny_sd import MODEL_MAX_LENGTH, tiny_clip_tokenizer

IMAGE_SIZE = 32


def build_tiny_clip(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny CLIP (model, tokenizer, image processor) into ``path``; returns ``path``."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_clip_tokenizer(path / "tokenizer-files")
    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    config = CLIPConfig(
        text_config=dict(
            **tower,
            vocab_size=len(tokenizer),
            max_position_embeddings=MODEL_MAX_LENGTH,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(**tower, image_size=IMAGE_SIZE, patch_size=8),
        projection_dim=16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    ).save_pretrained(path)
    return path


def build_tiny_classifier(path: str | Path, num_labels: int = 10, seed: int = 0) -> Path:
    """Write a tiny ViT image classifier (model, image processor) over ``num_labels`` labels into ``path``."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = ViTConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=8,
        num_labels=num_labels,
        id2label={i: f"class {i}" for i in range(num_labels)},
        label2id={f"class {i}": i for i in range(num_labels)},
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ViTForImageClassification(config)
    model.save_pretrained(path)
    ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(path)
    return path
