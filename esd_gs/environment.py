"""Where a job runs and writes: the device it asked for, an output folder it can use (one-line errors)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from .errors import UserError


def pick_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}': use auto, cpu or cuda") from None
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name} is not supported: use auto, cpu or cuda (cuda:N for another GPU)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is available: use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def ensure_writable_dir(path: Path) -> None:
    """Create ``path`` (and parents) or fail with a one-line reason."""
    if path.exists() and not path.is_dir():
        raise UserError(f"output path {path} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output directory {path}: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"output directory {path} is not writable")


def check_writable_dir(path: Path) -> None:
    """Fail in one line where ``ensure_writable_dir(path)`` would, but create nothing: ``path``, or where it does not
    exist yet its nearest existing parent, must be a directory this process can create files in. Tried by making
    and removing an empty folder there (``os.access`` answers yes to root even on a read-only file system)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"output path {path} exists and is not a directory")
    nearest = Path(os.path.abspath(path))
    while not os.path.exists(nearest):
        nearest = nearest.parent
    if not os.path.isdir(nearest):
        raise UserError(f"cannot create output directory {path}: {nearest} is not a directory")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".esd-gs-write-check-", dir=nearest))
    except OSError as exc:
        if os.path.isdir(path):
            raise UserError(f"output directory {path} is not writable") from None
        raise UserError(f"cannot create output directory {path}: {exc.strerror}") from None


@contextlib.contextmanager
def removed_if_left_empty(path: Path) -> Iterator[None]:
    """When the block fails (any exception, Ctrl-C included), the folders it made of ``path`` and its missing parents
    are removed again while they hold no file (deepest first): a failed command leaves no empty folder behind, keeps
    whatever it finished, and never touches what existed before."""
    created = []  # deepest first; a "." or ".." in the path ends the list (new/.. is a folder that exists)
    for folder in (Path(path), *Path(path).parents):
        if folder.name in ("", ".", "..") or os.path.lexists(folder):
            break
        created.append(folder)
    try:
        yield
    except BaseException:
        for folder in created:
            if not _remove_empty_tree(folder):
                break
        raise


def _remove_empty_tree(folder: Path) -> bool:
    """Remove ``folder`` and the folders under it, with ``os.rmdir`` only, which removes nothing but an empty
    folder (never a file, a link, or a file written meanwhile); False where something stays."""
    if os.path.islink(folder) or not os.path.isdir(folder):
        return False
    try:
        for root, dirs, _ in os.walk(folder, topdown=False):
            for name in dirs:
                os.rmdir(os.path.join(root, name))
        os.rmdir(folder)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def output_folder(path: Path) -> Iterator[Path]:
    """``ensure_writable_dir(path)`` for the block, removed again if the block fails (``removed_if_left_empty``)."""
    with removed_if_left_empty(path):
        ensure_writable_dir(path)
        yield Path(path)
