"""``generate --viewer``: the live view of a run as a training callback (``LiveViewCallback``).

It starts a ``server.LiveView`` when the run starts (and prints ``live view at URL``), sends it the scene after each
step (at most every ``refresh`` seconds, and always at the last step), with the newest preview grid whenever the
run's ``PreviewWriter`` wrote one, and closes it when the run ends. The view is for looking only: any error while
sending turns the view off with one yellow line and the run goes on; a viewer that cannot start (no viser, a busy
port) stops the run before its first step, as a wrong option does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import public_names
from ..progress import console
from ..training.callbacks import PreviewWriter, TrainingCallback
from ..viewer.server import LiveView

if TYPE_CHECKING:
    from ..training.trainer import Trainer

LIVE_REFRESH_S = 3.0
"""Seconds between two refreshes of the live view."""


def read_png(path):
    import imageio.v3 as iio

    return iio.imread(path)


class LiveViewCallback(TrainingCallback):
    """The live view on ``host:port`` titled ``title`` (module docstring). ``previews``: the run's preview writer,
    whose grids the view shows (put this callback after it); None shows none."""

    def __init__(
        self,
        port: int,
        title: str,
        previews: PreviewWriter | None = None,
        host: str = "127.0.0.1",
        refresh: float = LIVE_REFRESH_S,
    ):
        self.port, self.title, self.previews, self.host, self.refresh = port, title, previews, host, refresh
        self.view: LiveView | None = None

    def on_start(self, trainer: Trainer) -> None:
        self.view = LiveView(self.host, self.port, self.refresh, self.title)
        console.print(f"live view at {self.view.viewer.url}")

    def after_step(self, trainer: Trainer, row: dict) -> None:
        if self.view is None:
            return
        last = trainer.step == trainer.cfg.steps
        try:
            if self.previews is not None and self.previews.due(trainer.step):
                self.view.preview = read_png(trainer.files.preview(trainer.step))
            self.view.update(trainer.scene, trainer.step, trainer.cfg.steps, row["loss"], force=last)
        except Exception as exc:  # noqa: BLE001 (whatever viser or a browser connection raises)
            console.print(
                f"[yellow]live view stopped: {type(exc).__name__}: {public_names(str(exc))}; training goes on[/yellow]"
            )
            self._close()

    def on_close(self, trainer: Trainer) -> None:
        self._close()

    def _close(self) -> None:
        view, self.view = self.view, None
        if view is None:
            return
        try:
            view.close()
        except Exception as exc:  # noqa: BLE001 (a viewer that already failed may fail to stop too)
            console.print(
                f"[yellow]could not close the live view: {type(exc).__name__}: {public_names(str(exc))}[/yellow]"
            )
