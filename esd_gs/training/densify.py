"""Densification and pruning of theta: gsplat's DefaultStrategy, with a growth threshold relative to the run's own
gradients, plus the fixes a text-to-3D run needs.

- gsplat's ``DefaultStrategy`` clones / splits Gaussians with a large accumulated screen-space gradient and prunes
  transparent or huge ones. It only needs the render ``info`` (``means2d`` with its gradient, ``radii`` [C, N, 2],
  ``width``, ``height``, ``n_cameras``, ``gaussian_ids``), which both our backends provide, and it runs on CPU
  tensors. A refinement that prunes every Gaussian ends the run (the trainer says so in one line).
- **Growth is relative** (``RelativeGrowthStrategy``). gsplat compares each Gaussian's mean means2d gradient norm
  since the last refinement (pixels of a [-1, 1] image, times the views per step) with a fixed number. How large
  those gradients are depends on the prior (a trained Stable Diffusion against random weights, SDS's CFG 100
  against VSD/ESD's 7.5, the loss reduction, the resolution), so a fixed number grows every Gaussian with one model
  and none with another. Here the threshold is set at each refinement to ``grow_ratio`` times the median of those
  mean gradients over the Gaussians seen since the last refinement (with a non-zero gradient): multiplying every
  gradient by any factor leaves every decision unchanged, and at most half the seen Gaussians can grow at once
  (for a ratio of at least 1). research/janus.md, Appendix C, compares this with a budget (gsplat's
  ``MCMCStrategy``) and a fixed share, and measures the counts it gives.
- Its periodic opacity reset never fires in gsplat 1.5.3 (``step % every == 0 & step > 0`` parses as
  ``step % every == (0 & step) > 0``), so it is done here with gsplat's own ``reset_opa``.
- Gaussians with a non-finite parameter or an exploding scale are removed before they can blow up memory, and the
  count is capped (least opaque removed first).
All step numbers are derived from fractions of the run.

In a run's checkpoints (``checkpoint.py``) the densifier keeps gsplat's running statistics, one entry per Gaussian,
as the tensors ``densify.<key>`` (``Densifier.checkpoint_state``); it has no settings there (its config is the run's,
and the threshold is recomputed from those statistics at each refinement).
"""

from __future__ import annotations

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
    # A ratio, so the same whatever the prior's gradient scale; from 1 up, at most half the seen Gaussians grow at once.
    grow_ratio: float = 2.0
    """Clone/split the Gaussians whose mean screen-space gradient is above this multiple of the run's median one."""
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
        if not self.grow_ratio > 0:  # NaN too; inf is allowed: no growth, pruning only
            raise ConfigError(
                f"--densify.grow-ratio must be > 0 (a multiple of the median gradient), got {self.grow_ratio}"
            )
        if self.max_gaussians < 1:
            raise ConfigError(f"--densify.max-gaussians must be at least 1, got {self.max_gaussians}")
        if self.max_gaussians > MAX_GAUSSIANS:
            raise ConfigError(f"--densify.max-gaussians must be at most {MAX_GAUSSIANS:,}")
        if not self.max_scale > 0:
            raise ConfigError(f"--densify.max-scale must be > 0, got {self.max_scale}")


def reset_value(prune_opacity: float) -> float:
    """The opacity the periodic reset lowers every Gaussian to: twice the pruning threshold, as in 3DGS (0.01 for
    0.005), or halfway between the threshold and 1 where twice would reach 1."""
    return 2.0 * prune_opacity if 2.0 * prune_opacity < 1 else (1.0 + prune_opacity) / 2.0


def mean_gradients(state: dict) -> torch.Tensor:
    """Each Gaussian's mean screen-space gradient norm since the last refinement, as gsplat's DefaultStrategy
    thresholds it (0 for one not seen since): [N]."""
    return state["grad2d"] / state["count"].clamp_min(1)


