"""Real spherical harmonics up to degree 3, in the basis and sign convention of 3DGS and gsplat.

Coefficient index k = l^2 + (m + l) for band l, order m. With a unit view direction (x, y, z) pointing from the
camera to the Gaussian, the basis is

    Y_0            = C0
    Y_1..Y_3       = -C1 y, C1 z, -C1 x
    Y_4..Y_8       = C2 xy, -C2 yz, C2' (2z^2 - x^2 - y^2), -C2 xz, C2'' (x^2 - y^2)
    Y_9..Y_15      = the cubic terms below

and colour = sum_k Y_k(dir) * coeff_k, to which the renderer adds 0.5 and clamps at 0 (as gsplat does).
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

C0 = 0.28209479177387814
C1 = 0.4886025119029199
C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def num_sh_bases(degree: int) -> int:
    """Number of SH coefficients per channel for a degree: (degree + 1) ** 2."""
    return (degree + 1) ** 2


def sh_degree_of(num_coeffs: int) -> int:
    """The SH degree d in 0..3 with (d + 1) ** 2 == ``num_coeffs`` (all bands, DC included); ValueError otherwise."""
    degree = round(math.sqrt(max(num_coeffs, 0))) - 1
    if not 0 <= degree <= 3 or num_sh_bases(degree) != num_coeffs:
        raise ValueError(f"{num_coeffs} SH coefficients per channel is not (d+1)^2 for a degree d in 0..3")
    return degree


def sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """Evaluate the (degree + 1)^2 basis functions at unit directions [..., 3] -> [..., (degree + 1)^2]."""
    if not 0 <= degree <= 3:
        raise ValueError(f"SH degree must be in 0..3, got {degree}")
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, C0)]
    if degree >= 1:
        out += [-C1 * y, C1 * z, -C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            C2[0] * x * y,
            C2[1] * y * z,
            C2[2] * (2.0 * zz - xx - yy),
            C2[3] * x * z,
            C2[4] * (xx - yy),
        ]
    if degree >= 3:
        out += [
            C3[0] * y * (3.0 * xx - yy),
            C3[1] * x * y * z,
            C3[2] * y * (4.0 * zz - xx - yy),
            C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
            C3[4] * x * (4.0 * zz - xx - yy),
            C3[5] * z * (xx - yy),
            C3[6] * x * (xx - 3.0 * yy),
        ]
    return torch.stack(out, dim=-1)


def eval_sh(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """SH colour before the +0.5 offset: dirs [..., 3] (any length), coeffs [..., K, 3] -> [..., 3].

    Uses the first (degree + 1)^2 coefficients; ``dirs`` are normalised here.
    """
    dirs = torch.nn.functional.normalize(dirs, dim=-1)
    basis = sh_basis(degree, dirs)  # [..., K']
    return (basis[..., None] * coeffs[..., : basis.shape[-1], :]).sum(dim=-2)


@functools.lru_cache(maxsize=32)
def _band_rotation(rotation: tuple[float, ...], degree: int) -> tuple[Tensor, ...]:
    """Per-band matrices D_l with Y_l(R d) = D_l Y_l(d), found by least squares on many directions (exact up to
    float64 round-off because each band's span is closed under rotation)."""
    rot = torch.tensor(rotation, dtype=torch.float64).reshape(3, 3)
    gen = torch.Generator().manual_seed(0)
    dirs = torch.nn.functional.normalize(torch.randn(256, 3, generator=gen, dtype=torch.float64), dim=-1)
    y_dirs = sh_basis(degree, dirs)  # [M, K]
    y_rot = sh_basis(degree, dirs @ rot.T)  # [M, K], Y(R d)
    mats = []
    for band in range(1, degree + 1):
        lo, hi = band * band, (band + 1) * (band + 1)
        # Solve y_dirs[:, band] @ D^T = y_rot[:, band]
        sol = torch.linalg.lstsq(y_dirs[:, lo:hi], y_rot[:, lo:hi]).solution  # [2l+1, 2l+1] = D^T
        mats.append(sol.T.contiguous())
    return tuple(mats)


def rotate_sh(coeffs: Tensor, rotation: Tensor) -> Tensor:
    """Rotate SH coefficients [N, K, 3] (all bands, K = (d+1)^2) by a 3x3 rotation ``rotation``.

    After rotating a Gaussian's position and orientation by R, its view-dependent colour must satisfy
    colour'(R d) = colour(d). With Y_l(R d) = D_l Y_l(d), the new band-l coefficients are c'_l = D_l c_l
    (D_l is orthogonal). Band 0 is unchanged.
    """
    degree = sh_degree_of(coeffs.shape[-2])
    if degree == 0:
        return coeffs.clone()
    key = tuple(float(v) for v in rotation.detach().to(torch.float64).reshape(-1).tolist())
    out = coeffs.clone()
    for band, mat in enumerate(_band_rotation(key, degree), start=1):
        lo, hi = band * band, (band + 1) * (band + 1)
        out[..., lo:hi, :] = torch.einsum("ij,njc->nic", mat.to(coeffs), coeffs[..., lo:hi, :])
    return out
