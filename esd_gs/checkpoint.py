"""Checkpoints of a generate run: tensors in safetensors, everything else in JSON (nothing is ever unpickled).

A checkpoint directory ``RUN/checkpoint/`` holds

- ``tensors-<step>-<id>.safetensors``: the scene parameters (``scene.<key>``), every optimiser's tensor state
  (``optim.<name>.<param index>.<state key>``), the densification running state (``densify.<key>``), psi's weights and
  its optimiser state (``psi.*``, ``psi_optim.*``) and the random-number-generator states (``rng.*``, as uint8);
- ``meta.json``: the step to continue from, counters, the optimisers' param-group settings (learning rates...), and
  ``tensors``: the name of the tensor file it belongs to.

Saving never destroys the previous checkpoint: the new tensors go to a new file beside the old one, then
``meta.json`` is replaced atomically (the switch), and only then are older tensor files removed. A crash, a full disk
or a second signal at any moment leaves either the old or the new checkpoint complete. A checkpoint of the first
layout (``tensors.safetensors`` with a ``meta.json`` that names no file) still loads.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as serialize
from torch import Tensor

from .atomic import atomic_path, atomic_write_bytes
from .errors import UserError

TENSORS = "tensors.safetensors"
META = "meta.json"


def optimizer_to_flat(name: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split an optimiser's state_dict into tensors (safetensors) and JSON-able settings."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{name}.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    groups = [{k: v for k, v in group.items()} for group in state["param_groups"]]
    return tensors, {"groups": groups, "scalars": scalars}


def optimizer_from_flat(name: str, optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict, device) -> None:
    prefix = f"optim.{name}."
    entries: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix):
            index, state_key = key[len(prefix):].split(".", 1)
            entries.setdefault(int(index), {})[state_key] = value.to(device)
    for key, value in meta["scalars"].items():
        index, state_key = key.split(".", 1)
        entries.setdefault(int(index), {})[state_key] = value
    optimizer.load_state_dict({"state": entries, "param_groups": meta["groups"]})


def rng_tensor(state: Tensor) -> Tensor:
    return state.detach().cpu().to(torch.uint8).contiguous()


def save_checkpoint(directory: Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Write a new checkpoint beside the current one and switch to it atomically (see the module docstring)."""
    directory.mkdir(parents=True, exist_ok=True)
    for leftover in directory.glob(".*.tmp*"):  # half-written files of a save that was killed
        leftover.unlink(missing_ok=True)
    name = f"tensors-{int(meta.get('step', 0)):08d}-{secrets.token_hex(4)}.safetensors"
    # Serialised in memory and written by Python, so a full disk is an OSError like any other file error.
    data = serialize({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata={"format": "esd-gs"})
    atomic_write_bytes(directory / name, [data])
    with atomic_path(directory / META) as tmp:  # the switch: from here on the new checkpoint is the one
        tmp.write_text(json.dumps({**meta, "tensors": name}, indent=1))
    for old in directory.glob("tensors*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


def checkpoint_tensor_file(directory: Path) -> Path | None:
    """The tensor file the current ``meta.json`` names (None without a readable meta.json)."""
    try:
        meta = json.loads((directory / META).read_text())
    except (OSError, ValueError):
        return None
    name = meta.get("tensors", TENSORS) if isinstance(meta, dict) else None
    if not isinstance(name, str) or "/" in name or not name.endswith(".safetensors"):
        return None
    return directory / name


def has_checkpoint(directory: Path) -> bool:
    """Whether ``directory`` holds a complete checkpoint: a meta.json and the tensor file it names."""
    tensor_path = checkpoint_tensor_file(directory)
    return tensor_path is not None and tensor_path.is_file()


def load_checkpoint(directory: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    meta_path, tensor_path = directory / META, checkpoint_tensor_file(directory)
    if not has_checkpoint(directory):
        raise UserError(f"{directory.parent} has no complete checkpoint to resume from")
    try:
        meta = json.loads(meta_path.read_text())
        tensors = load_file(str(tensor_path))
    except Exception as exc:  # OSError, JSON errors, and safetensors' own error type on corrupt files
        raise UserError(f"checkpoint in {directory} is unreadable ({type(exc).__name__})") from None
    return tensors, meta
