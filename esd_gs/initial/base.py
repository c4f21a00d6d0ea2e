"""The interface of theta's starting point: the Gaussians a run begins from (``--init``).

A start is a config that builds a ``GaussianScene`` once, before the first step: ``init:ball`` (random Gaussians in a
ball, the default), ``init:ply`` (a 3DGS .ply file) and ``init:shap-e`` (a coarse object from OpenAI's Shap-E,
GaussianDreamer's start). A new start implements ``InitConfig`` and registers it in ``INITS`` (``__init__.py``).

Conventions: the scene is built on the CPU, in esd-gs's world (+Z up, the object's front towards +X, the cameras
orbiting the origin: ``cameras.py``), float32; the run moves it to its device. A start that loads models moves them off
the GPU and drops them before it returns: the run's own models get the memory.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..cameras import OrbitSampler
from ..scene import GaussianScene


@dataclass(frozen=True)
class InitContext:
    """What a start may read of the run it begins: the prompt (Shap-E's text), the seed, the device its models may run
    on, and the camera orbit (a start that places an object scales it to the orbit)."""

    prompt: str
    seed: int
    device: torch.device
    cameras: OrbitSampler


class InitConfig(ABC):
    """The settings of one start, and its builder: the unit ``--init`` selects (``init:NAME`` on the command line,
    ``init: {name: NAME, ...}`` in a YAML config). Each config checks its own values (``__post_init__``)."""

    name: ClassVar[str]
    """The start's name on the command line and in saved configs."""
    starting: ClassVar[str] = "the initial Gaussians"
    """What the run's start-up line says while ``build`` runs ("theta: <starting>")."""

    @abstractmethod
    def build(self, context: InitContext) -> GaussianScene:
        """The initial Gaussians (module docstring's conventions); failures are one ``UserError``."""

    def check_run(self, max_gaussians: int) -> None:
        """How this start fits the run's settings, before any work (``TrainingConfig.validate``): one ``UserError``."""
        return None

    def model_source(self) -> str | None:
        """The model this start loads (what ``esd-gs doctor`` checks can be had), or None when it loads none."""
        return None

    def describe(self) -> str:
        """A few words for the start-up line."""
        return self.starting
