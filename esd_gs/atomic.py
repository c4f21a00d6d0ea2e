"""Atomic file writes: a crash or an error never leaves a half-written file behind.

Everything esd-gs writes for users (.ply, .splat, videos, images, configs, checkpoints) goes through
``atomic_path``: the content is written to a hidden temporary file in the same directory (same suffix, so format
detection by extension still works), flushed to disk, then renamed onto the target in one step, and the folder is
flushed after the rename (``fsync_directory``), so that the new name survives a power loss too.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on any error it is removed."""
    target = Path(os.path.abspath(os.fspath(path)))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.{secrets.token_hex(6)}.tmp{target.suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:  # make sure the bytes are on disk before the rename
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        fsync_directory(target.parent)
    except BaseException as error:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(error, OSError) and error.filename is None and error.errno is not None:
            raise OSError(error.errno, error.strerror, str(target)) from error  # name the file (a full disk)
        raise


def atomic_write_bytes(path: str | os.PathLike, chunks: Iterable[bytes | memoryview]) -> None:
    """Write byte chunks to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        for chunk in chunks:
            fh.write(chunk)


def fsync_directory(path: str | os.PathLike) -> None:
    """Flush a folder's entries (names created, renamed or removed in it) to disk. Best effort: a no-op where folders
    cannot be opened (Windows) or flushed (some network file systems), since what it follows has already happened."""
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
