"""Fréchet distance (FID, Heusel et al. 2017) between the rendered views and samples of the prior, by torchmetrics.

    FID = |mu_r - mu_g|^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))

over features of the two image sets (r: the prior's samples, g: the views). The statistics are torchmetrics'
``FrechetInceptionDistance``; the features are either

- ``inception``: the standard FID Inception-v3 pool features (2048), torchmetrics' default. Needs the package
  ``torch-fidelity`` (which needs torchvision) and downloads its weights once; the number then compares with papers.
- ``clip``: the unit-length image embeddings of the evaluation's CLIP model (``models.ClipModel``), passed to
  torchmetrics as its feature extractor: FID_CLIP (Kynkäänniemi et al. 2023). It runs offline with any CLIP
  folder; its values are on another scale than Inception FID and compare only with runs scored the same way.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ..errors import UserError

FidFeatures = Literal["clip", "inception"]

INCEPTION_HINT = (
    "--fid-features inception needs torch-fidelity (pip install torch-fidelity) and its Inception weights "
    "(downloaded once from GitHub); offline, use --fid-features clip"
)


class ClipImageFeatures(torch.nn.Module):
    """A CLIP model's image embeddings as a torchmetrics feature extractor: [B, 3, H, W] in [0, 1] -> [B, D]."""

    def __init__(self, clip):
        super().__init__()
        self.clip = clip
        self.num_features = int(clip.model.config.projection_dim)

    def forward(self, images: Tensor) -> Tensor:
        return self.clip.image_features(images)


def fid_metric(features: FidFeatures | torch.nn.Module, clip=None):
    """A fresh torchmetrics ``FrechetInceptionDistance`` on ``features`` (inputs: float images in [0, 1]): "clip",
    "inception", or any feature module (images -> [B, D])."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError:
        raise UserError("FID needs torchmetrics: pip install 'esd-gs[eval]'") from None
    if isinstance(features, torch.nn.Module):
        return FrechetInceptionDistance(feature=features, normalize=True)
    if features == "clip":
        if clip is None:
            raise ValueError("clip features need a CLIP model")
        return FrechetInceptionDistance(feature=ClipImageFeatures(clip), normalize=True)
    try:
        return FrechetInceptionDistance(feature=2048, normalize=True)
    except (ModuleNotFoundError, ImportError, OSError, RuntimeError) as exc:  # no torch-fidelity, or no weights
        raise UserError(f"{INCEPTION_HINT} ({type(exc).__name__})") from None


def frechet_distance(
    real: Tensor, generated: Tensor, features: FidFeatures | torch.nn.Module = "clip", clip=None, batch: int = 64
) -> float:
    """FID between two image sets [N, 3, H, W] and [M, 3, H', W'] in [0, 1] (N, M >= 2)."""
    if real.shape[0] < 2 or generated.shape[0] < 2:
        raise ValueError("FID needs at least two images in each set")
    metric = fid_metric(features, clip)
    for images, is_real in ((real, True), (generated, False)):
        for start in range(0, images.shape[0], batch):
            metric.update(images[start : start + batch].float(), real=is_real)
    return float(metric.compute())
