"""What a run shows people: preview grids while it trains, and at the end the exported scene, a turntable video and
a contact sheet (paths from ``run_dir.RunDir``). The scene files are written by the entries of ``formats.FORMATS``
for their suffixes, the same that ``esd-gs export`` uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..cameras import MAX_VIEWS, turntable
from ..errors import ConfigError
from ..formats import WriteOptions, write_scene
from ..render.views import render_views
from ..scene import GaussianScene
from ..video import contact_sheet, turntable_sheet, write_png, write_turntable
from .run_dir import RunDir

PREVIEW_VIEWS = 4
"""A preview grid is a turntable of 4 views: azimuth 0 (the front), 90, 180 and 270 degrees."""


@dataclass
class OutputConfig:
    """What the run directory receives besides scene.ply and scene.splat."""

    preview_every: float = 0.1
    """Write a 4-view preview grid every this fraction of the run (0 = never)."""
    checkpoint_every: float = 0.25
    """Write a checkpoint every this fraction of the run (and always on Ctrl-C / SIGTERM)."""
    turntable_views: int = 120
    """Views in the final turntable video."""
    turntable_size: int = 256
    """Pixel size of the final turntable and contact sheet."""
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
        if not self.video_formats:
            raise ConfigError("--output.video-formats needs at least one of mp4, gif")
        for name in ("preview_every", "checkpoint_every"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ConfigError(
                    f"--output.{name.replace('_', '-')} must be a fraction of the run in [0, 1], got {value}"
                )


def write_preview(scene: GaussianScene, files: RunDir, step: int, resolution: int, backend: str) -> None:
    """previews/step_<step>.png: a turntable of ``PREVIEW_VIEWS`` at 64..256 px (the run's size, clamped)."""
    size = max(64, min(256, resolution))
    frames = render_views(scene, turntable(PREVIEW_VIEWS), size, background=1.0, backend=backend)
    write_png(contact_sheet(frames, columns=PREVIEW_VIEWS), files.preview(step))


def export_scene(scene: GaussianScene, files: RunDir, config: OutputConfig, backend: str, final: bool) -> None:
    """scene.ply and scene.splat always; with ``final`` also the turntable video(s) and the contact sheet."""
    plain = GaussianScene(scene.raw()).cpu()
    for path in (files.scene_ply, files.scene_splat):
        write_scene(plain, path, WriteOptions(up=config.up))
    if final:
        frames = render_views(
            scene,
            turntable(config.turntable_views),
            config.turntable_size,
            background=1.0,
            progress_label="turntable",
            backend=backend,
        )
        write_turntable(frames, files.path, stem="turntable", formats=config.video_formats, fps=30)
        write_png(turntable_sheet(frames), files.contact_sheet)


def export_mesh(scene: GaussianScene, files: RunDir) -> None:
    """scene.glb (``--mesh``): what ``esd-gs export --to scene.glb`` writes with its default options."""
    write_scene(scene, files.scene_glb, WriteOptions())
