"""Densification and pruning of theta: gsplat's DefaultStrategy plus the fixes a text-to-3D run needs.

- gsplat's ``DefaultStrategy`` clones / splits Gaussians with a large accumulated screen-space gradient and prunes
  transparent or huge ones. It only needs the render ``info`` (``means2d`` with its gradient, ``radii`` [C, N, 2],
  ``width``, ``height``, ``n_cameras``, ``gaussian_ids``), which both our backends provide, and it runs on CPU
  tensors. A refinement that prunes every Gaussian ends the run (the trainer says so in one line).
- Its periodic opacity reset never fires in gsplat 1.5.3 (``step % every == 0 & step > 0`` parses as
  ``step % every == (0 & step) > 0``), so it is done here with gsplat's own ``reset_opa``.
- Gaussians with a non-finite parameter or an exploding scale are removed before they can blow up memory, and the
  count is capped (least opaque removed first).
All step numbers are derived from fractions of the run.

In a run's checkpoints (``checkpoint.py``) the densifier keeps gsplat's running statistics, one entry per Gaussian,
as the tensors ``densify.<key>`` (``Densifier.checkpoint_state``); it has no settings there (its config is the run's).

The growth threshold is in gsplat's units: the mean over the steps a Gaussian was visible of the norm of its
means2d gradient in pixels of a [-1, 1] image, times the views per step. Our score-distillation loss is summed over
latent entries, and SDS's CFG 100 scales its gradients far above VSD/ESD's at CFG 7.5, so 3DGS's 2e-4 (from a
mean-reduced photometric loss) would select every Gaussian at every refinement. ``GRAD_THRESHOLD`` is the default
per method, set so that about the top fifth of the initial Gaussians grow at a refinement (see research/janus.md;
``research/scripts/densify_grads.py`` accumulates these gradients in a real run).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from gsplat.strategy import DefaultStrategy
from gsplat.strategy.ops import remove, reset_opa

from ..errors import ConfigError
from ..scene import nonfinite_rows

MAX_GAUSSIANS = 10_000_000
"""Largest Gaussian cap accepted (10M Gaussians with Adam state take ~7 GB)."""


@dataclass
class DensifyConfig:
    """Densification and pruning (gsplat's DefaultStrategy, fed by our renderer on either backend)."""

    enabled: bool = True
    """Grow and prune Gaussians during the run."""
    start: float = 0.1
    """Fraction of the run after which densification starts."""
    stop: float = 0.7
    """Fraction of the run after which densification stops."""
    every: float = 0.04
    """Densify every this fraction of the run (at least every step)."""
    # The gradient as gsplat accumulates it: pixels of a [-1, 1] image, times the views per step. None takes
    # GRAD_THRESHOLD (see the module docstring).
    grad_threshold: float | None = None
    """Split/clone Gaussians whose mean screen-space gradient exceeds this; None = by method, 0.1 VSD/ESD, 1.0 SDS."""
    prune_opacity: float = 0.005
    """Remove Gaussians whose opacity falls below this."""
    opacity_reset_every: float = 0.3
    """Reset opacities to 2 x prune_opacity every this fraction of the run (done here: gsplat 1.5.3's never fires)."""
    max_gaussians: int = 200_000
    """Cap on the number of Gaussians: the least opaque are removed above it."""
    max_scale: float = 1.0
    """Gaussians with a scale above this (world units), or any non-finite parameter, are removed at once."""

    def __post_init__(self) -> None:
        for name in ("start", "stop", "every", "opacity_reset_every"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ConfigError(f"--densify.{name.replace('_', '-')} must be a fraction of the run, got {value}")
        if not self.start < self.stop:
            raise ConfigError(f"--densify.start ({self.start}) must be before --densify.stop ({self.stop})")
        if not 0 <= self.prune_opacity < 1:
            raise ConfigError(
                f"--densify.prune-opacity must be in [0, 1) (an opacity; 1 would remove every Gaussian), "
                f"got {self.prune_opacity}"
            )
        if self.grad_threshold is not None and not self.grad_threshold > 0:
            raise ConfigError(f"--densify.grad-threshold must be > 0, got {self.grad_threshold}")
        if self.max_gaussians < 1:
            raise ConfigError(f"--densify.max-gaussians must be at least 1, got {self.max_gaussians}")
        if self.max_gaussians > MAX_GAUSSIANS:
            raise ConfigError(f"--densify.max-gaussians must be at most {MAX_GAUSSIANS:,}")
        if not self.max_scale > 0:
            raise ConfigError(f"--densify.max-scale must be > 0, got {self.max_scale}")


GRAD_THRESHOLD: dict[str, float] = {"vsd": 0.1, "esd": 0.1, "sds": 1.0}
"""Default ``grad_threshold`` by method (see the module docstring)."""


def resolve_grad_threshold(config: DensifyConfig, method: str) -> DensifyConfig:
    """``config`` with its threshold filled in from ``GRAD_THRESHOLD`` when it is None."""
    if config.grad_threshold is not None:
        return config
    return dataclasses.replace(config, grad_threshold=GRAD_THRESHOLD[method])


def reset_value(prune_opacity: float) -> float:
    """The opacity the periodic reset lowers every Gaussian to: twice the pruning threshold, as in 3DGS (0.01 for
    0.005), or halfway between the threshold and 1 where twice would reach 1."""
    return 2.0 * prune_opacity if 2.0 * prune_opacity < 1 else (1.0 + prune_opacity) / 2.0


class Densifier:
    """Grows, prunes and caps theta's Gaussians in place (``params`` and its optimisers), step by step."""

    def __init__(self, config: DensifyConfig, total_steps: int, scene_scale: float, device: torch.device | str = "cpu"):
        """``device``: where the scene is (restored statistics go there)."""
        if config.grad_threshold is None:
            raise ValueError("resolve the growth threshold first (resolve_grad_threshold)")
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
        self.device = device

    def checkpoint_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """(gsplat's running statistics by key: the tensors of ``state``, none before the first step, {})."""
        return {key: value for key, value in self.state.items() if isinstance(value, torch.Tensor)}, {}

    def load_checkpoint_state(self, tensors: dict[str, torch.Tensor], settings: dict | None = None) -> None:
        """Continue from ``checkpoint_state``'s tensors (moved to the device); a statistic not among them is left as
        it is (``settings``: unused, there are none)."""
        for key in list(self.state):
            if key in tensors:
                self.state[key] = tensors[key].to(self.device)

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
            reset_opa(params, optimizers, self.state, value=reset_value(self.config.prune_opacity))
        self.enforce_cap(params, optimizers)

    @torch.no_grad()
    def remove_degenerate(self, params, optimizers) -> int:
        """Remove Gaussians with any non-finite parameter or a scale above ``max_scale``; returns how many, or -1
        (removing nothing) when that would be every one of them: the caller stops the run."""
        bad = nonfinite_rows(params)
        bad |= (params["scales"] > math.log(self.config.max_scale)).any(dim=1)
        count = int(bad.sum())
        if count and count == bad.numel():
            return -1
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
