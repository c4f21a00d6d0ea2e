"""Small checks shared by the subcommands (defined in ``environment.py``, where the workers of batch find them too)."""

from __future__ import annotations

from ..environment import ensure_writable_dir, pick_device

__all__ = ["ensure_writable_dir", "pick_device"]
