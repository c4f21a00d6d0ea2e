"""Checkpoints of a generate run: tensors in safetensors, everything else in JSON (nothing is ever unpickled).

A checkpoint directory ``RUN/checkpoint/`` holds

- ``tensors.safetensors``: the scene parameters (``scene.<key>``), every optimiser's tensor state
  (``optim.<name>.<param index>.<state key>``), the densification running state (``densify.<key>``), psi's weights and
  its optimiser state (``psi.*``, ``psi_optim.*``) and the random-number-generator states (``rng.*``, as uint8);
- ``meta.json``: the step to continue from, counters, and the optimisers' param-group settings (learning rates...).

Both files are written atomically; ``meta.json`` last, so a checkpoint without it is incomplete and ignored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from .atomic import atomic_path
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
    """Write one checkpoint (replacing the previous one file by file, each atomically)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / META).unlink(missing_ok=True)  # mark incomplete until the new meta lands
    with atomic_path(directory / TENSORS) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata={"format": "esd-gs"})
    with atomic_path(directory / META) as tmp:
        tmp.write_text(json.dumps(meta, indent=1))


def load_checkpoint(directory: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    meta_path, tensor_path = directory / META, directory / TENSORS
    if not meta_path.is_file() or not tensor_path.is_file():
        raise UserError(f"{directory.parent} has no complete checkpoint to resume from")
    try:
        meta = json.loads(meta_path.read_text())
        tensors = load_file(str(tensor_path))
    except Exception as exc:  # OSError, JSON errors, and safetensors' own error type on corrupt files
        raise UserError(f"checkpoint in {directory} is unreadable ({type(exc).__name__})") from None
    return tensors, meta