def growth_threshold(state: dict, ratio: float) -> tuple[int, float, float]:
    """(how many Gaussians were seen since the last refinement with a non-zero gradient, the median of their
    ``mean_gradients``, ``ratio`` times it): the threshold ``RelativeGrowthStrategy`` grows above. The median and
    the threshold are inf when no Gaussian has a gradient (nothing grows). Gaussians that were never seen, or that
    got exactly zero gradient (hidden behind opaque ones), are left out so that they cannot pull the median to 0."""
    grads = mean_gradients(state)
    live = grads[(state["count"] > 0) & (grads > 0)]
    if live.numel() == 0:
        return 0, math.inf, math.inf
    median = float(live.median())  # the lower median: one of the Gaussians' own mean gradients
    return live.numel(), median, ratio * median


@dataclass
class Refinement:
    """What one refinement did (``Densifier.last_refinement``; not checkpointed): the gradients are in gsplat's units
    (pixels of a [-1, 1] image times the views per step), the rest are counts of Gaussians."""

    step: int
    seen: int
    """Gaussians seen since the previous refinement with a non-zero gradient (the median is over these)."""
    median_grad: float
    threshold: float
    """``grow_ratio`` x ``median_grad``: the Gaussians above it were cloned (small) or split (large)."""
    cloned: int
    split: int
    pruned: int
    """Removed by gsplat for a low opacity, or (after the first opacity reset) a large scale."""
    gaussians: int
    """The count after the refinement (before the cap, which ``Densifier.capped`` counts)."""


@dataclass
class RelativeGrowthStrategy(DefaultStrategy):
    """gsplat's ``DefaultStrategy`` whose growth threshold (``grow_grad2d``) is set at every refinement to
    ``grow_ratio`` x the median mean gradient of the Gaussians seen since the previous one (``growth_threshold``).
    Everything else (accumulating the gradients, clone below / split above ``grow_scale3d``, pruning, zeroing the
    statistics) is gsplat's. It hooks ``_grow_gs`` and ``_prune_gs``, which gsplat's ``step_post_backward`` calls at
    each refinement in 1.x; ``tests/test_densify.py`` checks that the hook runs."""

    grow_ratio: float = 2.0
    grow_grad2d: float = math.inf  # set at each refinement
    last: Refinement | None = None

    def _grow_gs(self, params, optimizers, state, step):
        seen, median, self.grow_grad2d = growth_threshold(state, self.grow_ratio)
        n_dupli, n_split = super()._grow_gs(params, optimizers, state, step)
        self.last = Refinement(step, seen, median, self.grow_grad2d, n_dupli, n_split, 0, 0)
        return n_dupli, n_split

    def _prune_gs(self, params, optimizers, state, step):
        pruned = super()._prune_gs(params, optimizers, state, step)
        if self.last is not None and self.last.step == step:
            self.last.pruned, self.last.gaussians = pruned, len(params["means"])
        return pruned


class Densifier:
    """Grows, prunes and caps theta's Gaussians in place (``params`` and its optimisers), step by step.
    ``last_refinement`` says what the latest refinement did (None before the first) and ``capped`` how many
    Gaussians the cap has removed so far."""

    def __init__(self, config: DensifyConfig, total_steps: int, scene_scale: float, device: torch.device | str = "cpu"):
        """``device``: where the scene is (restored statistics go there)."""
        self.config = config
        every = max(1, round(config.every * total_steps))
        self.reset_every = max(1, round(config.opacity_reset_every * total_steps))
        self.strategy = RelativeGrowthStrategy(
            grow_ratio=config.grow_ratio,
            prune_opa=config.prune_opacity,
            refine_start_iter=round(config.start * total_steps),
            refine_stop_iter=round(config.stop * total_steps) if config.enabled else 0,
            refine_every=every,
            reset_every=self.reset_every,  # also gates gsplat's pruning of too-large Gaussians
            verbose=False,
        )
        self.state = self.strategy.initialize_state(scene_scale=scene_scale)
        self.stop_step = round(config.stop * total_steps)
        self.device = device
        self.capped = 0

    @property
    def last_refinement(self) -> Refinement | None:
        return self.strategy.last

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
            self.capped += excess

    def _remove(self, params, optimizers, mask: torch.Tensor) -> None:
        remove(params=params, optimizers=optimizers, state=self.state, mask=mask)
