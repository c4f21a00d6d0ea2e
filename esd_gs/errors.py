"""The exceptions the command line turns into one line: ``UserError`` (exit code 2), ``OutOfMemory`` (exit code 1)
and ``Stopped`` (a stop signal outside the stages that handle one themselves: exit code 128 + the signal), and
``public_names``, which keeps the hidden temporary names of files being written out of the messages."""

import re
import signal


class UserError(Exception):
    """Bad input from the user (a file, a flag, a path): the message says what is wrong and what to do."""


class ConfigError(UserError, ValueError):
    """A setting outside what it accepts, raised by a config's own checks (``__post_init__``). A ``ValueError`` too,
    so tyro and the YAML reader report it as the bad value of the option they were reading."""


class OutOfMemory(Exception):
    """The GPU ran out of memory (``torch.cuda.OutOfMemoryError``, also ``torch.OutOfMemoryError`` from torch 2.5):
    the message names the settings to lower and where the work done so far was kept. Exit code 1, like a failed run."""


def out_of_memory(error: Exception) -> str:
    """The start of the line for torch's ``OutOfMemoryError``: ``the GPU ran out of memory (tried to allocate 2.00
    GiB)``, with the allocation where its message names one; the rest of that message (the device's capacity, the
    caching allocator's advice) is a paragraph, not a line."""
    found = re.search(r"[Tt]ried to allocate (\d+(?:\.\d+)? ?[KMGTP]?i?B)", str(error))
    return "the GPU ran out of memory" + (f" (tried to allocate {found[1]})" if found else "")


class Stopped(BaseException):
    """SIGTERM (or SIGINT) where nothing is running that must save its work (start-up: imports, checks, Ray joining):
    the command ends as ``esd-gs: interrupted``, exit code 128 + ``signum``. A ``BaseException``, like
    ``KeyboardInterrupt``, so that no ``except Exception`` swallows it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_EDGE_BEFORE, _EDGE_AFTER = r"""(?<![^\s/'"(])""", r"""(?=[\s/'",:;)]|$)"""
_TEMPORARY_FILE = re.compile(
    _EDGE_BEFORE + r"""\.(?P<stem>[^\s/'"]+?)\.[0-9a-f]{12}\.tmp(?P<suffix>\.[^\s/'".]+)?""" + _EDGE_AFTER
)
"""``atomic.atomic_path``'s hidden temporary file: ``.<stem>.<12 hex digits>.tmp<suffix>``."""
_STAGING_FOLDER = re.compile(_EDGE_BEFORE + r"""\.(?P<name>[^\s/'"]+)\.partial""" + _EDGE_AFTER)
"""A folder filled under a hidden name, then renamed (``.<name>.partial``: the fitted synthetic UNet's cache)."""


def public_names(text: str) -> str:
    """``text`` (an error message) with every hidden temporary name replaced by the name of the file or folder it
    was to become: a full disk is reported as failing to write ``scene.ply``, not ``.scene.3f2a9c01b2d4.tmp.ply``."""
    text = _TEMPORARY_FILE.sub(lambda m: m["stem"] + (m["suffix"] or ""), text)
    return _STAGING_FOLDER.sub(lambda m: m["name"], text)
