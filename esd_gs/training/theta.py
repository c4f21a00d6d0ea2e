"""theta: the Gaussians being trained and their optimisers, and their part of a run's checkpoints.

Each scene parameter (``scene.PARAM_KEYS``) has its own Adam (eps 1e-15), as gsplat's strategies expect: the
densifier grows and prunes a parameter and its optimiser state together. The centres' learning rate decays over the
run (``schedule``: 3DGS's exponential position schedule); the others stay at their ``OptimConfig`` rates.

In a checkpoint (``checkpoint.py``) the parameters are the tensors ``scene.<key>`` and the optimisers' tensors
``optim.<key>.<param index>.<state key>`` (``optim_state``); the settings are ``{key: that optimiser's settings}``,
which meta.json keeps under ``optimizers``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..optim_state import optimizer_from_flat, optimizer_to_flat
from ..scene import PARAM_KEYS, GaussianScene
from .config import OptimConfig


class Theta:
    """The trained ``scene`` (on ``device``) and its ``optimizers`` (one per parameter key)."""

    def __init__(self, scene: GaussianScene, config: OptimConfig, device: torch.device):
        """``config``: the learning rate each parameter's optimiser starts with (and the centres' final one)."""
        self.config, self.device = config, device
        self.rates = {key: getattr(config, key) for key in PARAM_KEYS}
        self.reset(scene)

    def schedule(self, progress: float) -> None:
        """Set the centres' learning rate for ``progress`` (the fraction of the run done): exponential decay from
        ``optim.means`` to ``optim.means_end`` (3DGS's position schedule)."""
        start, end = self.config.means, self.config.means_end
        rate = math.exp(math.log(start) + (math.log(end) - math.log(start)) * min(max(progress, 0.0), 1.0))
        for group in self.optimizers["means"].param_groups:
            group["lr"] = rate

    def reset(self, scene: GaussianScene) -> None:
        """Train ``scene`` (moved to the device) from now on, with fresh optimisers."""
        self.scene = scene.to(self.device)
        self.optimizers = {
            key: torch.optim.Adam([self.scene.params[key]], lr=self.rates[key], eps=1e-15) for key in PARAM_KEYS
        }

    def checkpoint_state(self) -> tuple[dict[str, Tensor], dict]:
        """(tensors, settings) in the layout of the module docstring."""
        tensors = {f"scene.{key}": value.detach() for key, value in self.scene.params.items()}
        settings = {}
        for key, optimizer in self.optimizers.items():
            flat, settings[key] = optimizer_to_flat(key, optimizer)
            tensors.update(flat)
        return tensors, settings

    def load_checkpoint_state(self, tensors: dict[str, Tensor], settings: dict) -> None:
        """Continue from ``checkpoint_state``'s (tensors, settings); other tensors in ``tensors`` are ignored."""
        self.reset(GaussianScene({key: tensors[f"scene.{key}"] for key in PARAM_KEYS}))
        for key, optimizer in self.optimizers.items():
            optimizer_from_flat(key, optimizer, tensors, settings[key], self.device)
