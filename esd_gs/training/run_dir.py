"""The run directory of ``esd-gs generate``: its layout, its status file, and the rules that protect finished work.

    config.yaml            the resolved configuration (what --resume reads back)
    run.json               status: running | interrupted | finished | failed, the step reached, the renderer it
                           uses (gsplat, torch) and while running, the process (a killed run's "running" is read as
                           interrupted or failed)
    metrics.jsonl          one line per step: loss, t, Gaussians, render size, it/s, psi loss, skipped steps (the
                           loop's NaN steps, psi's fp16 loss-scaler skips), the renderer
    previews/step_*.png    4-view preview grids during training (a turntable of 4: azimuth 0, 90, 180, 270)
    checkpoint/            the last checkpoint (``checkpoint.py``)
    scene.ply, scene.splat the result (standard 3DGS, viewer up axis); scene.glb with --mesh
    turntable.mp4/.gif     the final turntable video(s), contact_sheet.png the final contact sheet, both from the
                           azimuth front.json records (the run's own front on a synthetic prior, else 0)
    psi_error.png          with --diagnose.enabled: psi's error against the exact scores over the run
    eval.json, eval.png    written by ``esd-gs evaluate`` (and ``compare``) into the run directory
    replaced-run/          with --overwrite: the run being replaced, until the new one has finished

Everything is written atomically (``atomic.py``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_path
from ..files import read_json_or_none

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
            self.path / "front.json",
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
    def read_record(self) -> dict | None:
        """run.json as written: None without one (or when it cannot be read or is not a mapping)."""
        record = read_json_or_none(self.status_file)
        return record if isinstance(record, dict) else None

    def read_status(self) -> str | None:
        """The status in run.json: None without one, "unknown" when it cannot be read. A "running" run whose process
        is gone (killed: SIGKILL, a power loss) is reported as what it now is: "interrupted" when a checkpoint can be
        resumed, else "failed"."""
        if not self.status_file.is_file():
            return None
        record = self.read_record()
        if record is None:
            return "unknown"
        status = record.get("status", "unknown")
        if status == "running" and process_gone(record):
            from .checkpoint import has_checkpoint

            return "interrupted" if has_checkpoint(self.checkpoint) else "failed"
        return status

    def running_process(self) -> int | None:
        """The id of the process that is running this run now (on this machine), or None."""
        record = self.read_record()
        if record is None or record.get("status") != "running" or process_gone(record) is not False:
            return None
        return record["pid"]

    def write_status(self, status: str, step: int, steps: int, renderer: str | None = None) -> None:
        """run.json, atomically, with the ``renderer`` the run uses (the resolved backend) when given. It always takes
        ``STATUS_BYTES`` bytes, so that when the disk is full (the atomic write needs a second file) the status is
        still recorded by rewriting those bytes in place."""
        record = {"status": status, "step": step, "steps": steps}
        if renderer is not None:
            record["renderer"] = renderer
        if status == "running":  # who runs it: a later command can tell a killed run from a live one
            record.update(this_process())
        data = json.dumps(record, indent=1).encode()
        data = data + b" " * max(0, STATUS_BYTES - 1 - len(data)) + b"\n"
        try:
            with atomic_path(self.status_file) as tmp:
                tmp.write_bytes(data)
        except OSError as error:
            if error.errno not in (errno.ENOSPC, errno.EDQUOT) or not self._rewrite_status_in_place(data):
                raise

    def _rewrite_status_in_place(self, data: bytes) -> bool:
        """Overwrite run.json's bytes with ``data`` (no new space needed when it is not longer); False if it cannot."""
        try:
            with open(self.status_file, "r+b") as fh:
                size = os.fstat(fh.fileno()).st_size
                if len(data) > size:
                    return False
                fh.write(data[:-1] + b" " * (size - len(data)) + data[-1:])
                fh.flush()
                os.fsync(fh.fileno())
        except OSError:
            return False
        return True

    # ------------------------------------------------------------------ metrics
    def truncate_metrics(self, step: int) -> None:
        """Keep metrics.jsonl's rows up to ``step`` (one per step), dropping the later ones and any torn line: a run
        resumed from an earlier checkpoint writes those steps again. Cut in place (no new space needed) when the
        rows kept are the file's first lines; rewritten atomically otherwise."""
        if not self.metrics.is_file():
            return
        data = self.metrics.read_bytes()
        lines = data.splitlines(keepends=True)
        rows: dict[int, bytes] = {}
        for line in lines:
            try:
                row_step = json.loads(line)["step"] if line.endswith(b"\n") else None
            except (ValueError, TypeError, KeyError):
                row_step = None
            if isinstance(row_step, int) and not isinstance(row_step, bool) and 0 < row_step <= step:
                rows[row_step] = line  # the last row of a step is the one its run went on from
        keep = [rows[key] for key in sorted(rows)]
        if keep == lines:
            return
        if keep == lines[: len(keep)]:
            os.truncate(self.metrics, sum(len(line) for line in keep))
        else:
            with atomic_path(self.metrics) as tmp:
                tmp.write_bytes(b"".join(keep))

    def write_config(self, text: str) -> None:
        """config.yaml: ``text``, the run's resolved configuration (``configs.yaml_io.run_config_text``)."""
        with atomic_path(self.config) as tmp:
            tmp.write_text(text)

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


STATUS_BYTES = 512
"""The size run.json is padded to (with spaces, which JSON readers ignore): room for every status, so that it can be
rewritten in place on a full disk."""


def this_process() -> dict:
    """What identifies this process in run.json: its id, the machine's name and the process's start time."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": process_start_time(os.getpid())}


def process_start_time(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks after boot (Linux's /proc); None where that is not known."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def process_gone(record: dict) -> bool | None:
    """Whether the process a "running" run.json names has ended: True or False on the machine that ran it, None
    where that cannot be told (another machine, a run.json that names no process, no process start times)."""
    pid = record.get("pid")
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0 or record.get("host") != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: it exists, run by someone else
        pass
    started, now = record.get("started"), process_start_time(pid)
    if started is None or now is None:
        return None  # no start time to compare (no /proc): the id may have been reused, so nothing is claimed
    return now != started  # a different start time: the id now belongs to another process


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
