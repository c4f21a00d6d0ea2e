"""The update rule and the step: how phi's and psi's scores become a gradient on the rendered images.

- ``rule``: the bracket of eq. 1 / 2 / 9, the weighting w(t) and the target-trick loss (pure functions);
- ``timesteps``: which t each step uses (fractions of the run);
- ``step``: ``ScoreDistillation``, one step for one prompt (encode, noise, score, rule), and its config.
"""

from .rule import METHODS, Method, Weighting, distillation_bracket, distillation_loss, entropy_weight, weight_of_t
from .step import DistillationConfig, DistillationOutput, ScoreDistillation
from .timesteps import TimestepSchedule

__all__ = [
    "METHODS",
    "DistillationConfig",
    "DistillationOutput",
    "Method",
    "ScoreDistillation",
    "TimestepSchedule",
    "Weighting",
    "distillation_bracket",
    "distillation_loss",
    "entropy_weight",
    "weight_of_t",
]
