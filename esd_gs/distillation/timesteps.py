"""Timestep schedules for score distillation, all functions of the run's progress p = step / steps in [0, 1].

Expressing every schedule as a fraction of the run means changing ``--steps`` never breaks it.
Timesteps are integers in [0, T) with T = 1000 (SD's training schedule); ``t_min``/``t_max`` are fractions of T.

- ``uniform`` (DreamFusion / ProlificDreamer / threestudio): t ~ U[t_min, t_max], where t_max drops from
  ``t_max`` to ``t_max_end`` once progress reaches ``anneal_at`` (ProlificDreamer: 0.98 -> 0.5).
- ``linear``: t ~ U[t_min, t_max(p)] with t_max(p) moving linearly from ``t_max`` to ``t_max_end`` over the run.
- ``dreamtime`` (DreamTime, Huang et al. 2023, eq. 8-9): a deterministic, monotonically decreasing t(p):
  W(t) proportional to sqrt((1 - alphabar_t) / alphabar_t) * f(t), with the flat-topped prior
  f(t) = exp(-(t - m1)^2 / (2 s1^2)) for t > m1, 1 for m2 <= t <= m1, exp(-(t - m2)^2 / (2 s2^2)) for t < m2
  (m1 = 800, s1 = 300, m2 = 500, s2 = 100), normalised over [t_min T, t_max T]; then
  t(p) = argmin_t | sum_{s >= t} W(s) - p |, so high-noise steps come first and t falls as the run goes on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..errors import ConfigError

ScheduleName = Literal["uniform", "linear", "dreamtime"]


@dataclass
class TimestepSchedule:
    """Which diffusion timesteps t the distillation uses at each point of the run."""

    name: ScheduleName = "uniform"
    """uniform (with t_max annealed at anneal_at), linear (t_max annealed linearly) or dreamtime (deterministic)."""
    t_min: float = 0.02
    """Smallest t as a fraction of T."""
    t_max: float = 0.98
    """Largest t at the start of the run, as a fraction of T."""
    t_max_end: float = 0.5
    """Largest t after annealing (uniform: after anneal_at; linear: at the end of the run)."""
    anneal_at: float = 0.2
    """Fraction of the run at which the uniform schedule drops t_max to t_max_end (1.0 = never)."""
    dreamtime_m1: float = 800.0
    """DreamTime prior: upper end of its flat top (timestep)."""
    dreamtime_s1: float = 300.0
    """DreamTime prior: width of its fall-off above m1."""
    dreamtime_m2: float = 500.0
    """DreamTime prior: lower end of its flat top (timestep)."""
    dreamtime_s2: float = 100.0
    """DreamTime prior: width of its fall-off below m2."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.t_min < self.t_max <= 1.0:
            raise ConfigError(f"need 0 <= t_min < t_max <= 1, got t_min={self.t_min}, t_max={self.t_max}")
        if not self.t_min < self.t_max_end <= 1.0:
            raise ConfigError(f"need t_min < t_max_end <= 1, got t_max_end={self.t_max_end}")
        if not 0.0 <= self.anneal_at <= 1.0:
            raise ConfigError(f"--timesteps.anneal-at must be a fraction of the run in [0, 1], got {self.anneal_at}")
        for name in ("dreamtime_m1", "dreamtime_m2", "dreamtime_s1", "dreamtime_s2"):
            value = getattr(self, name)
            if not math.isfinite(value) or (name.endswith(("s1", "s2")) and not value > 0):
                what = "a finite timestep" if name.endswith(("m1", "m2")) else "a finite width > 0"
                raise ConfigError(f"--timesteps.{name.replace('_', '-')} must be {what}, got {value}")
        if not self.dreamtime_m2 <= self.dreamtime_m1:
            raise ConfigError(
                f"--timesteps.dreamtime-m2 ({self.dreamtime_m2}) must be at most --timesteps.dreamtime-m1 "
                f"({self.dreamtime_m1}): they are the ends of DreamTime's flat top"
            )

    def max_fraction(self, progress: float) -> float:
        """The upper bound of t (fraction of T) at ``progress``."""
        if self.name == "uniform":
            return self.t_max_end if progress >= self.anneal_at else self.t_max
        if self.name == "linear":
            return self.t_max + (self.t_max_end - self.t_max) * min(max(progress, 0.0), 1.0)
        return self.t_max

    def sample(
        self,
        progress: float,
        batch_size: int,
        alphas_cumprod: Tensor,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Integer timesteps [batch_size] for the step at ``progress`` in [0, 1]."""
        num_train = alphas_cumprod.shape[0]
        if self.name == "dreamtime":
            t = dreamtime_timestep(progress, alphas_cumprod, self)
            return torch.full((batch_size,), t, dtype=torch.long)
        lo = int(round(self.t_min * num_train))
        hi = int(round(self.max_fraction(progress) * num_train))
        hi = max(hi, lo + 1)
        return torch.randint(lo, hi, (batch_size,), generator=generator)


def dreamtime_weights(alphas_cumprod: Tensor, schedule: TimestepSchedule) -> Tensor:
    """DreamTime's normalised W(t) over t in [0, T) (zero outside [t_min T, t_max T]), float64."""
    abar = alphas_cumprod.double()
    t = torch.arange(abar.shape[0], dtype=torch.float64)
    w_diffusion = torch.sqrt((1.0 - abar) / abar)
    m1, s1, m2, s2 = schedule.dreamtime_m1, schedule.dreamtime_s1, schedule.dreamtime_m2, schedule.dreamtime_s2
    prior = torch.where(
        t > m1,
        torch.exp(-((t - m1) ** 2) / (2 * s1**2)),
        torch.where(t >= m2, torch.ones_like(t), torch.exp(-((t - m2) ** 2) / (2 * s2**2))),
    )
    weights = w_diffusion * prior
    lo = int(math.floor(schedule.t_min * abar.shape[0]))
    hi = int(math.ceil(schedule.t_max * abar.shape[0]))
    weights[:lo] = 0.0
    weights[hi:] = 0.0
    return weights / weights.sum()


def dreamtime_timestep(progress: float, alphas_cumprod: Tensor, schedule: TimestepSchedule) -> int:
    """t(p) = argmin_t | sum_{s >= t} W(s) - p | (DreamTime eq. 9)."""
    weights = dreamtime_weights(alphas_cumprod, schedule)
    tail = torch.flip(torch.cumsum(torch.flip(weights, [0]), 0), [0])  # tail[t] = sum_{s >= t} W(s)
    valid = weights > 0
    gap = torch.where(valid, (tail - progress).abs(), torch.full_like(tail, float("inf")))
    return int(torch.argmin(gap))
