"""The automatic Janus measure: which side of the object each turntable view shows, and how many faces that makes.

A ``SideClassifier`` gives, for each view, probabilities over ``SIDES`` (front, side, back). A view is *frontal* when
front is its most likely side. Over a turntable (evenly spaced azimuths, in order), the measure reports:

- **frontal share**: the share of frontal views (a single-fronted object seen on a full turn: about a quarter);
- **frontal arcs**: the number of separate circular runs of frontal views, the number of faces the object shows;
- the share of each side, and a **verdict**: ``Janus`` (more than one arc), ``face everywhere`` (one arc but more
  than half the views frontal: the front is shown from the sides too, the mode collapse of score distillation that
  a single arc would hide), ``one face`` or ``no face``.

Each view is judged on its own, without smoothing: with a noisy classifier (real CLIP on hard views) one flickering
view can split an arc, so read the arcs beside the per-view sides of eval.png.

Two classifiers implement the interface: ``ClipSideClassifier`` (zero-shot CLIP against "front view of <prompt>",
"side view of <prompt>", "back view of <prompt>"), the default for real runs, and ``ReferenceSideClassifier`` (the
synthetic prior's ground truth: the azimuth of the view's nearest prior image, the classifier of
``evaluation/janus.py``), which validates the measure offline on known answers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from ..cameras import wrap_azimuth
from .janus import count_arcs, nearest_prior_distances

SIDES = ("front", "side", "back")
FRONT, SIDE, BACK = range(3)
COLLAPSED_SHARE = 0.5
"""Above this frontal share, one arc is a face everywhere: a single front covers about a quarter of a turntable."""


class SideClassifier(ABC):
    """Per-view side probabilities: views [V, 3, H, W] in [0, 1] -> [V, len(SIDES)], rows summing to 1."""

    name: str
    """Short name recorded in eval.json (``clip``, ``reference``)."""

    @abstractmethod
    def side_probabilities(self, views: Tensor) -> Tensor: ...


def side_of_azimuth(azimuth: Tensor) -> Tensor:
    """Azimuth (degrees, 0 = front) -> side index: |a| < 45 front, 45 <= |a| <= 135 side, |a| > 135 back."""
    magnitude = wrap_azimuth(azimuth).abs()
    return torch.where(magnitude < 45.0, FRONT, torch.where(magnitude <= 135.0, SIDE, BACK))


class ReferenceSideClassifier(SideClassifier):
    """The synthetic prior's ground truth: each view takes the side of its nearest prior image (mean squared pixel
    distance; the prior's images must be rendered at the views' size)."""

    name = "reference"

    def __init__(self, prior_images: Tensor, prior_azimuths: Tensor):
        self.prior_images, self.prior_azimuths = prior_images.cpu(), prior_azimuths.cpu()

    def side_probabilities(self, views: Tensor) -> Tensor:
        if views.shape[-2:] != self.prior_images.shape[-2:]:
            raise ValueError(
                f"views are {tuple(views.shape[-2:])} px, the prior's images {tuple(self.prior_images.shape[-2:])}"
            )
        nearest = nearest_prior_distances(views.cpu(), self.prior_images).argmin(dim=1)
        return torch.nn.functional.one_hot(side_of_azimuth(self.prior_azimuths[nearest]), len(SIDES)).float()


class ClipSideClassifier(SideClassifier):
    """Zero-shot CLIP: softmax over the three side prompts of CLIP's scaled cosine similarity (its logit scale)."""

    name = "clip"

    def __init__(self, clip, prompt: str):
        """``clip``: a ``models.ClipModel``; ``prompt``: what the object is (``"a head"``)."""
        self.clip = clip
        self.texts = [f"{side} view of {prompt}" for side in SIDES]

    def side_probabilities(self, views: Tensor) -> Tensor:
        image = self.clip.image_features(views)
        text = self.clip.text_features(self.texts)
        return torch.softmax(self.clip.logit_scale * image @ text.T, dim=1)


@dataclass
class JanusMeasure:
    """The measure of one turntable (see the module docstring)."""

    frontal_share: float
    frontal_arcs: int
    side_shares: dict[str, float]
    sides: list[str]
    """The most likely side of each view, in turntable order."""

    @property
    def janus(self) -> bool:
        return self.frontal_arcs > 1

    @property
    def collapsed(self) -> bool:
        return self.frontal_share > COLLAPSED_SHARE

    @property
    def verdict(self) -> str:
        if self.janus:
            return "Janus"
        if self.collapsed:
            return "face everywhere"
        return "one face" if self.frontal_arcs == 1 else "no face"

    def as_dict(self) -> dict:
        return {**self.__dict__, "janus": self.janus, "collapsed": self.collapsed, "verdict": self.verdict}


def janus_measure(side_probabilities: Tensor) -> JanusMeasure:
    """Side probabilities [V, 3] of a turntable's views, in azimuth order -> the measure."""
    sides = side_probabilities.argmax(dim=1)
    frontal = sides == FRONT
    return JanusMeasure(
        frontal_share=float(frontal.float().mean()),
        frontal_arcs=count_arcs(frontal),
        side_shares={name: float((sides == i).float().mean()) for i, name in enumerate(SIDES)},
        sides=[SIDES[i] for i in sides.tolist()],
    )
