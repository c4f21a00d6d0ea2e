"""Checkpoints of a generate run: tensors in safetensors, everything else in JSON (nothing is ever unpickled).

A checkpoint directory ``RUN/checkpoint/`` holds

- ``tensors-<step>-<id>.safetensors``: the scene parameters (``scene.<key>``), every optimiser's tensor state
  (``optim.<name>.<param index>.<state key>``), the densification running state (``densify.<key>``), psi's tensors
  (``psi.*``: whatever its ``ScoreEstimator.checkpoint_state`` returns) and the random-number-generator states
  (``rng.*``, as uint8);
- ``meta.json``: the step to continue from, counters, the optimisers' param-group settings (learning rates...), psi's
  settings (``psi``), and ``tensors``: the name of the tensor file it belongs to.

Each part of a run writes and reads its own state, as (tensors, settings) from ``checkpoint_state`` and to
``load_checkpoint_state``; the ``Trainer`` files them by prefix and meta.json key: ``training.theta`` (the scene and
its optimisers: ``scene.*`` and ``optim.*``, ``optimizers``), ``training.densify`` (``densify.*``, no settings),
psi (``psi.*``, ``psi``) and ``training.streams`` (``rng.*``, ``device``).

Saving never destroys the previous checkpoint: the new tensors go to a new file beside the old one, then
``meta.json`` is replaced atomically (the switch), and only then are older tensor files removed. Every rename is
followed by a flush of the folder (``atomic.fsync_directory``), and so is the checkpoint folder's creation, so that
a power loss also leaves a complete checkpoint. A crash, a full disk
or a second signal at any moment leaves either the old or the new checkpoint complete. A checkpoint of the first
layout (``tensors.safetensors`` with a ``meta.json`` that names no file) still loads, and so does one written by
esd-gs 0.1, whose psi kept its optimiser under ``psi_optim.*`` and its settings beside the scene's
(``psi_checkpoint_state``).
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

from ..atomic import atomic_path, atomic_write_bytes, fsync_directory
from ..errors import UserError
from ..files import read_json_or_none, read_text_file
from ..scene import PARAM_KEYS, GaussianScene

TENSORS = "tensors.safetensors"
META = "meta.json"


def rng_tensor(state: Tensor) -> Tensor:
    return state.detach().cpu().to(torch.uint8).contiguous()


def save_checkpoint(directory: Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Write a new checkpoint beside the current one and switch to it atomically (see the module docstring)."""
    if not directory.is_dir():
        directory.mkdir(parents=True, exist_ok=True)
        fsync_directory(directory.parent)  # the new folder's name, before anything in it counts
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
    fsync_directory(directory)


def checkpoint_tensor_file(directory: Path) -> Path | None:
    """The tensor file the current ``meta.json`` names (None without a readable meta.json)."""
    meta = read_json_or_none(directory / META)
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
        meta = json.loads(read_text_file(meta_path, "checkpoint file"))
        tensors = load_file(str(tensor_path))
    except Exception as exc:  # OSError, JSON errors, and safetensors' own error type on corrupt files
        raise UserError(f"checkpoint in {directory} is unreadable ({type(exc).__name__})") from None
    return tensors, meta


