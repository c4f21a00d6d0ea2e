"""``esd-gs view SCENE.ply|RUN_DIR``: an interactive 3D view of the Gaussians in the browser (viser)."""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import tyro

from ..errors import UserError
from ..io import UpAxis, read_ply
from ..progress import console


@dataclass
class ViewArgs:
    """Show a 3DGS .ply, or a run's scene.ply, in the browser (viser).

    The scene stands upright, seen from its front (a run's own front: front.json).

    Stop the server with Ctrl-C.

    For example:
      esd-gs view runs/a-plush-dragon-toy-esd
      esd-gs view scene.ply --up z --port 8081
    """

    scene: tyro.conf.Positional[Path]
    """A 3DGS .ply file, or a run directory (its scene.ply)."""
    port: int = 8080
    """Port of the viewer's web page."""
    host: str = "127.0.0.1"
    """Address to serve on (0.0.0.0 to let other machines connect)."""
    up: UpAxis = "-y"
    """Up axis of the file: -y for standard 3DGS/viewer files (what esd-gs writes), z for +Z-up files."""
    seconds: float | None = None
    """Stop by itself after this many seconds; None = serve until Ctrl-C."""


def scene_path(path: Path) -> Path:
    if path.is_dir():
        if not (path / "scene.ply").is_file():
            raise UserError(f"{path} holds no scene.ply: not a finished run")
        return path / "scene.ply"
    return path


def run_view(args: ViewArgs) -> int:
    if not 1 <= args.port <= 65535:
        raise UserError(f"--port must be in 1..65535, got {args.port}")
    if args.seconds is not None and not (math.isfinite(args.seconds) and args.seconds > 0):
        raise UserError(f"--seconds must be a positive number of seconds (or None: until Ctrl-C), got {args.seconds}")
    path = scene_path(args.scene)
    scene = read_ply(path, up=args.up)
    from ..viewer.splats import refuse_nonfinite_splats

    try:
        refuse_nonfinite_splats(scene, action="show")
    except ValueError as exc:
        raise UserError(f"{path}: {exc}") from None
    from ..training.outputs import read_front
    from ..viewer.server import SplatViewer

    # A run's scene.ply opens on the run's own front (its front.json); any other file on azimuth 0.
    front = read_front(path.parent) if path.name == "scene.ply" else 0.0
    viewer = SplatViewer(args.host, args.port, title=path.name, front=front)
    viewer.show(scene, title=str(path))
    console.print(f"viewing {path} ({scene.num_gaussians} Gaussians) at {viewer.url}  (Ctrl-C to stop)")
    stop: list[int] = []
    old = {sig: signal.signal(sig, lambda signum, _f: stop.append(signum)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        deadline = None if args.seconds is None else time.monotonic() + args.seconds
        while not stop and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.2)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        viewer.close()
    console.print("viewer stopped")
    return 0
