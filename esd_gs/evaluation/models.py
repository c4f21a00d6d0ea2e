"""The pretrained models of ``esd-gs evaluate``: CLIP and an ImageNet classifier, through transformers.

Each is loaded with the library's own ``from_pretrained`` from a Hugging Face id or a local folder written by
``save_pretrained`` (model plus its tokenizer / image processor), once per process (``EvalModels`` keeps them), and
runs without gradient in float32. Views go in as [B, 3, H, W] float images in [0, 1]; they are rounded to 8-bit
pictures and prepared by the model's own image processor (its resize, crop and normalisation), as any picture is.
A model that cannot be had is one ``UserError`` line: what was tried, why it failed, which option to pass.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError
from ..priors.sources import hub_failure_reason, looks_like_path

DEFAULT_CLIP = "openai/clip-vit-base-patch32"
"""CLIP ViT-B/32 (151 M parameters): the CLIP similarity, the CLIP Fréchet distance and the side classifier."""
DEFAULT_CLASSIFIER = "microsoft/resnet-50"
"""ResNet-50 on ImageNet-1k (25.6 M parameters): p(y | x) of IQ and IV (eq. 10)."""


@contextlib.contextmanager
def _quiet():
    """No per-tensor loading bars or processor-backend notices from transformers around a load."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)


class ModelUnavailable(UserError):
    """A model of the evaluation that could not be loaded (``load_failure``'s line)."""


def load_failure(what: str, option: str, source: str, exc: BaseException) -> UserError:
    """The one line for a model that did not load."""
    if looks_like_path(source):
        if not Path(source).expanduser().exists():
            reason = "no such folder"
        else:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            reason = f"not a folder written by save_pretrained: {first}"
    else:
        reason = hub_failure_reason(exc)
    return ModelUnavailable(
        f"could not load the {what} '{source}' ({reason}); pass {option} with a local folder written by "
        "save_pretrained or another Hugging Face id, run `hf auth login` for a gated model, or check the network"
    )


def pixel_batches(image_processor, views: Tensor, batch: int, device: torch.device):
    """The views ``batch`` at a time, prepared by ``image_processor``: yields pixel_values tensors on ``device``."""
    for start in range(0, views.shape[0], batch):
        with _quiet():
            pixels = image_processor(images=to_pictures(views[start : start + batch]), return_tensors="pt")
        yield pixels.pixel_values.to(device)


def to_pictures(views: Tensor) -> list[np.ndarray]:
    """[B, 3, H, W] floats in [0, 1] -> B uint8 H x W x 3 pictures (what an image processor takes)."""
    pixels = (views.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return list(pixels.permute(0, 2, 3, 1).cpu().numpy())


class ClipModel:
    """CLIP's image and text towers: unit-length embeddings and the learned logit scale."""

    def __init__(self, model, tokenizer, image_processor, device: torch.device, batch: int = 32):
        self.model, self.tokenizer, self.image_processor = (
            model.eval().requires_grad_(False).to(device),
            tokenizer,
            image_processor,
        )
        self.device, self.batch = device, batch

    @classmethod
    def from_pretrained(cls, source: str, device: torch.device) -> ClipModel:
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        try:
            with _quiet():
                model = CLIPModel.from_pretrained(source, dtype=torch.float32)
                tokenizer = AutoTokenizer.from_pretrained(source)
                image_processor = AutoImageProcessor.from_pretrained(source)
        except Exception as exc:  # OSError, ValueError and the Hub client's transport errors
            raise load_failure("CLIP model", "--clip-model", source, exc) from None
        return cls(model, tokenizer, image_processor, device)

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())

    @torch.no_grad()
    def image_features(self, views: Tensor) -> Tensor:
        """[B, 3, H, W] in [0, 1] -> [B, D] unit-length image embeddings (CPU, float32)."""
        out = []
        for pixels in pixel_batches(self.image_processor, views, self.batch, self.device):
            features = _tensor(self.model.get_image_features(pixel_values=pixels))
            out.append(torch.nn.functional.normalize(features.float(), dim=-1).cpu())
        return torch.cat(out)

    @torch.no_grad()
    def text_features(self, texts: list[str]) -> Tensor:
        """Texts -> [T, D] unit-length text embeddings (CPU, float32)."""
        tokens = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt").to(self.device)
        features = _tensor(
            self.model.get_text_features(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask)
        )
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu()


class ImageClassifier:
    """An image classifier p(y | x): softmax of its logits over its labels."""

    def __init__(self, model, image_processor, device: torch.device, batch: int = 32):
        self.model, self.image_processor = model.eval().requires_grad_(False).to(device), image_processor
        self.device, self.batch = device, batch

    @classmethod
    def from_pretrained(cls, source: str, device: torch.device) -> ImageClassifier:
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        try:
            with _quiet():
                model = AutoModelForImageClassification.from_pretrained(source, dtype=torch.float32)
                image_processor = AutoImageProcessor.from_pretrained(source)
        except Exception as exc:
            raise load_failure("image classifier", "--classifier", source, exc) from None
        return cls(model, image_processor, device)

    @property
    def num_labels(self) -> int:
        return int(self.model.config.num_labels)

    @torch.no_grad()
    def probabilities(self, views: Tensor) -> Tensor:
        """[B, 3, H, W] in [0, 1] -> [B, num_labels] class probabilities (CPU, float32)."""
        out = []
        for pixels in pixel_batches(self.image_processor, views, self.batch, self.device):
            logits = self.model(pixel_values=pixels).logits
            out.append(torch.softmax(logits.float(), dim=-1).cpu())
        return torch.cat(out)


def _tensor(output) -> Tensor:
    """get_*_features returns the embeddings, or (in some transformers versions) an output holding them."""
    if isinstance(output, Tensor):
        return output
    for name in ("image_embeds", "text_embeds", "pooler_output"):
        value = getattr(output, name, None)
        if value is not None:
            return value
    raise TypeError(f"unexpected CLIP output {type(output).__name__}")


MODEL_NAMES = {"clip": "CLIP", "classifier": "the image classifier", "stable_diffusion": "Stable Diffusion"}
"""How the start-up lines name each kind of evaluation model."""


class EvalModels:
    """The models of one evaluate / compare command, each loaded on first use and reused for every run."""

    def __init__(self, device: torch.device, precision: str = "auto"):
        self.device, self.precision = device, precision
        self._loaded: dict[tuple[str, str], object] = {}
        self.loads: dict[str, int] = {}
        """How many times each kind was loaded (tests check the models are loaded once)."""

    def cached(self, key: tuple, build, label: str | None = None):
        """``build()`` once per ``key`` = (kind, source), named by a start-up line (``progress.stage``: ``label``, or
        the kind and its source); later calls return the same object."""
        if key not in self._loaded:
            from ..progress import stage

            with stage(label or f"loading {MODEL_NAMES.get(key[0], key[0])} ({key[1]})"):
                self._loaded[key] = build()
            self.loads[key[0]] = self.loads.get(key[0], 0) + 1
        return self._loaded[key]

    def clip(self, source: str) -> ClipModel:
        return self.cached(("clip", source), lambda: ClipModel.from_pretrained(source, self.device))

    def classifier(self, source: str) -> ImageClassifier:
        return self.cached(("classifier", source), lambda: ImageClassifier.from_pretrained(source, self.device))

    def stable_diffusion(self, model: str):
        from ..priors import StableDiffusionPrior

        def load():
            return StableDiffusionPrior.from_pretrained(model, device=self.device, precision=self.precision)

        return self.cached(("stable_diffusion", model), load)
