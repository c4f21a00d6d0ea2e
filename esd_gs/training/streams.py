"""Every random draw of a run, from generators seeded by its seed, and their part of the run's checkpoints.

- ``camera`` (CPU, seeded ``seed``): the cameras and backgrounds of each step and of the renders psi asks for;
- ``noise`` (on the run's device, seeded ``seed + 1``): the diffusion noise, and psi's training draws; the diffusion
  timesteps too where it is a CPU generator;
- torch's global generator, seeded ``seed`` when the streams are made: psi's initialisation (so make the streams
  before psi), gsplat's split, and the timesteps on CUDA; on CUDA also the device's generator.

In a checkpoint (``checkpoint.py``) the generators' states are the tensors ``global``, ``camera``, ``noise`` and, on
CUDA, ``cuda`` (uint8, ``checkpoint.rng_tensor``); the settings are the device type they were drawn on, which
meta.json keeps under ``device``. A generator's state cannot move between CPU and CUDA: such a checkpoint restores
every stream but the noise (and the CUDA generator), and says so (``load_checkpoint_state`` returns False).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .checkpoint import rng_tensor


class RandomStreams:
    """The generators of one run on ``device`` (module docstring)."""

    def __init__(self, seed: int, device: torch.device):
        torch.manual_seed(seed)
        self.device = device
        self.camera = torch.Generator().manual_seed(seed)
        self.noise = torch.Generator(device=device).manual_seed(seed + 1)

    def checkpoint_state(self) -> tuple[dict[str, Tensor], str]:
        """(states, the device type) in the layout of the module docstring."""
        states = {
            "global": rng_tensor(torch.get_rng_state()),
            "camera": rng_tensor(self.camera.get_state()),
            "noise": rng_tensor(self.noise.get_state()),
        }
        if self.device.type == "cuda":
            states["cuda"] = rng_tensor(torch.cuda.get_rng_state(self.device))
        return states, self.device.type

    def load_checkpoint_state(self, states: dict[str, Tensor], device_type: str | None) -> bool:
        """Continue every stream from ``checkpoint_state``'s (states, device type; None: not recorded, as in early
        checkpoints). Returns False, leaving the noise and CUDA generators as they are, when the noise state was
        drawn on another kind of device: the caller re-seeds the noise."""
        torch.set_rng_state(states["global"])
        self.camera.set_state(states["camera"])
        noise_state = states["noise"]
        same_kind = noise_state.numel() == self.noise.get_state().numel()  # CPU and CUDA states differ in size
        if not ((device_type is None or device_type == self.device.type) and same_kind):
            return False
        self.noise.set_state(noise_state.to(self.noise.get_state().device))
        if "cuda" in states and self.device.type == "cuda":
            torch.cuda.set_rng_state(states["cuda"], self.device)
        return True
