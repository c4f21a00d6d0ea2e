"""How closely esd-gs's PyTorch renderer must match gsplat: the tolerances that the project's gsplat test
(``tests/test_render.py::test_cpu_renderer_matches_gsplat``) and the GPU acceptance run
(``benchmarks/gpu_acceptance.py``) both hold the two renderers to. Each is a ``torch.allclose`` tolerance (|ours -
gsplat| <= atol + rtol |gsplat|, elementwise) on one scene of 2,000 random Gaussians (SH degree 3) seen by 2 cameras at
64 x 64 px: ``image`` on the stacked rgb, alpha and depth, ``grad`` on every parameter's gradient of a random weighted
sum of them."""

from __future__ import annotations

from torch import Tensor

GSPLAT_AGREEMENT: dict[str, dict[str, float]] = {
    "image": {"atol": 2e-3, "rtol": 1e-5},
    "grad": {"atol": 1e-2, "rtol": 1e-2},
}
"""``torch.allclose`` keyword arguments (atol, rtol) by what is compared (module docstring)."""


def allclose_excess(actual: Tensor, expected: Tensor, atol: float, rtol: float) -> float:
    """max |actual - expected| / (atol + rtol |expected|): at most 1 exactly where ``torch.allclose(actual, expected,
    rtol, atol)`` holds, so it says by how much a comparison passes or fails (NaN where either holds a NaN)."""
    return float(((actual - expected).abs() / (atol + rtol * expected.abs())).max())
