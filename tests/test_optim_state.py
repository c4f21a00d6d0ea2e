"""Optimiser state through a checkpoint (``optim_state``): restored bit for bit, with Adam's step counters on the CPU.

torch's Adam keeps each parameter's ``step`` on the CPU unless the group is capturable or fused; a restore that moved
them to the GPU cost one host sync per parameter per step after every ``--resume`` on CUDA. No GPU here, so the rule
is tested on the meta device: the moments go where they are sent, the counters stay on the CPU.
"""

import pytest
import torch
from safetensors.torch import load, save

from esd_gs.optim_state import optimizer_from_flat, optimizer_to_flat

OPTIMIZERS = {  # theta's (training/theta.py) and psi's (estimators/online.py)
    "adam": lambda params: torch.optim.Adam(params, lr=1e-2, eps=1e-15),
    "adamw": lambda params: torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.99), weight_decay=1e-2),
}


def make_params(device="cpu") -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(0)
    shapes = [(5, 3), (7,), (2, 4, 3)]
    return [torch.nn.Parameter(torch.randn(shape, generator=gen).to(device)) for shape in shapes]


def train(optimizer: torch.optim.Optimizer, params, steps: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = sum((p * torch.randn(p.shape, generator=gen)).sum() + p.pow(2).sum() for p in params)
        loss.backward()
        optimizer.step()


def through_a_file(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return load(save(tensors))  # as a checkpoint stores them: safetensors, nothing pickled


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_a_restored_optimizer_continues_bit_for_bit_like_one_never_saved(kind):
    params = make_params()
    optimizer = OPTIMIZERS[kind](params)
    train(optimizer, params, steps=3, seed=1)
    tensors, meta = optimizer_to_flat("x", optimizer)
    restored_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    restored = OPTIMIZERS[kind](restored_params)
    optimizer_from_flat("x", restored, through_a_file(tensors), meta, torch.device("cpu"))
    for param in restored_params:
        assert restored.state[param]["step"].device.type == "cpu"
    train(optimizer, params, steps=4, seed=2)
    train(restored, restored_params, steps=4, seed=2)
    for original, again in zip(params, restored_params):
        assert torch.equal(original, again)
        for key, value in optimizer.state[original].items():
            assert torch.equal(value, restored.state[again][key]), key


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_a_restore_onto_a_device_sends_the_moments_there_and_keeps_the_step_counters_on_the_cpu(kind):
    params = make_params()
    optimizer = OPTIMIZERS[kind](params)
    train(optimizer, params, steps=2, seed=1)
    tensors, meta = optimizer_to_flat("x", optimizer)
    on_device = make_params(device="meta")  # another device than the CPU, as a GPU is
    restored = OPTIMIZERS[kind](on_device)
    optimizer_from_flat("x", restored, through_a_file(tensors), meta, torch.device("meta"))
    for param in on_device:
        state = restored.state[param]
        assert state["exp_avg"].device.type == "meta" and state["exp_avg_sq"].device.type == "meta"
        assert state["step"].device.type == "cpu" and float(state["step"]) == 2.0


def test_a_capturable_optimizer_gets_its_step_counters_beside_its_parameters():
    """torch's own rule for capturable (and fused) groups, which the restore leaves to ``load_state_dict``."""
    params = make_params()
    optimizer = torch.optim.Adam(params, lr=1e-2)
    train(optimizer, params, steps=2, seed=1)
    tensors, meta = optimizer_to_flat("x", optimizer)
    meta["groups"][0]["capturable"] = True
    on_device = make_params(device="meta")
    restored = torch.optim.Adam(on_device, lr=1e-2, capturable=True)
    optimizer_from_flat("x", restored, through_a_file(tensors), meta, torch.device("meta"))
    assert all(restored.state[p]["step"].device.type == "meta" for p in on_device)
