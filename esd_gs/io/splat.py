"""antimatter15's ``.splat``: 32 bytes per Gaussian, no header, no view-dependent colour.

Record layout (little endian), one per Gaussian::

    position  3 x float32   file coordinates (world rotated by ``up_rotation(up)``)
    scale     3 x float32   activated standard deviations, exp(log scale)
    rgba      4 x uint8     RGB = clip((0.5 + SH_C0 * f_dc) * 255), A = clip(sigmoid(opacity) * 255), truncated
    rotation  4 x uint8     unit quaternion w, x, y, z stored as clip(q * 128 + 128, 0, 255), truncated

Records are sorted by descending importance ``exp(scale_0 + scale_1 + scale_2) * sigmoid(opacity)`` (what
antimatter15's ``convert.py`` does, so viewers that stream the file draw the big opaque Gaussians first).

Compared with ``gsplat.export_splats(..., format="splat")`` (gsplat 1.5.3) the records are byte-identical; only
their order differs: gsplat sorts by a Morton code of the positions instead of by importance. gsplat also silently
drops non-finite Gaussians (and, through a broadcasting slip, *all* of them if any opacity is NaN, after which
its ``.splat`` export fails inside ``torch.min``); we refuse to write non-finite values instead.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..atomic import atomic_write_bytes
from ..scene import SH_C0
from .axes import UpAxis, up_rotation
from .ply import PathLike, SceneOrParams, prepare_params, to_file_axes

SPLAT_RECORD = np.dtype([("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rotation", "u1", 4)])
"""One ``.splat`` record (32 bytes)."""
assert SPLAT_RECORD.itemsize == 32


def write_splat(scene_or_params: SceneOrParams, path: PathLike, up: UpAxis = "-y") -> None:
    """Write a scene as an antimatter15 ``.splat`` file (layout in the module docstring), atomically.

    ``up`` is the file's up axis (default ``"-y"``, what the antimatter15 viewer expects). Only the DC colour is
    kept. Raises ``ValueError`` for empty scenes, NaN/Inf parameters or log scales whose exp overflows float32 (above
    about 88.7), naming the first such Gaussian, before anything is written.
    """
    up_rotation(up)  # validate
    params = to_file_axes(prepare_params(scene_or_params), up)
    n = params["means"].shape[0]
    alpha = torch.sigmoid(params["opacities"])
    rgba = torch.cat([params["sh0"].reshape(n, 3) * SH_C0 + 0.5, alpha[:, None]], dim=1)
    quats = params["quats"]
    unit = quats / torch.linalg.norm(quats, dim=1, keepdim=True).clamp_min(1e-12)

    scales = torch.exp(params["scales"])
    refuse_overflowing_scales(params["scales"], torch.isfinite(scales), "exp(scale)", "88.7")

    records = np.zeros(n, dtype=SPLAT_RECORD)
    records["position"] = params["means"].numpy()
    records["scale"] = scales.numpy()
    records["rgba"] = (rgba * 255).clamp(0, 255).to(torch.uint8).numpy()
    records["rotation"] = (unit * 128 + 128).clamp(0, 255).to(torch.uint8).numpy()

    importance = torch.exp(params["scales"].double().sum(dim=1)) * alpha.double()
    order = torch.argsort(importance, descending=True, stable=True).numpy()
    atomic_write_bytes(path, [memoryview(records[order]).cast("B")])


def refuse_overflowing_scales(
    log_scales: torch.Tensor, finite: torch.Tensor, what: str, limit: str, action: str = "write"
) -> None:
    """ValueError naming the first Gaussian (1-based, the row of the .ply it was read from) whose log scales
    ``log_scales`` [N, 3] give a non-finite ``what`` (``finite``: [N, 3] or [N] bool) in float32."""
    bad = ~(finite if finite.dim() == 1 else finite.all(dim=1))
    if bad.any():
        row = int(torch.nonzero(bad)[0, 0])
        axis = int(torch.argmax(log_scales[row]))
        raise ValueError(
            f"refusing to {action}: {int(bad.sum())} of {len(bad)} Gaussians have scales whose {what} overflows "
            f"float32; the first, Gaussian {row + 1}, has scale_{axis} = {float(log_scales[row, axis]):g} (a log "
            f"scale must stay below {limit})"
        )


def read_splat(path: PathLike) -> dict[str, np.ndarray]:
    """Read a ``.splat`` file: ``positions`` [N, 3] and ``scales`` [N, 3] float32 (file coordinates, activated),
    ``rgba`` [N, 4] uint8, ``quats`` [N, 4] float32 decoded as (byte - 128) / 128 (w, x, y, z, about unit)."""
    size = os.path.getsize(path)
    if size % SPLAT_RECORD.itemsize:
        raise ValueError(f"{os.fspath(path)}: size {size} is not a multiple of {SPLAT_RECORD.itemsize} bytes")
    records = np.fromfile(path, dtype=SPLAT_RECORD)
    return {
        "positions": records["position"].copy(),
        "scales": records["scale"].copy(),
        "rgba": records["rgba"].copy(),
        "quats": (records["rotation"].astype(np.float32) - 128.0) / 128.0,
    }
