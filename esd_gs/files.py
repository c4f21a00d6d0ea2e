"""Reading the files a user or a run directory hands esd-gs (presets, job files, run.json, meta.json, eval.json):
regular files only, and never blocking. A FIFO, a device or a socket in a file's place is refused at once instead
of hanging the command; JSON nested beyond the parser's recursion limit counts as unreadable."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from .errors import UserError

OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
"""Read only, without waiting for a writer (a FIFO opens at once), binary, not inherited by child processes (each
where the platform has it)."""

_NOT_REGULAR = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def read_text_file(path: Path, what: str = "config") -> str:
    """The UTF-8 text of a file the user names (a preset, a run's config.yaml, a job file), or one ``UserError``
    (``what`` names the file in it): missing, a folder, unreadable, not UTF-8, or not a regular file. The file is
    opened without waiting (``O_NONBLOCK``) and checked on the open descriptor before anything is read, so a FIFO
    or a device is refused at once instead of blocking the command forever."""
    path = Path(path)
    try:
        fd = os.open(path, OPEN_FLAGS)
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"{what} {path} is a directory") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise UserError(f"{what} {path} is a directory")
        if not stat.S_ISREG(mode):
            kind = _NOT_REGULAR.get(stat.S_IFMT(mode), "a special file")
            raise UserError(f"{what} {path} is not a regular file ({kind})")
        if hasattr(os, "O_NONBLOCK"):  # POSIX: the regular file is read with blocking calls again
            os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read()
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{what} {path} is not UTF-8 text") from None


def read_json_or_none(path: Path) -> Any:
    """The JSON value in ``path``, or None when it is missing, not a regular file, unreadable, not UTF-8, invalid or
    nested too deeply: for files esd-gs wrote itself and can do without (run.json, meta.json, eval.json, caches)."""
    try:
        return json.loads(read_text_file(path, "file"))
    except (UserError, ValueError, RecursionError):
        return None
