"""What a long job shows: one line per task that fits the terminal, a spinner per start-up stage, and plain lines in
logs. The same look for every long job.

- A task's line (``task_line``): description, bar, done/total, rate, elapsed, ``ETA m:ss`` and the task's own fields
  (``make_progress("grad", "psi")``). It never wraps: the bar takes what is left of the terminal's width (down to
  none), then the elapsed time and the last fields give way; the description is shortened last. The rate is per
  ``unit`` (a task's field, default ``it``): ``it/s`` from 1 a second up, ``s/<unit>`` below (``25.0 s/run``).
  A task with the field ``rate=False`` (stages of unequal length, e.g. an evaluation's metrics) shows none, nor an ETA.
- Where stderr is not a terminal (a file, a pipe, a batch job's ``batch.log``), no bar and no control sequence: a
  plain line per task when its description changes, at each tenth of it (at most one every ``min_gap_s``), at least
  every ``max_gap_s`` while it runs, and when it finishes (``LineProgress``).
- A start-up stage (``stage``: loading a model, fitting a cache, starting Ray) is a spinner with its name on a
  terminal, erased when the stage ends, and elsewhere one plain line with its time, written once the stage has
  ended and the command writes its next line (a failure's line before then stays the only one). A progress bar
  that starts inside a stage pauses its spinner until it ends.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

from rich.console import Console, Group
from rich.progress import Progress, Task, TaskID
from rich.status import Status
from rich.text import Text


class _Console(Console):
    """A Console that writes the start-up stages' pending log lines (``stage``) before anything else it prints."""

    pending: list[str]

    def print(self, *objects, **kwargs) -> None:  # noqa: D102 (rich's)
        while getattr(self, "pending", None):
            super().print(self.pending.pop(0), markup=False, highlight=False, soft_wrap=True)
        super().print(*objects, **kwargs)


console = _Console(stderr=True)
"""Where esd-gs's own lines go (stderr)."""
console.pending = []

BAR_MIN, BAR_MAX = 10, 40
"""Widths of a task's bar: it is drawn only when this much is left of the line, and never wider."""


def format_duration(seconds: float | None) -> str:
    """``m:ss`` under an hour, ``h:mm:ss`` above, ``--`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "--"
    whole = max(0, int(round(seconds)))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_rate(speed: float | None, unit: str = "it") -> str:
    """Items per second from 1 a second up (``9.53 it/s``), seconds per item below (``25.0 s/run``)."""
    if not speed:
        return f"-- {unit}/s"
    if speed >= 1:
        return f"{speed:5.2f} {unit}/s"
    return f"{1 / speed:5.1f} s/{unit}"


def format_field(value) -> str:
    """A field's value as shown: None as ``-``; floats to 3 significant digits, at least 6 characters wide (so that
    the line keeps its layout from step to step)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return ("nan" if not math.isfinite(value) else f"{value:.3g}").ljust(6)
    return str(value)


@dataclass
class _Parts:
    """The parts of a task's line, as text."""

    description: str
    done: str
    rate: str | None
    eta: str | None
    elapsed: str
    fields: list[str]


def task_speed(task: Task, window: float) -> float | None:
    """Items per second of ``task``: while the last ``window`` seconds reach back to its start, what it did since
    then over the time since then (the wait for its first item counts: a batch's first job, a comparison's first
    run); later rich's estimate over the window, or the whole run's average when items take longer than the window
    (rich then holds under two samples). Frozen when it finishes."""
    elapsed = task.finished_time if task.finished else task.elapsed
    if not elapsed:
        return None
    if elapsed <= window and len(task._progress) < (task._progress.maxlen or math.inf):  # every sample is kept
        done = sum(sample.completed for sample in task._progress)  # kept since the start: samples at most window old
        return done / elapsed if done else None
    speed = task.finished_speed or task.speed
    if speed is None and task.completed:  # items slower than the window: rich has under two samples in it
        return task.completed / elapsed
    return speed


