"""Densification and pruning of theta: gsplat's DefaultStrategy plus the fixes a text-to-3D run needs.

- gsplat's ``DefaultStrategy`` clones / splits Gaussians with a large accumulated screen-space gradient and prunes
  transparent or huge ones. It only needs the render ``info`` (``means2d`` with its gradient, ``radii`` [C, N, 2],
  ``width``, ``height``, ``n_cameras``, ``gaussian_ids``), which both our backends provide, and it runs on CPU tensors.
- Its periodic opacity reset never fires in gsplat 1.5.3 (``step % every == 0 & step > 0`` parses as
  ``step % every == (0 & step) > 0``), so it is done here with gsplat's own ``reset_opa``.
- Gaussians with a non-finite parameter or an exploding scale are removed before they can blow up memory, and the
  count is capped (least opaque removed first).
All step numbers are derived from fractions of the run.
"""

from __future__ import annotations

import math

import torch
from gsplat.strategy import DefaultStrategy
from gsplat.strategy.ops import remove, reset_opa

from .configs.generate import DensifyConfig


class Densifier:
    def __init__(self, config: DensifyConfig, total_steps: int, scene_scale: float):
        self.config = config
        every = max(1, round(config.every * total_steps))
        self.reset_every = max(1, round(config.opacity_reset_every * total_steps))
        self.strategy = DefaultStrategy(
            prune_opa=config.prune_opacity,
            grow_grad2d=config.grad_threshold,
            refine_start_iter=round(config.start * total_steps),
            refine_stop_iter=round(config.stop * total_steps) if config.enabled else 0,
            refine_every=every,
            reset_every=self.reset_every,  # also gates gsplat's pruning of too-large Gaussians
            verbose=False,
        )
        self.state = self.strategy.initialize_state(scene_scale=scene_scale)
        self.stop_step = round(config.stop * total_steps)

    def check(self, params, optimizers) -> None:
        self.strategy.check_sanity(params, optimizers)

    def pre_backward(self, params, optimizers, step: int, info: dict) -> None:
        if self.config.enabled:
            self.strategy.step_pre_backward(params, optimizers, self.state, step, info)

    @torch.no_grad()
    def post_backward(self, params, optimizers, step: int, info: dict) -> None:
        if not self.config.enabled:
            return
        self.strategy.step_post_backward(params, optimizers, self.state, step, info, packed=False)
        if 0 < step < self.stop_step and step % self.reset_every == 0:
            reset_opa(params, optimizers, self.state, value=self.config.prune_opacity * 2.0)
        self.enforce_cap(params, optimizers)

    @torch.no_grad()
    def remove_degenerate(self, params, optimizers) -> int:
        """Remove Gaussians with any non-finite parameter or a scale above ``max_scale``; returns how many."""
        bad = torch.zeros(params["means"].shape[0], dtype=torch.bool, device=params["means"].device)
        for value in params.values():
            bad |= ~torch.isfinite(value.reshape(value.shape[0], -1)).all(dim=1)
        bad |= (params["scales"] > math.log(self.config.max_scale)).any(dim=1)
        count = int(bad.sum())
        if count:
            self._remove(params, optimizers, bad)
        return count

    @torch.no_grad()
    def enforce_cap(self, params, optimizers) -> None:
        n = params["means"].shape[0]
        excess = n - self.config.max_gaussians
        if excess > 0:
            order = torch.argsort(params["opacities"].detach().flatten())
            mask = torch.zeros(n, dtype=torch.bool, device=params["means"].device)
            mask[order[:excess]] = True
            self._remove(params, optimizers, mask)

    def _remove(self, params, optimizers, mask: torch.Tensor) -> None:
        remove(params=params, optimizers=optimizers, state=self.state, mask=mask)