def checkpoint_part(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The tensors named ``<prefix><name>``, by ``name``: one part's tensors (module docstring)."""
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def psi_checkpoint_state(tensors: dict[str, Tensor], meta: dict) -> tuple[dict[str, Tensor], dict]:
    """psi's (tensors, settings) from a checkpoint, for ``ScoreEstimator.load_checkpoint_state``; also from the
    layout of esd-gs 0.1 (optimiser tensors under ``psi_optim.*``; its settings, the camera-dropout counter and the
    loss scaler at the top of meta.json)."""
    state = checkpoint_part(tensors, "psi.")
    if "psi" in meta:
        return state, meta["psi"]
    state.update({k[len("psi_") :]: v for k, v in tensors.items() if k.startswith("psi_optim.")})
    legacy = {"optimizer": meta.get("optimizers", {}).get("psi"), "null_rate_counter": meta.get("null_rate_counter")}
    if "psi_grad_scaler" in meta:
        legacy["grad_scaler"] = meta["psi_grad_scaler"]
    return state, legacy


def check_checkpoint(tensors: dict, meta: dict, steps: int) -> None:
    """Refuse a parseable but wrong checkpoint before anything is restored, and before any model loads
    (KeyError/TypeError/ValueError, which the command turns into one line): counters, optimiser settings, the scene
    (types, shapes, at least one Gaussian, finite values), each scene optimiser's Adam state (complete, shaped like
    its parameter, finite), the densification statistics and the generator states. Everything that restoring theta
    reads is checked here, so that a checkpoint that passes cannot fail at the first step."""

    def count(name: str, high: int | None = None) -> int:
        value = meta.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0 or (high is not None and value > high):
            raise ValueError(f"meta.json {name} = {value!r} is not a count" + (f" in 0..{high}" if high else ""))
        return value

    if not isinstance(meta, dict):
        raise TypeError("meta.json is not a mapping")
    count("step", steps)
    count("skipped")
    count("bad_in_a_row")
    optimizers = meta.get("optimizers")
    if not isinstance(optimizers, dict):
        raise KeyError("meta.json has no optimizers")
    psi = meta.get("psi")
    if isinstance(psi, dict) and psi.get("optimizer") is not None:
        optimizers = {**optimizers, "psi": psi["optimizer"]}
    for name, entry in optimizers.items():
        groups = entry.get("groups") if isinstance(entry, dict) else None
        if not isinstance(groups, list) or not groups or not isinstance(entry.get("scalars"), dict):
            raise ValueError(f"meta.json optimizers.{name} has no param groups")
        for group in groups:
            if not isinstance(group, dict):
                raise ValueError(f"meta.json optimizers.{name} has a param group that is not a mapping")
            numbers = [group.get(k) for k in ("lr", "eps", "weight_decay")] + list(group.get("betas") or [None])
            if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in numbers):
                raise ValueError(f"meta.json optimizers.{name} has a non-numeric setting")
            if not group["lr"] >= 0 or len(group["betas"]) != 2:
                raise ValueError(f"meta.json optimizers.{name} has a negative learning rate or bad betas")
    for key in PARAM_KEYS:
        tensor = tensors.get(f"scene.{key}")
        if tensor is None or tensor.dtype != torch.float32:
            raise ValueError(f"scene.{key} is missing or not float32")
    scene = {key: tensors[f"scene.{key}"] for key in PARAM_KEYS}
    GaussianScene(scene)  # the shapes ([N, 3], [N, 4], ...): ValueError naming the tensor
    rows = scene["means"].shape[0]
    if rows == 0:
        raise ValueError("the scene has no Gaussians (0 rows)")
    for key, tensor in scene.items():
        bad = int((~torch.isfinite(tensor.reshape(rows, -1))).any(dim=1).sum())
        if bad:
            raise ValueError(f"scene.{key} holds NaN or infinite values in {bad} of its {rows} rows")
    for key in PARAM_KEYS:
        _check_optimizer_state(key, tensors, optimizers.get(key), scene[key])
    for name, tensor in tensors.items():  # gsplat's running statistics: one entry per Gaussian
        if name.startswith("densify.") and (tensor.dim() != 1 or tensor.shape[0] != rows):
            raise ValueError(f"{name} has shape {list(tensor.shape)}, not [{rows}] like the scene")
    for name in ("rng.global", "rng.camera", "rng.noise"):
        state = tensors.get(name)
        if state is None or state.dtype != torch.uint8 or state.dim() != 1:
            raise KeyError(f"{name} is missing or not a generator state")


ADAM_STATE = ("step", "exp_avg", "exp_avg_sq")
"""What Adam keeps per parameter once it has stepped (an optimiser that never stepped keeps nothing)."""


def _check_optimizer_state(key: str, tensors: dict, entry, param: Tensor) -> None:
    """The Adam state of scene parameter ``key``: one param group holding the one parameter, and either no state
    (it never stepped) or all of ``ADAM_STATE``, its moments shaped like the parameter and finite."""
    where = f"the optimiser of scene.{key}"
    if not isinstance(entry, dict):
        raise KeyError(f"meta.json has no optimiser for scene.{key}")
    groups = entry["groups"]
    if len(groups) != 1 or groups[0].get("params") != [0]:
        raise ValueError(f"{where} does not hold exactly one parameter")
    prefix = f"optim.{key}."
    state: dict[str, Any] = {}
    for name, value in [*tensors.items(), *((f"{prefix}{k}", v) for k, v in entry["scalars"].items())]:
        if name.startswith(prefix):
            index, _, state_key = name[len(prefix) :].partition(".")
            if index != "0" or not state_key:
                raise ValueError(f"{where} has state for a parameter it does not hold ({name})")
            state[state_key] = value
    if not state:
        return
    missing = [name for name in ADAM_STATE if name not in state]
    if missing:
        raise ValueError(f"{where} lacks its {', '.join(missing)}")
    step = state["step"]
    step = step.item() if isinstance(step, Tensor) and step.numel() == 1 else step
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not 0 <= step < float("inf"):
        raise ValueError(f"{where} has a step count that is not a count")
    for name in ("exp_avg", "exp_avg_sq"):
        moment = state[name]
        if not isinstance(moment, Tensor) or moment.dtype != torch.float32 or moment.shape != param.shape:
            shape = list(moment.shape) if isinstance(moment, Tensor) else type(moment).__name__
            raise ValueError(f"{where} has {name} of shape {shape}, not {list(param.shape)} like the parameter")
        # NaN never comes from a step esd-gs takes (steps with a non-finite gradient are skipped); +inf can, where a
        # huge gradient's square overflows exp_avg_sq, and Adam copes with it (that entry's update is 0).
        if bool(torch.isnan(moment).any()) or (name == "exp_avg" and not bool(torch.isfinite(moment).all())):
            raise ValueError(f"{where} holds NaN or infinite values in its {name}")
