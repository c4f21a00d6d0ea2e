"""The training views: which cameras, backgrounds and render size each step renders (``TrainingViews``).

- Cameras are drawn from the run's orbit (``cameras.OrbitSampler``), backgrounds per view: white, black, or with
  ``random`` one of white, black or a random colour (each a third of the time), both from the generator the caller
  gives (the loop's camera stream), cameras first.
- The render size follows the resolution schedule: ``resolution_start`` (capped at ``resolution``) until the
  fraction ``resolution_switch`` of the run, then ``resolution``; a prior that encodes renders made at latent size
  (``Prior.approximate_encoder``) gets an 8th of it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..cameras import Cameras
from .config import TrainingConfig


class TrainingViews:
    """The views of a run of ``config`` (module docstring); ``at_latent_size``: the prior's
    ``approximate_encoder``."""

    def __init__(self, config: TrainingConfig, at_latent_size: bool = False):
        self.config, self.at_latent_size = config, at_latent_size

    def size(self, progress: float) -> int:
        """Render size in pixels at ``progress`` (the fraction of the run done)."""
        cfg = self.config
        early = cfg.resolution_start is not None and progress < cfg.resolution_switch
        size = min(cfg.resolution_start, cfg.resolution) if early else cfg.resolution
        return size // 8 if self.at_latent_size else size

    def cameras(self, count: int, generator: torch.Generator) -> Cameras:
        return self.config.cameras.sample(count, generator=generator)

    def backgrounds(self, count: int, generator: torch.Generator) -> Tensor:
        """[count, 3] background colours (CPU), drawn from ``generator`` (none drawn for white or black)."""
        mode = self.config.background
        if mode == "white":
            return torch.ones(count, 3)
        if mode == "black":
            return torch.zeros(count, 3)
        choice = torch.randint(0, 3, (count,), generator=generator)
        colour = torch.rand(count, 3, generator=generator)
        return torch.where((choice == 0)[:, None], 1.0, torch.where((choice == 1)[:, None], 0.0, colour))
