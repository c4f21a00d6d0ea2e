"""The run directory of ``esd-gs generate``: its layout, its status file, and the rules that protect finished work.

    config.yaml            the resolved configuration (what --resume reads back)
    run.json               status: running | interrupted | finished | failed, and the step reached
    metrics.jsonl          one line per step: loss, t, Gaussians, it/s, psi loss, skipped steps
    previews/step_*.png    4-view preview grids during training (a turntable of 4: azimuth 0, 90, 180, 270)
    checkpoint/            the last checkpoint (``checkpoint.py``)
    scene.ply, scene.splat the result (standard 3DGS, viewer up axis); scene.glb with --mesh
    turntable.mp4/.gif     the final turntable video(s), contact_sheet.png the final contact sheet
    psi_error.png          with --diagnose.enabled: psi's error against the exact scores over the run
    eval.json, eval.png    written by ``esd-gs evaluate`` (and ``compare``) into the run directory
    replaced-run/          with --overwrite: the run being replaced, until the new one has finished

Everything is written atomically (``atomic.py``).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
from dataclasses import dataclass, replace
from pathlib import Path

from ..atomic import atomic_path

REPLACED = "replaced-run"
"""Where ``--overwrite`` keeps the previous run until the new one has finished."""
VIDEO_FORMATS = ("mp4", "gif")


@dataclass(frozen=True)
class RunDir:
    """The paths of one run directory (layout in the module docstring)."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def status_file(self) -> Path:
        return self.path / "run.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint"

    @property
    def scene_ply(self) -> Path:
        return self.path / "scene.ply"

    @property
    def scene_splat(self) -> Path:
        return self.path / "scene.splat"

    @property
    def scene_glb(self) -> Path:
        return self.path / "scene.glb"

    @property
    def contact_sheet(self) -> Path:
        return self.path / "contact_sheet.png"

    @property
    def psi_error_plot(self) -> Path:
        return self.path / "psi_error.png"

    @property
    def replaced(self) -> Path:
        return self.path / REPLACED

    def preview(self, step: int) -> Path:
        return self.path / "previews" / f"step_{step:06d}.png"

    def outputs(self) -> list[Path]:
        """Every path a run may write (what --overwrite sets aside)."""
        videos = [self.path / f"turntable.{fmt}" for fmt in VIDEO_FORMATS]
        return [
            self.scene_ply,
            self.scene_splat,
            self.scene_glb,
            self.status_file,
            self.config,
            self.metrics,
            *videos,
            self.contact_sheet,
            self.psi_error_plot,
            self.path / "eval.json",
            self.path / "eval.png",
            self.checkpoint,
            self.path / "previews",
        ]

    def existing_outputs(self) -> list[str]:
        """Names of the outputs that exist."""
        return [p.name for p in self.outputs() if p.exists()]

    # ------------------------------------------------------------------ status
    def read_status(self) -> str | None:
        """The status in run.json: None without one, "unknown" when it cannot be read."""
        if not self.status_file.is_file():
            return None
        try:
            status = json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return "unknown"
        return status.get("status", "unknown") if isinstance(status, dict) else "unknown"

    def write_status(self, status: str, step: int, steps: int) -> None:
        with atomic_path(self.status_file) as tmp:
            tmp.write_text(json.dumps({"status": status, "step": step, "steps": steps}, indent=1))

    def write_config(self, config) -> None:
        """config.yaml: the resolved ``GenerateConfig``, without the options that only steer this invocation."""
        from ..configs.generate import GenerateConfig
        from ..configs.presets import dump_yaml_config

        saved = replace(
            config,
            resume=None,
            overwrite=False,
            config=None,
            out=None,
            viewer=False,
            viewer_port=GenerateConfig.viewer_port,
        )
        with atomic_path(self.config) as tmp:
            tmp.write_text(dump_yaml_config(saved))

    # ------------------------------------------------------------------ --overwrite
    def set_aside(self, existing: list[str]) -> None:
        """Move the outputs of the run being replaced into ``RUN/replaced-run/`` (renames on the same disk: cheap).

        If an earlier --overwrite left a replaced run there (the new run then failed or was interrupted), that older
        run is kept when the current outputs are unfinished, and replaced when they are a finished run."""
        aside = self.replaced
        if aside.is_dir():
            if self.read_status() != "finished" or not self.scene_ply.is_file():
                for name in existing:  # an unfinished attempt: drop it, keep the finished run already set aside
                    target = self.path / name
                    shutil.rmtree(target) if target.is_dir() else target.unlink()
                return
            shutil.rmtree(aside)
        aside.mkdir()
        for name in existing:
            (self.path / name).rename(aside / name)


@contextlib.contextmanager
def signals_held():
    """Hold SIGINT / SIGTERM back for the block (a few renames), so that they cannot leave it half done: a signal
    that arrives is recorded and raised again, to the handler it would have met, once the block is over.

    (A Python handler, not ``pthread_sigmask``: torch's worker threads leave the signals unblocked, so the kernel
    would deliver them there and Python would still run the handler in the main thread mid-block.)"""
    received: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, frame: received.append(signum))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if received:
            signal.raise_signal(received[0])
