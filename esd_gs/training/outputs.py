"""What a run shows people: preview grids while it trains, and at the end the exported scene, a turntable video and
a contact sheet (paths from ``run_dir.RunDir``). The scene files are written by the entries of ``formats.FORMATS``
for their suffixes, the same that ``esd-gs export`` uses."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..atomic import atomic_path
from ..cameras import MAX_VIEWS, turntable
from ..errors import ConfigError
from ..files import read_json_or_none
from ..formats import WriteOptions, write_scene
from ..render.views import render_views
from ..scene import GaussianScene
from ..video import contact_sheet, turntable_sheet, write_png, write_turntable
from .run_dir import RunDir

PREVIEW_VIEWS = 4
"""A preview grid is a turntable of 4 views: azimuth 0 (the front), 90, 180 and 270 degrees."""
FRONT_FILE = "front.json"
"""Where a run records the azimuth its turntable starts from (``write_front``; absent: 0, the world's front)."""


@dataclass
class OutputConfig:
    """What the run directory receives besides scene.ply and scene.splat."""

    preview_every: float = 0.1
    """Write a 4-view preview grid every this fraction of the run (0 = never)."""
    checkpoint_every: float = 0.25
    """Write a checkpoint every this fraction of the run (and always on Ctrl-C / SIGTERM)."""
    turntable_views: int = 120
    """Views in the final turntable video."""
    turntable_size: int = 512
    """Pixel size of the final turntable, the contact sheet and the preview grids' views."""
    turntable_seconds: float = 4.0
    """Seconds one turn of the turntable video lasts (its frame rate: views / seconds)."""
    video_formats: tuple[Literal["mp4", "gif"], ...] = ("mp4",)
    """Video formats of the final turntable."""
    up: Literal["-y", "y", "z"] = "-y"
    """Up axis of scene.ply / scene.splat (-y: what splat viewers expect)."""

    def __post_init__(self) -> None:
        if self.turntable_views < 1 or not 8 <= self.turntable_size <= 4096:
            raise ConfigError(
                "--output.turntable-views must be at least 1 and --output.turntable-size in 8..4096, "
                f"got {self.turntable_views} and {self.turntable_size}"
            )
        if self.turntable_views > MAX_VIEWS:
            raise ConfigError(f"--output.turntable-views must be at most {MAX_VIEWS}, got {self.turntable_views}")
        if not (math.isfinite(self.turntable_seconds) and self.turntable_seconds > 0):
            raise ConfigError(f"--output.turntable-seconds must be positive, got {self.turntable_seconds}")
        if not self.video_formats:
            raise ConfigError("--output.video-formats needs at least one of mp4, gif")
        for name in ("preview_every", "checkpoint_every"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ConfigError(
                    f"--output.{name.replace('_', '-')} must be a fraction of the run in [0, 1], got {value}"
                )


def write_preview(scene: GaussianScene, files: RunDir, step: int, size: int, backend: str) -> None:
    """previews/step_<step>.png: a turntable of ``PREVIEW_VIEWS`` views of ``size`` px (``output.turntable_size``)."""
    frames = render_views(scene, turntable(PREVIEW_VIEWS), size, background=1.0, backend=backend)
    write_png(contact_sheet(frames, columns=PREVIEW_VIEWS), files.preview(step))


def export_scene(
    scene: GaussianScene, files: RunDir, config: OutputConfig, backend: str, final: bool, front: float = 0.0
) -> None:
    """scene.ply and scene.splat always; with ``final`` also the turntable video(s) and the contact sheet, which
    start at azimuth ``front`` (degrees: the run's own front where it is known, ``write_front``), and front.json."""
    plain = GaussianScene(scene.raw()).cpu()
    for path in (files.scene_ply, files.scene_splat):
        write_scene(plain, path, WriteOptions(up=config.up))
    if final:
        frames = render_views(
            scene,
            turntable(config.turntable_views, start_azimuth=front),
            config.turntable_size,
            background=1.0,
            progress_label="turntable",
            backend=backend,
        )
        fps = config.turntable_views / config.turntable_seconds
        write_turntable(frames, files.path, stem="turntable", formats=config.video_formats, fps=fps)
        write_png(turntable_sheet(frames), files.contact_sheet)
        write_front(files, front)


def write_front(files: RunDir, azimuth: float) -> None:
    """front.json: ``{"azimuth": degrees}``, where the turntable and contact sheet start and ``esd-gs view`` opens."""
    with atomic_path(files.path / FRONT_FILE) as tmp:
        tmp.write_text(json.dumps({"azimuth": round(float(azimuth), 3)}) + "\n")


def read_front(run: Path) -> float:
    """The azimuth front.json of the run directory ``run`` records; 0 (the world's front) without a readable one."""
    saved = read_json_or_none(Path(run) / FRONT_FILE)
    value = saved.get("azimuth") if isinstance(saved, dict) else None
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0.0


def export_mesh(scene: GaussianScene, files: RunDir) -> None:
    """scene.glb (``--mesh``): what ``esd-gs export --to scene.glb`` writes with its default options."""
    write_scene(scene, files.scene_glb, WriteOptions())
