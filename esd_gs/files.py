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


def special_kind(mode: int) -> str:
    """What a file whose ``st_mode`` is ``mode`` is, when it is not a regular file: "a folder", "a FIFO", ..."""
    if stat.S_ISDIR(mode):
        return "a folder"
    return _NOT_REGULAR.get(stat.S_IFMT(mode), "a special file")


class NotRegularFile(Exception):
    """``open_regular`` found something else than a regular file: ``kind`` says what (``special_kind``)."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


def open_regular(path: os.PathLike | str) -> int:
    """A descriptor of ``path`` for reading, checked on the open descriptor to be a regular file. The open does not
    wait for a writer (``O_NONBLOCK``), so a FIFO is refused at once instead of blocking the command forever; the
    checked file is then read with blocking calls as usual. ``NotRegularFile`` (the descriptor closed) for anything
    else; the open's own ``OSError`` as it is."""
    fd = os.open(path, OPEN_FLAGS)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(special_kind(mode))
        if hasattr(os, "O_NONBLOCK"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_text_file(path: Path, what: str = "config") -> str:
    """The UTF-8 text of a file the user names (a preset, a run's config.yaml, a job file), or one ``UserError``
    (``what`` names the file in it): missing, a folder, unreadable, not UTF-8, or not a regular file (``open_regular``:
    a FIFO or a device is refused at once)."""
    path = Path(path)
    try:
        fd = open_regular(path)
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"{what} {path} is a directory") from None
    except NotRegularFile as exc:
        if exc.kind == "a folder":
            raise UserError(f"{what} {path} is a directory") from None
        raise UserError(f"{what} {path} is not a regular file ({exc.kind})") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
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
