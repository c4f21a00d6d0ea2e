"""The points where a generate run calls out (``TrainingCallback``), and the callbacks every run directory gets:
metrics rows (``MetricsWriter``), previews on schedule (``PreviewWriter``) and checkpoints on schedule
(``CheckpointWriter``). Modelled on nerfstudio's training callbacks; what is above training (``esd_gs.pipeline``)
picks a run's callbacks from its config.

``Trainer.run`` calls its callbacks in the order of ``Trainer.callbacks``, at these points:

- ``on_start(trainer)``: once, after run.json says "running" and before the first step this process takes (a
  resumed run starts at its checkpoint's ``trainer.step``);
- ``before_step(trainer)``: before each step;
- ``after_step(trainer, row)``: after each step, ``trainer.step`` being the number of steps done, with the step's
  metrics row (``Trainer.train_step``). A callback may add keys to ``row``; the callbacks after it see them, so the
  ones that add keys come before ``MetricsWriter``, which writes the row;
- ``on_finish(trainer)``: after the last step, the final checkpoint and the export, before run.json says "finished"
  (never on an interrupted or failed run);
- ``on_close(trainer)``: always, as ``run`` ends (finished, interrupted or failed), even when ``on_start`` did not run
  to its end; it must not raise (an ``OSError`` is printed in one line).

An exception from any other point ends the run like an error of the loop (run.json says "failed"); a callback whose
failure must not end the run catches its own errors (the live view does).

Schedules are fractions of the run (``every``): at least one step apart, 0 for never.
"""

from __future__ import annotations

import json
import time
from typing import IO, TYPE_CHECKING

from .outputs import write_preview

if TYPE_CHECKING:
    from .config import TrainingConfig
    from .trainer import Trainer


def every(fraction: float, steps: int) -> int:
    """Steps between two events that happen every ``fraction`` of a run of ``steps`` steps: at least 1, and 0 (never)
    for a fraction of 0."""
    return max(1, round(fraction * steps)) if fraction > 0 else 0


class TrainingCallback:
    """Something a run does around its steps (module docstring); every method does nothing unless overridden."""

    def on_start(self, trainer: Trainer) -> None:
        """Once, before the first step of this process."""

    def before_step(self, trainer: Trainer) -> None:
        """Before each step."""

    def after_step(self, trainer: Trainer, row: dict) -> None:
        """After each step, with its metrics row (which may be added to)."""

    def on_finish(self, trainer: Trainer) -> None:
        """After the final checkpoint and export of a finished run."""

    def on_close(self, trainer: Trainer) -> None:
        """As the run ends, however it ends."""


class MetricsWriter(TrainingCallback):
    """metrics.jsonl: one JSON line per step, the row as the callbacks before this one left it plus ``it_s`` (steps
    per second, counting the step and those callbacks). A resumed run first drops the rows after its checkpoint's
    step (``RunDir.truncate_metrics``), so that a repeated step has one row."""

    def __init__(self) -> None:
        self.file: IO[str] | None = None
        self.start = 0.0

    def on_start(self, trainer: Trainer) -> None:
        trainer.files.truncate_metrics(trainer.step)
        self.file = open(trainer.files.metrics, "a")

    def before_step(self, trainer: Trainer) -> None:
        self.start = time.perf_counter()

    def after_step(self, trainer: Trainer, row: dict) -> None:
        row["it_s"] = 1.0 / max(time.perf_counter() - self.start, 1e-9)
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()

    def on_close(self, trainer: Trainer) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


class PreviewWriter(TrainingCallback):
    """previews/step_<step>.png (``outputs.write_preview``) every ``output.preview_every`` of the run and at its last
    step; none with a ``preview_every`` of 0."""

    def __init__(self, config: TrainingConfig):
        self.every, self.steps = every(config.output.preview_every, config.steps), config.steps

    def due(self, step: int) -> bool:
        """Whether the preview of ``step`` (steps done) is written."""
        return bool(self.every) and (step % self.every == 0 or step == self.steps)

    def after_step(self, trainer: Trainer, row: dict) -> None:
        if self.due(trainer.step):
            size = trainer.cfg.output.turntable_size
            write_preview(trainer.scene, trainer.files, trainer.step, size, trainer.backend)


class CheckpointWriter(TrainingCallback):
    """A checkpoint (``Trainer.save``) every ``output.checkpoint_every`` of the run, none with 0; never at the last
    step, where the run saves its final checkpoint itself."""

    def __init__(self, config: TrainingConfig):
        self.every, self.steps = every(config.output.checkpoint_every, config.steps), config.steps

    def after_step(self, trainer: Trainer, row: dict) -> None:
        if self.every and trainer.step % self.every == 0 and trainer.step < self.steps:
            trainer.save()
