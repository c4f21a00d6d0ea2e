"""rich progress bars with rate and ETA, the same look for every long job."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

console = Console(stderr=True)


class RateColumn(ProgressColumn):
    """Iterations per second (or seconds per iteration when slower than 1 it/s)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if not speed:
            return Text("  -- it/s", style="cyan")
        if speed >= 1:
            return Text(f"{speed:6.2f} it/s", style="cyan")
        return Text(f"{1 / speed:6.2f} s/it", style="cyan")


def make_progress(*extra_fields: str, speed_window: float = 30.0) -> Progress:
    """A progress bar: description, bar, done/total, it/s, elapsed, ETA, then ``extra_fields`` taken from the
    task's fields (e.g. ``make_progress("loss")`` then ``progress.add_task("train", total=n, loss="-")``).
    ``speed_window``: seconds of history the rate and ETA are estimated from (longer for slow, coarse steps)."""
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    ]
    columns += [TextColumn(f"{name} {{task.fields[{name}]}}") for name in extra_fields]
    return Progress(*columns, console=console, speed_estimate_period=speed_window)
