"""theta: the 3D Gaussian scene that score distillation optimises.

Parameters are stored raw (unconstrained), in a ``torch.nn.ParameterDict`` whose key names are the ones
gsplat's densification strategies expect, so the same dict is handed to ``gsplat.strategy.DefaultStrategy``:

================  ============  ==========================================================
key               shape         meaning (activation)
================  ============  ==========================================================
``means``         [N, 3]        centres in world space (+Z up), identity
``scales``        [N, 3]        log of the per-axis standard deviations, ``exp``
``quats``         [N, 4]        rotation quaternion ``w, x, y, z``, normalised on use
``opacities``     [N]           opacity logit, ``sigmoid``
``sh0``           [N, 1, 3]     degree-0 spherical-harmonic (DC) coefficient per RGB channel
``shN``           [N, K-1, 3]   higher SH bands, K = (degree + 1) ** 2 (K-1 = 0 for degree 0)
================  ============  ==========================================================

Colour convention (as in 3DGS and gsplat): ``rgb = clamp_min(SH(dir) + 0.5, 0)`` where the degree-0 term is
``SH_C0 * sh0``, so a plain colour ``c`` is stored as ``sh0 = (c - 0.5) / SH_C0``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .sh import num_sh_bases, sh_degree_of

SH_C0 = 0.28209479177387814
"""The degree-0 real spherical harmonic, 1 / (2 sqrt(pi))."""

PARAM_KEYS = ("means", "scales", "quats", "opacities", "sh0", "shN")
"""The raw parameters of a scene, in this order everywhere (optimisers, checkpoints, files)."""


def rgb_to_sh0(rgb: Tensor) -> Tensor:
    """Colour in [0, 1] -> degree-0 SH coefficient (inverse of ``0.5 + SH_C0 * sh0``)."""
    return (rgb - 0.5) / SH_C0


def nonfinite_rows(params: dict[str, Tensor]) -> Tensor:
    """[N] bool: the Gaussians with a NaN or Inf in any of their parameters (every value's first dim is N)."""
    n = params["means"].shape[0]
    bad = torch.zeros(n, dtype=torch.bool, device=params["means"].device)
    for value in params.values():
        bad |= ~torch.isfinite(value.reshape(n, -1)).all(dim=1)
    return bad


def nearest_neighbour_distance(points: Tensor, neighbours: int = 1, chunk: int = 2048) -> Tensor:
    """Root mean square distance from each point to its ``neighbours`` nearest other points (at most N - 1 of them;
    with 1: the distance to the nearest), [N, 3] -> [N] (chunked, exact); ones when there is no other point."""
    n = points.shape[0]
    if n < 2:
        return torch.ones(n, dtype=points.dtype, device=points.device)
    k = min(neighbours, n - 1)
    out = torch.empty(n, dtype=points.dtype, device=points.device)
    for start in range(0, n, chunk):
        block = points[start : start + chunk]
        d2 = torch.cdist(block, points).square_()
        idx = torch.arange(start, start + block.shape[0], device=points.device)
        d2[torch.arange(block.shape[0], device=points.device), idx] = float("inf")
        out[start : start + block.shape[0]] = d2.topk(k, dim=1, largest=False).values.mean(dim=1).sqrt()
    return out


class GaussianScene(torch.nn.Module):
    """A set of 3D Gaussians with raw parameters in ``self.params`` (see module docstring)."""

    def __init__(self, params: dict[str, Tensor], sh_degree: int | None = None):
        super().__init__()
        missing = [k for k in PARAM_KEYS if k not in params]
        if missing:
            raise ValueError(f"GaussianScene is missing parameters: {', '.join(missing)}")
        n = params["means"].shape[0]
        shapes = {
            "means": (n, 3),
            "scales": (n, 3),
            "quats": (n, 4),
            "opacities": (n,),
            "sh0": (n, 1, 3),
        }
        for key, shape in shapes.items():
            if tuple(params[key].shape) != shape:
                raise ValueError(f"'{key}' must have shape {list(shape)}, got {list(params[key].shape)}")
        shn = params["shN"]
        try:
            if shn.dim() != 3 or shn.shape[0] != n or shn.shape[2] != 3:
                raise ValueError
            degree = sh_degree_of(shn.shape[1] + 1)
        except ValueError:
            raise ValueError(f"'shN' must have shape [N, (d+1)^2-1, 3] with d in 0..3, got {list(shn.shape)}") from None
        if sh_degree is not None and sh_degree != degree:
            raise ValueError(f"shN holds SH degree {degree}, not {sh_degree}")
        self.params = torch.nn.ParameterDict(
            {k: torch.nn.Parameter(params[k].detach().clone().contiguous()) for k in PARAM_KEYS}
        )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_activated(
        cls,
        means: Tensor,
        scales: Tensor,
        quats: Tensor,
        opacities: Tensor,
        colors: Tensor,
        sh_degree: int = 0,
    ) -> GaussianScene:
        """Build from activated values: scales (std-devs > 0), opacities in (0, 1), RGB colours in [0, 1]."""
        n = means.shape[0]
        eps = 1e-6
        return cls(
            {
                "means": means,
                "scales": torch.log(scales.clamp_min(1e-12)),
                "quats": quats,
                "opacities": torch.logit(opacities.clamp(eps, 1 - eps)),
                "sh0": rgb_to_sh0(colors).reshape(n, 1, 3),
                "shN": torch.zeros(n, num_sh_bases(sh_degree) - 1, 3, dtype=means.dtype, device=means.device),
            }
        )

    @classmethod
    def random_ball(
        cls,
        num_points: int,
        radius: float,
        opacity: float,
        color: float = 0.5,
        sh_degree: int = 0,
        generator: torch.Generator | None = None,
    ) -> GaussianScene:
        """``num_points`` centres uniform in a ball of ``radius`` at the origin; isotropic scale = distance to the
        nearest neighbour; gray level ``color``; identity rotation (``initial.BallInit``, ``--init ball``)."""
        if num_points < 1:
            raise ValueError("num_points must be at least 1")
        direction = torch.randn(num_points, 3, generator=generator)
        direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
        distance = radius * torch.rand(num_points, generator=generator).pow(1.0 / 3.0)
        means = direction * distance[:, None]
        scale = nearest_neighbour_distance(means).clamp_min(1e-4)
        quats = torch.zeros(num_points, 4)
        quats[:, 0] = 1.0
        return cls.from_activated(
            means=means,
            scales=scale[:, None].expand(num_points, 3),
            quats=quats,
            opacities=torch.full((num_points,), opacity),
            colors=torch.full((num_points, 3), color),
            sh_degree=sh_degree,
        )

    # ------------------------------------------------------------------ views
    @property
    def num_gaussians(self) -> int:
        return self.params["means"].shape[0]

    @property
    def sh_degree(self) -> int:
        return sh_degree_of(self.params["shN"].shape[1] + 1)

    @property
    def device(self) -> torch.device:
        return self.params["means"].device

    @property
    def means(self) -> Tensor:
        return self.params["means"]

    @property
    def scales(self) -> Tensor:
        """Activated scales (standard deviations), [N, 3]."""
        return torch.exp(self.params["scales"])

    @property
    def quats(self) -> Tensor:
        """Unit quaternions w, x, y, z, [N, 4]."""
        return torch.nn.functional.normalize(self.params["quats"], dim=-1)

    @property
    def opacities(self) -> Tensor:
        """Activated opacities in (0, 1), [N]."""
        return torch.sigmoid(self.params["opacities"])

    @property
    def sh(self) -> Tensor:
        """All SH coefficients, [N, K, 3] (K = (degree+1)^2)."""
        return torch.cat([self.params["sh0"], self.params["shN"]], dim=1)

    def raw(self) -> dict[str, Tensor]:
        """Detached copies of the raw parameters (for export and checkpoints)."""
        return {k: v.detach().clone() for k, v in self.params.items()}
