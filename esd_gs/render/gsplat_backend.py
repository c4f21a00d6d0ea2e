"""The CUDA backend: gsplat's ``rasterization``, and a probe of whether its CUDA kernels can be loaded.

gsplat ships its CUDA code as source: on first use (the import of ``gsplat.cuda._backend``) it loads a prebuilt
``gsplat.csrc`` if one is installed, else a cached JIT build, else it JIT-compiles the kernels with nvcc (minutes),
and if no CUDA toolkit is found it leaves the extension unset (``_C = None``), so the first rasterization dies with
an AttributeError. ``probe_gsplat`` finds out which case holds once per process, says before a first build that one
is starting, and reports failure as a reason the caller can show in one line; ``gsplat_build_state`` tells the same
without building anything (for ``esd-gs doctor``).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import time
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

BuildState = Literal["no-cuda", "prebuilt", "cached", "buildable", "no-toolkit"]

EXTENSION_NAME = "gsplat_cuda"
"""The name gsplat gives its JIT-built extension (``gsplat/cuda/_backend.py``)."""


@dataclass(frozen=True)
class GsplatProbe:
    """Whether gsplat can rasterize in this process."""

    ok: bool
    reason: str
    """Why not (one sentence), or how it was loaded."""
    build_seconds: float | None = None
    """Time of the JIT build when this probe built the kernels, else None."""


def find_nvcc() -> str | None:
    """Path of the CUDA compiler gsplat's JIT build would use (CUDA_HOME/bin/nvcc as torch finds it, or PATH)."""
    try:
        from torch.utils.cpp_extension import _find_cuda_home

        home = _find_cuda_home()
    except Exception:  # a private torch helper: never let its absence break the probe
        home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and os.path.isfile(os.path.join(home, "bin", "nvcc")):
        return os.path.join(home, "bin", "nvcc")
    return shutil.which("nvcc")


def jit_build_dir() -> str | None:
    """torch's extension build folder for gsplat's kernels (where a finished build leaves gsplat_cuda.so)."""
    try:
        from torch.utils.cpp_extension import _get_build_directory

        return _get_build_directory(EXTENSION_NAME, verbose=False)
    except Exception:
        return None


def gsplat_build_state() -> BuildState:
    """How gsplat's kernels would load here, without building or importing them.

    no-cuda: torch sees no CUDA device; prebuilt: an installed ``gsplat.csrc``; no-toolkit: no nvcc, so nothing to
    build with (gsplat then ignores even a cached build); cached: a finished JIT build; buildable: nvcc is there, so
    the first render builds the kernels (minutes). A cached build made for another gsplat or torch version is rebuilt
    by gsplat without notice: that cannot be told apart here without building.
    """
    if not torch.cuda.is_available():
        return "no-cuda"
    try:
        if importlib.util.find_spec("gsplat.csrc") is not None:
            return "prebuilt"
    except (ImportError, ValueError):
        pass
    if not find_nvcc():  # gsplat looks at its JIT cache only when it finds a CUDA toolkit
        return "no-toolkit"
    build_dir = jit_build_dir()
    if build_dir and any(os.path.exists(os.path.join(build_dir, EXTENSION_NAME + ext)) for ext in (".so", ".lib")):
        return "cached"
    return "buildable"


def _import_backend():
    """Import gsplat's extension loader (this is what builds the kernels when no build exists)."""
    return importlib.import_module("gsplat.cuda._backend")


_PROBE: GsplatProbe | None = None


def probe_gsplat(announce=print) -> GsplatProbe:
    """Load gsplat's CUDA kernels once per process (building them first if needed) and say whether they work.

    ``announce`` receives one line before a first build ("building gsplat's CUDA kernels ..."), which takes minutes.
    The result is cached: later calls are free.
    """
    global _PROBE
    if _PROBE is not None:
        return _PROBE
    state = gsplat_build_state()
    if state == "no-cuda":
        _PROBE = GsplatProbe(False, "torch sees no CUDA device")
        return _PROBE
    if state == "no-toolkit":
        _PROBE = GsplatProbe(
            False,
            "gsplat's CUDA kernels are not built and cannot be: no nvcc (CUDA toolkit) was found; install the CUDA "
            f"toolkit matching torch's CUDA {torch.version.cuda} (or a gsplat wheel with prebuilt kernels)",
        )
        return _PROBE
    start = time.perf_counter()
    if state == "buildable":
        announce("building gsplat's CUDA kernels (first run only, a few minutes)")
    try:
        backend = _import_backend()
    except Exception as exc:  # a failed compile or an ABI mismatch: report it, fall back
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        _PROBE = GsplatProbe(False, f"gsplat's CUDA kernels failed to load ({type(exc).__name__}: {first[:200]})")
        return _PROBE
    seconds = time.perf_counter() - start if state == "buildable" else None
    if getattr(backend, "_C", None) is None:
        _PROBE = GsplatProbe(False, "gsplat could not load or build its CUDA kernels (its extension is unset)")
        return _PROBE
    try:
        _smoke_test()
    except Exception as exc:  # e.g. a prebuilt wheel without kernels for this GPU ("no kernel image")
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        _PROBE = GsplatProbe(
            False, f"gsplat's CUDA kernels loaded but failed on this GPU ({type(exc).__name__}: {first[:200]})"
        )
        return _PROBE
    _PROBE = GsplatProbe(True, f"gsplat kernels loaded ({state})", seconds)
    return _PROBE


def _smoke_test() -> None:
    """One Gaussian rendered with gsplat, forward and backward, on the current CUDA device."""
    device = torch.device("cuda")
    means = torch.tensor([[0.0, 0.0, 2.0]], device=device, requires_grad=True)
    rgb, _, _, _ = rasterize_gsplat(
        means,
        torch.tensor([[1.0, 0.0, 0.0, 0.0]], device=device),
        torch.full((1, 3), -2.0, device=device),
        torch.tensor([0.5], device=device),
        torch.full((1, 1, 3), 0.5, device=device),
        0,
        torch.eye(4, device=device)[None],
        torch.tensor([[[16.0, 0, 8], [0, 16.0, 8], [0, 0, 1]]], device=device),
        16,
        16,
        torch.zeros(1, 3, device=device),
        0.3,
        0.01,
    )
    rgb.sum().backward()
    torch.cuda.synchronize()


def reset_probe() -> None:
    """Forget the cached probe (tests)."""
    global _PROBE
    _PROBE = None


def rasterize_gsplat(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    sh: Tensor,
    sh_degree: int,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    backgrounds: Tensor,
    eps2d: float,
    near_plane: float,
) -> tuple[Tensor, Tensor, Tensor, dict]:
    """Render with gsplat. Returns rgb [C,H,W,3], alpha [C,H,W,1], expected depth [C,H,W,1] and gsplat's info."""
    from gsplat import rasterization

    render, alpha, info = rasterization(
        means=means,
        quats=quats,
        scales=scales,
        opacities=opacities,
        colors=sh,
        viewmats=viewmats,
        Ks=Ks,
        width=width,
        height=height,
        sh_degree=sh_degree,
        backgrounds=backgrounds,
        render_mode="RGB+ED",
        eps2d=eps2d,
        near_plane=near_plane,
        packed=False,
        rasterize_mode="classic",
    )
    return render[..., :3], alpha, render[..., 3:4], info