def _task_parts(task: Task, fields: tuple[str, ...], window: float) -> _Parts:
    total = f"{int(task.total)}" if task.total is not None else "?"
    rate = eta = None
    if task.fields.get("rate", True):
        speed = task_speed(task, window)
        remaining = None
        if task.finished:
            remaining = 0.0
        elif speed and task.total is not None:
            remaining = (task.total - task.completed) / speed
        rate = format_rate(speed, task.fields.get("unit", "it"))
        eta = "ETA " + format_duration(remaining)
    shown = [f"{name} {format_field(task.fields[name])}" for name in fields if task.fields.get(name) not in (None, "")]
    shown[-1:] = [field.rstrip() for field in shown[-1:]]  # no blanks at the end of the line
    done = f"{int(task.completed):>{len(total)}}/{total}"
    return _Parts(task.description, done, rate, eta, format_duration(task.elapsed).rjust(4), shown)


def task_line(task: Task, width: int, fields: tuple[str, ...] = (), window: float = 30.0) -> Text:
    """``task``'s line on a terminal ``width`` columns wide: one line, never wider (module docstring); ``window``:
    seconds the rate is estimated over (``task_speed``)."""
    parts = _task_parts(task, fields, window)
    required = [parts.done] + [p for p in (parts.rate, parts.eta) if p is not None]
    room = width - sum(len(p) + 1 for p in required)  # for the description, the bar, the elapsed time, the fields
    description = parts.description
    if len(description) > max(room, 1):
        description = description[: max(room - 1, 0)] + "…"
    room -= len(description)
    bar = room >= BAR_MIN + 1 + sum(len(f) + 1 for f in parts.fields[:2])  # the first two fields before the bar
    room -= BAR_MIN + 1 if bar else 0
    kept = []
    for field in parts.fields:
        if len(field) + 1 > room:
            break
        kept.append(field)
        room -= len(field) + 1
    show_elapsed = len(parts.elapsed) + 1 <= room
    room -= len(parts.elapsed) + 1 if show_elapsed else 0
    line = Text(no_wrap=True, overflow="crop")
    line.append(description, style="bold")
    if bar:
        bar_width = min(BAR_MAX, BAR_MIN + room)
        done = 0 if not task.total else round(bar_width * min(task.completed / task.total, 1.0))
        line.append(" ")
        line.append("━" * done, style="green" if task.finished else "magenta")
        line.append("━" * (bar_width - done), style="grey23")
    line.append(f" {parts.done}", style="green")
    if parts.rate is not None:
        line.append(f" {parts.rate}", style="cyan")
    if show_elapsed:
        line.append(f" {parts.elapsed}", style="yellow")
    if parts.eta is not None:
        line.append(f" {parts.eta}", style="cyan")
    for field in kept:
        line.append(f" {field}")
    line.rstrip()
    return line


def plain_line(task: Task, fields: tuple[str, ...] = (), window: float = 30.0) -> str:
    """``task``'s line in a log: every part, no bar, no control sequence."""
    parts = _task_parts(task, fields, window)
    percent = f" {100 * task.completed / task.total:.0f}%" if task.total else ""
    words = [parts.description, parts.done + percent, parts.rate, f"elapsed {parts.elapsed}", parts.eta, *parts.fields]
    return " ".join(" ".join(word for word in words if word is not None).split())


