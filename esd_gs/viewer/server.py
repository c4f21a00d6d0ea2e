"""The viser server of ``esd-gs view`` and of ``generate --viewer``.

The scene is shown upright in esd-gs's convention (viser's up direction +Z) and the camera starts where the
turntables start: at the front (azimuth 0, or the run's own front that ``esd-gs view`` reads from its front.json),
15 degrees up, 2.5 from the origin, 50 degrees vertical field of view. Every browser that connects is put there
(``on_client_connect``), so a page that connects before the scene is drawn still opens on it.
The side panel shows the file's stats (``splats.scene_stats``) and, live, the step, the loss, the Gaussian count and
the latest preview grid.
"""

from __future__ import annotations

import contextlib
import io
import math
import time

import numpy as np

from ..errors import UserError
from .splats import scene_stats, splat_arrays

START_ELEVATION, START_RADIUS, START_FOVY = 15.0, 2.5, 50.0
"""Where the camera starts: the turntables' elevation, radius and field of view, at azimuth 0 (the front)."""


def import_viser():
    try:
        import viser
    except ImportError:
        raise UserError("the viewer needs viser, which is not installed: pip install 'esd-gs[viewer]'") from None
    return viser


def start_position(azimuth: float = 0.0) -> tuple[float, float, float]:
    """The camera's first position: at ``azimuth`` (degrees; 0 = the front, +X; cameras.py's convention),
    START_ELEVATION up, START_RADIUS away."""
    el, az = math.radians(START_ELEVATION), math.radians(azimuth)
    return (
        START_RADIUS * math.cos(el) * math.cos(az),
        START_RADIUS * math.cos(el) * math.sin(az),
        START_RADIUS * math.sin(el),
    )


def check_address(host: str, port: int) -> None:
    """One line, before viser starts, when ``host:port`` cannot be served (busy, or not an address of this
    machine). viser itself would move to the next free port, or wait for ever on an address it cannot bind."""
    import socket

    if not 1 <= port <= 65535:
        raise UserError(f"the viewer's port must be in 1..65535, got {port}")
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.bind((host, port))
    except OSError as exc:
        reason = "in use" if exc.errno in (98, 48) else (exc.strerror or str(exc))
        raise UserError(f"cannot serve the viewer on {host}:{port} ({reason}): choose another port or host") from None


def set_front_camera(server, azimuth: float = 0.0) -> None:
    """The camera of every page: the initial one, and each connecting client's own (module docstring)."""
    server.scene.set_up_direction("+z")
    server.initial_camera.position = start_position(azimuth)
    server.initial_camera.look_at = (0.0, 0.0, 0.0)
    server.initial_camera.up = (0.0, 0.0, 1.0)
    server.initial_camera.fov = math.radians(START_FOVY)

    @server.on_client_connect
    async def _(client) -> None:  # on viser's event loop, between the browser's own camera messages
        with client.atomic():
            client.camera.up_direction = (0.0, 0.0, 1.0)
            client.camera.position = start_position(azimuth)
            client.camera.look_at = (0.0, 0.0, 0.0)
            client.camera.fov = math.radians(START_FOVY)


def stats_markdown(title: str, stats: dict) -> str:
    low, high = stats["bounds_min"], stats["bounds_max"]
    return (
        f"**{title}**\n\n{stats['gaussians']:,} Gaussians, SH degree {stats['sh_degree']}\n\n"
        f"bounds x {low[0]}..{high[0]}, y {low[1]}..{high[1]}, z {low[2]}..{high[2]}"
    )


class SplatViewer:
    """One viser server showing one scene (replaced by ``show``)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, title: str = "esd-gs", front: float = 0.0):
        """``front``: the azimuth (degrees) the camera starts at."""
        viser = import_viser()
        check_address(host, port)
        with contextlib.redirect_stdout(io.StringIO()):  # viser prints its own address panel: we print ours
            self.server = viser.ViserServer(host=host, port=port, verbose=False)
        set_front_camera(self.server, front)
        self.title = title
        self.stats = self.server.gui.add_markdown(f"**{title}**")
        self.status = None
        self.preview = None
        self.splats = None

    @property
    def url(self) -> str:
        host = self.server.get_host()
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{self.server.get_port()}"

    def show(self, scene, title: str | None = None) -> None:
        """Draw ``scene`` (a ``GaussianScene``), replacing what was drawn; update the stats panel."""
        arrays = splat_arrays(scene)
        if self.splats is not None:
            self.splats.remove()
        self.splats = self.server.scene.add_gaussian_splats("/scene", **arrays)
        self.stats.content = stats_markdown(title or self.title, scene_stats(scene))

    def show_progress(self, step: int, steps: int, loss: float | None, preview: np.ndarray | None) -> None:
        """The live panel: step, loss and the latest preview grid (uint8 H x W x 3)."""
        text = f"step {step} / {steps}, loss {'nan' if loss is None else f'{loss:.4f}'}"
        if self.status is None:
            self.status = self.server.gui.add_markdown(text)
        else:
            self.status.content = text
        if preview is not None:
            if self.preview is None:
                self.preview = self.server.gui.add_image(preview, label="latest preview")
            else:
                self.preview.image = preview

    def close(self) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            self.server.stop()


class LiveView:
    """``generate --viewer``: the training scene sent to a ``SplatViewer`` at most every ``refresh`` seconds.

    ``update`` is called after every step and returns at once between refreshes (one clock read); a refresh copies
    the Gaussians to the CPU and sends them."""

    def __init__(self, host: str, port: int, refresh: float, title: str):
        self.viewer = SplatViewer(host, port, title)
        self.refresh = refresh
        self.next_time = 0.0
        self.preview: np.ndarray | None = None
        self.refreshes = 0

    def update(self, scene, step: int, steps: int, loss: float | None, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self.next_time:
            return
        self.next_time = now + self.refresh
        self.viewer.show(scene)
        self.viewer.show_progress(step, steps, loss, self.preview)
        self.refreshes += 1

    def close(self) -> None:
        self.viewer.close()
