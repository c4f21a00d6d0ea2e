"""Up-axis conversion between our world (+Z up, front on +X) and the coordinates stored in a file.

``up`` names which axis is *up in the file*:

========  ================================================  ==========================================
``up``    rotation R (world -> file), det +1                 used by
========  ================================================  ==========================================
``"z"``   identity                                           files in our own convention
``"-y"``  +90 deg about +X: world +Z -> file -Y, +Y -> +Z    SuperSplat, antimatter15, original 3DGS
``"y"``   -90 deg about +X: world +Z -> file +Y, +Y -> -Z    +Y-up tools (three.js / glTF style)
========  ================================================  ==========================================

+X (the object's front) is unchanged by every choice. A world point ``p`` is stored as ``R p``; reading a file
applies ``R^T``. Rotating a scene moves the means (``R mu``), turns each Gaussian (quaternion ``q_R * q``, so
``Sigma' = R Sigma R^T``) and rotates the view-dependent colour (SH bands >= 1, so colour'(R d) = colour(d)).
Scales, opacities and the DC colour ``sh0`` do not change.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

from ..sh import rotate_sh

UpAxis = Literal["z", "-y", "y"]
"""Which axis is up in a file: ``"z"`` (ours), ``"-y"`` (viewers / OpenCV-like, the default for export), ``"y"``."""

_UP_ROTATIONS: dict[str, tuple[tuple[float, ...], ...]] = {
    "z": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    "-y": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0), (0.0, 1.0, 0.0)),
    "y": ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, -1.0, 0.0)),
}


def up_rotation(up: UpAxis, dtype: torch.dtype = torch.float32) -> Tensor:
    """Rotation matrix [3, 3] (det +1, exact signed permutation) taking world coordinates to the file's for ``up``."""
    if up not in _UP_ROTATIONS:
        raise ValueError(f"unknown up axis {up!r}; expected one of {', '.join(get_args(UpAxis))}")
    return torch.tensor(_UP_ROTATIONS[up], dtype=dtype)


def rotation_to_quaternion(rotation: Tensor) -> Tensor:
    """Unit quaternion (w, x, y, z) with ``w >= 0`` of a 3x3 rotation matrix (float64), Shepperd's method."""
    m = rotation.to(torch.float64)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    # Pick the largest of 4w^2, 4x^2, 4y^2, 4z^2 to divide by, for numerical safety.
    candidates = torch.stack([trace, m[0, 0], m[1, 1], m[2, 2]])
    i = int(torch.argmax(candidates))
    if i == 0:
        s = torch.sqrt(1.0 + trace) * 2.0
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif i == 1:
        s = torch.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2.0
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif i == 2:
        s = torch.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2.0
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = torch.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2.0
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    quat = torch.stack(q)
    return -quat if quat[0] < 0 else quat


def quaternion_multiply(p: Tensor, q: Tensor) -> Tensor:
    """Hamilton product ``p * q`` of quaternions (w, x, y, z) [..., 4] (rotation of ``p q`` = R(p) R(q))."""
    pw, px, py, pz = p.unbind(-1)
    qw, qx, qy, qz = q.unbind(-1)
    return torch.stack(
        [
            pw * qw - px * qx - py * qy - pz * qz,
            pw * qx + px * qw + py * qz - pz * qy,
            pw * qy - px * qz + py * qw + pz * qx,
            pw * qz + px * qy - py * qx + pz * qw,
        ],
        dim=-1,
    )


def transform_scene_params(params: dict[str, Tensor], rotation: Tensor) -> dict[str, Tensor]:
    """Rotate raw scene parameters (keys as in :mod:`esd_gs.scene`) by a 3x3 rotation; returns a new dict.

    means -> R mu; quats -> q_R * q (w, x, y, z; the norm of each raw quaternion is kept); SH bands >= 1 via
    :func:`esd_gs.sh.rotate_sh` on ``cat([sh0, shN])``; scales, opacities and sh0 are copied unchanged. The
    arithmetic is done in float64 and cast back to each tensor's dtype, so a signed-permutation ``R`` (every
    :func:`up_rotation`) moves the means exactly.
    """
    rot = rotation.detach().to(device=params["means"].device, dtype=torch.float64)
    if rot.shape != (3, 3) or abs(float(torch.linalg.det(rot)) - 1.0) > 1e-6:
        raise ValueError("rotation must be a 3x3 matrix with determinant +1")
    out = {k: v.detach().clone() for k, v in params.items()}
    means = params["means"].detach()
    out["means"] = (means.to(torch.float64) @ rot.T).to(means.dtype)
    quats = params["quats"].detach()
    q_rot = rotation_to_quaternion(rot).to(rot.device)
    out["quats"] = quaternion_multiply(q_rot, quats.to(torch.float64)).to(quats.dtype)
    shN = params["shN"].detach()
    if shN.shape[1] > 0:
        coeffs = torch.cat([params["sh0"].detach(), shN], dim=1).to(torch.float64)
        out["shN"] = rotate_sh(coeffs, rot)[:, 1:].to(shN.dtype)
    return out
