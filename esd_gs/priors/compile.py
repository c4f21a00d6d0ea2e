"""``--compile``: the UNet passes of phi and psi through ``torch.compile`` (Inductor), for fewer, fused kernels.

What is compiled: a UNet's whole forward (``unet_prior.UNetPrior._unet_eps`` for phi, the LoRA psi's ``_forward``,
through their ``unet_forward``); psi's training step runs its forward and backward through it (AOTAutograd compiles
the backward with the forward here, so that a compiler failure shows at the forward call). One compiled forward per
UNet: with a shared-UNet psi, phi and psi call the same one.

Graphs and recompiles: ``dynamic=False``, so each input shape gets its own graph. A step calls three kinds of pass:
phi's (no gradient, adapters off, no camera embedding), psi's scores (no gradient, adapters on) and psi's training
pass (with gradient); switching the shared UNet's role (``estimators.lora.SharedUNetRoles``) changes the module's
Python state, which Dynamo's guards check, so each kind gets its own graph once and the guards pick it at every later
call: three graphs per render size (Stable Diffusion resizes every render to its native size, so it has one size),
compiled during the first step, and none after (``tests/test_compile.py`` counts them). Dynamo's default recompile
limit (8 graphs per function) bounds the rest; a shape beyond it runs eager.

Mode: Inductor's default, on CPU and CUDA. CUDA graphs (``mode="reduce-overhead"``) are not built yet, although the
shapes are static: they exist only on a GPU, so nothing here could test them. Each of the three graphs would replay
into static output buffers that its next replay overwrites, so a run would have to mark each step's start
(``torch.compiler.cudagraph_mark_step_begin``) and clone what it keeps across passes; that is the next step once the
default mode is measured on a GPU.

On CPU, Inductor's layout optimisation (channels-last convolutions) is off (``inductor_options``): in torch 2.13 its C++
backend, fusing loops of different shapes, recomputes a node's reads without the renames that make it wait for an
in-place write (``SchedulerNode.recompute_size_and_body`` keeps them only when the node has fake dependencies), so
in the backward of a diffusers ``UpBlock2D`` (a ResnetBlock2D, then Upsample2D) a kernel reads the gradient buffer of
the upsampling before the scatter that fills it: every gradient below the block comes out zero, and psi's LoRA would
train on them. Triton's backend (CUDA) does not take that path. ``tests/test_compile.py`` compares compiled
gradients with eager ones and fails if it comes back.

A failure of the compiler (no C++ compiler for Inductor on CPU, no working Triton on CUDA, an operation it cannot
lower) is announced in one line, and the run goes on eager: that call and every UNet pass after it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..progress import console


def inductor_options(device: torch.device) -> dict[str, Any]:
    """Inductor's settings for a UNet on ``device``: on CPU without layout optimisation (module docstring: why)."""
    return {"layout_optimization": False} if device.type == "cpu" else {}


def _compile_errors() -> tuple[type[BaseException], ...]:
    """What torch.compile raises when it cannot compile (Dynamo's errors, and a backend's wrapped in them)."""
    from torch._dynamo import exc

    return (exc.TorchDynamoException, exc.BackendCompilerFailed)


class UNetCompiler:
    """Compiles the UNets of one run (``forward``); after its first compiler failure every one of them runs eager."""

    def __init__(self, announce: Callable[[str], Any] | None = None):
        self.announce = announce or console.print
        self.failure: str | None = None
        """The compiler's failure in one line, once it has failed."""

    def forward(self, unet: torch.nn.Module) -> Callable[..., Any]:
        """``unet``'s forward through ``torch.compile`` (compiled at its first call for each new graph; module
        docstring), or eager once this compiler has failed."""
        device = next(unet.parameters()).device
        compiled = torch.compile(unet, dynamic=False, options=inductor_options(device))

        def forward(*args, **kwargs):
            if self.failure is None:
                try:
                    with _backward_compiled_with_forward():
                        return compiled(*args, **kwargs)
                except _compile_errors() as exc:
                    self._fail(exc)
            return unet(*args, **kwargs)

        return forward

    def _fail(self, exc: BaseException) -> None:
        inner = getattr(exc, "inner_exception", None) or exc  # a backend's own error, which Dynamo wraps
        lines = [line.strip() for line in str(inner).splitlines() if line.strip()]
        self.failure = f"{type(inner).__name__}: {lines[0][:100] if lines else 'no message'}"
        self.announce(f"[yellow]--compile: torch.compile failed ({self.failure}); the UNet passes run eager[/yellow]")


def unsupported() -> str | None:
    """Why this torch cannot run ``--compile`` as promised, or None. The promise (one line and eager on a compiler
    failure) needs AOTAutograd to compile a backward with its forward (``force_non_lazy_backward_lowering``): with a
    lazy backward a failure would surface inside psi's ``loss.backward()``, mid-step, as a traceback."""
    from torch._functorch import config

    if not hasattr(config, "force_non_lazy_backward_lowering"):
        return f"torch {torch.__version__} compiles a backward only at its first use (tested: torch 2.13)"
    return None


def _backward_compiled_with_forward():
    """AOTAutograd compiles a backward at its first use unless told otherwise; compiled with the forward, its failure
    is caught where the forward's is (``unsupported``: a torch without the switch is not compiled at all)."""
    from torch._functorch import config

    return config.patch(force_non_lazy_backward_lowering=True)