class LineProgress(Progress):
    """rich's Progress drawn as ``task_line`` rows on a terminal, and as ``plain_line`` lines elsewhere (module
    docstring); ``fields``: the task fields shown after the ETA, in this order. ``get_time``: the clock (tests)."""

    def __init__(
        self,
        *fields: str,
        speed_window: float = 30.0,
        min_gap_s: float = 5.0,
        max_gap_s: float = 60.0,
        output: Console | None = None,
        get_time=None,
    ):
        output = output or console
        self._output, self.fields = output, fields
        self.plain = not output.is_terminal
        self.min_gap_s, self.max_gap_s = min_gap_s, max_gap_s
        self._logged: dict[TaskID, tuple[float, int, str, bool]] = {}  # when, tenth, description, finished
        super().__init__(
            console=output, speed_estimate_period=speed_window, disable=self.plain, get_time=get_time, transient=False
        )

    def make_tasks_table(self, tasks) -> Group:  # noqa: D102 (rich's hook: the rows of the live display)
        width = self._output.width
        return Group(
            *(task_line(task, width, self.fields, self.speed_estimate_period) for task in tasks if task.visible)
        )

    def start(self) -> None:
        if not self.plain and not self.live.is_started:
            _pause_stage(True)
        super().start()

    def stop(self) -> None:
        started = self.live.is_started
        super().stop()
        if started:
            _pause_stage(False)

    def update(self, task_id: TaskID, **kwargs) -> None:
        super().update(task_id, **kwargs)
        self._log(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._log(task_id)

    def _log(self, task_id: TaskID) -> None:
        """A plain line for ``task_id`` when one is due (module docstring)."""
        if not self.plain:
            return
        with self._lock:
            task = self._tasks.get(task_id)
        if task is None or not task.visible:
            return
        now = self.get_time()
        when, tenth, description, finished = self._logged.get(task_id, (task.start_time or now, 0, "", False))
        current = int(10 * task.completed / task.total) if task.total else 0
        due = (
            (task.finished and not finished)
            or task.description != description
            or (current > tenth and now - when >= self.min_gap_s)
            or now - when >= self.max_gap_s
        )
        if due and not (finished and task.finished):
            self._logged[task_id] = (now, current, task.description, task.finished)
            self.console.print(
                plain_line(task, self.fields, self.speed_estimate_period), markup=False, highlight=False, soft_wrap=True
            )


def make_progress(*extra_fields: str, speed_window: float = 30.0) -> LineProgress:
    """A progress display (``LineProgress``): ``extra_fields`` are task fields shown after the ETA (e.g.
    ``make_progress("grad")`` then ``progress.add_task("generating", total=n, grad=None)``; a field of None is not
    shown). ``speed_window``: seconds of history the rate and ETA are estimated from (longer for slow, coarse
    steps)."""
    return LineProgress(*extra_fields, speed_window=speed_window)


# ---------------------------------------------------------------------- start-up stages
_spinner_console = Console(stderr=True)
"""The spinners' own console: ``console`` may be capturing what a model's loading prints (``pipeline.generate``),
while the spinner still has to reach the terminal."""
_stages: list[Status] = []
_logging_stages = [False]  # inside stage_log: stages write their lines in a log


@contextlib.contextmanager
def stage_log() -> Iterator[None]:
    """Where stderr is not a terminal, the start-up stages of the block write their lines (``stage``); what is
    pending at its end (a command that failed) is dropped. The ``esd-gs`` command and a batch job's log use it; a
    library caller's stages write nothing but the spinner."""
    outer, _logging_stages[0] = _logging_stages[0], True
    try:
        yield
    finally:
        _logging_stages[0] = outer  # a nested use (a batch job run under the command) leaves the command's on
        if not outer:
            console.pending.clear()


_displays = [0]  # progress displays running on the terminal


def _pause_stage(pause: bool) -> None:
    """Stop the innermost stage's spinner while a progress display runs (two live displays on one terminal would
    overwrite each other), and start it again once none runs."""
    _displays[0] += 1 if pause else -1
    if _stages and (pause or _displays[0] == 0):
        (_stages[-1].stop if pause else _stages[-1].start)()


@contextlib.contextmanager
def stage(text: str, terminal_only: bool = False) -> Iterator[None]:
    """A start-up stage named ``text`` ("phi: loading Stable Diffusion"): a spinner on a terminal from its first
    moment, erased when the block ends; elsewhere one plain line with its time (``phi: loading Stable Diffusion:
    41.2 s``), written before the next line esd-gs writes (the work's first progress line, "resuming ..."): a
    failure before it (a stage's own, a checkpoint that does not fit psi) stays the only line.
    ``terminal_only``: no line outside a terminal (the stages before a command line is checked). Under a running
    progress display (a benchmark's runs) it shows nothing: that display's clock goes on."""
    if _displays[0] > 0:
        yield
        return
    if not _spinner_console.is_terminal:
        start = time.perf_counter()
        yield
        if _logging_stages[0] and not terminal_only:
            console.pending.append(f"{text}: {time.perf_counter() - start:.1f} s")
        return
    width = _spinner_console.width - 3  # the spinner and a space before the text: one line, never wrapped
    shown = text if len(text) <= width else text[: max(width - 1, 0)] + "…"
    spinner = Status(shown, console=_spinner_console, spinner="dots")
    if _stages:
        _stages[-1].stop()  # one spinner at a time: the inner stage replaces the outer one until it ends
    _stages.append(spinner)
    spinner.start()
    try:
        yield
    finally:
        spinner.stop()
        _stages.pop()
        if _stages:
            _stages[-1].start()
