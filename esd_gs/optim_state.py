"""A torch optimiser's state as safetensors-friendly tensors plus JSON-able settings (nothing is pickled).

Tensor keys are ``optim.<name>.<param index>.<state key>``; the settings are ``{"groups": param_groups, "scalars":
{"<param index>.<state key>": value}}``. Used by checkpoints for theta's optimisers and by the learned psi.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


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


def optimizer_from_flat(
    name: str, optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict, device
) -> None:
    """Restore ``optimizer`` from ``optimizer_to_flat``'s tensors and settings: its state tensors on ``device``,
    except Adam's ``step`` counters, which stay on the CPU as torch keeps them (a counter on a GPU costs a host sync
    per parameter per step); torch's ``load_state_dict`` moves them itself when a group is capturable or fused."""
    prefix = f"optim.{name}."
    entries: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix):
            index, state_key = key[len(prefix) :].split(".", 1)
            entries.setdefault(int(index), {})[state_key] = value if state_key == "step" else value.to(device)
    for key, value in meta["scalars"].items():
        index, state_key = key.split(".", 1)
        entries.setdefault(int(index), {})[state_key] = value
    optimizer.load_state_dict({"state": entries, "param_groups": meta["groups"]})
