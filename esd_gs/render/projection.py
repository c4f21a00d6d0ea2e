"""EWA projection of 3D Gaussians to 2D screen-space Gaussians, in PyTorch, with gsplat 1.5's conventions.

For a Gaussian with mean mu, rotation R(q) and scales s, seen by a camera with world-to-camera (W, t) and
pinhole intrinsics (fx, fy, cx, cy):

    Sigma_3D = R diag(s^2) R^T                                  (3DGS eq. 6)
    (x, y, z) = W mu + t,   mean2d = (fx x / z + cx, fy y / z + cy)
    J = [[fx / z, 0, -fx tx / z^2], [0, fy / z, -fy ty / z^2]]  (EWA, Zwicker et al. 2001; 3DGS eq. 5)
    Sigma_2D = J W Sigma_3D W^T J^T + eps2d I                   (gsplat's low-pass "blur", eps2d = 0.3)

where (tx, ty) are x and y clamped to the frustum widened by 30% (gsplat's ``persp_proj``). The screen extent is
opacity-aware, as in gsplat 1.5: ``extend = min(3.33, sqrt(2 log(opacity * 255)))`` and
``radius = ceil(extend * sqrt(Sigma_2D[axis, axis]))`` per axis, so that alpha < 1/255 outside that box.
A Gaussian is culled (radius 0) when z is outside [near, far], det(Sigma_2D) <= 0, opacity < 1/255, or its box
misses the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

ALPHA_THRESHOLD = 1.0 / 255.0
"""Smallest alpha that counts (gsplat's ALPHA_THRESHOLD)."""


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Unit quaternions (w, x, y, z) [..., 4] -> rotation matrices [..., 3, 3]."""
    w, x, y, z = quats.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(quats.shape[:-1] + (3, 3))


def covariance_3d(quats: Tensor, scales: Tensor) -> Tensor:
    """Sigma_3D = R S S^T R^T from unit quaternions [N, 4] and scales (std-devs) [N, 3] -> [N, 3, 3]."""
    rs = quat_to_rotmat(quats) * scales[..., None, :]
    return rs @ rs.transpose(-1, -2)


@dataclass
class Projected:
    """Screen-space Gaussians for C cameras and N Gaussians."""

    means2d: Tensor
    """[C, N, 2] pixel coordinates of the centres (pixel (i, j) has its centre at (j + 0.5, i + 0.5))."""
    conics: Tensor
    """[C, N, 3] upper triangle (a, b, c) of Sigma_2D^-1."""
    depths: Tensor
    """[C, N] camera-space z."""
    radii: Tensor
    """[C, N, 2] int32 half-extent of the screen box in x and y; 0 where culled."""


def project_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
) -> Projected:
    """Project N Gaussians into C cameras (see module docstring). Differentiable in means, quats, scales.

    Args:
        means: [N, 3] world positions. quats: [N, 4] unit wxyz. scales: [N, 3] std-devs. opacities: [N] in (0, 1).
        viewmats: [C, 4, 4] world-to-camera (OpenCV axes). Ks: [C, 3, 3] intrinsics.
    """
    rot_w2c = viewmats[:, :3, :3]  # [C, 3, 3]
    trans = viewmats[:, :3, 3]  # [C, 3]
    mean_c = torch.einsum("cij,nj->cni", rot_w2c, means) + trans[:, None, :]  # [C, N, 3]
    cov_w = covariance_3d(quats, scales)  # [N, 3, 3]
    cov_c = torch.einsum("cij,njk,clk->cnil", rot_w2c, cov_w, rot_w2c)  # W Sigma W^T, [C, N, 3, 3]

    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [C, 1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    x, y, z = mean_c.unbind(-1)  # [C, N]
    valid_z = (z >= near_plane) & (z <= far_plane)
    z_safe = torch.where(valid_z, z, torch.ones_like(z))
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos, lim_x_neg = (width - cx) / fx + 0.3 * tan_fovx, cx / fx + 0.3 * tan_fovx
    lim_y_pos, lim_y_neg = (height - cy) / fy + 0.3 * tan_fovy, cy / fy + 0.3 * tan_fovy
    tx = z_safe * torch.minimum(lim_x_pos, torch.maximum(-lim_x_neg, x / z_safe))
    ty = z_safe * torch.minimum(lim_y_pos, torch.maximum(-lim_y_neg, y / z_safe))
    rz = 1.0 / z_safe
    zeros = torch.zeros_like(z)
    jac = torch.stack([fx * rz, zeros, -fx * tx * rz * rz, zeros, fy * rz, -fy * ty * rz * rz], dim=-1).reshape(
        z.shape + (2, 3)
    )  # [C, N, 2, 3]
    cov2d = jac @ cov_c @ jac.transpose(-1, -2)  # [C, N, 2, 2]
    a = cov2d[..., 0, 0] + eps2d
    b = cov2d[..., 0, 1]
    c = cov2d[..., 1, 1] + eps2d
    det = a * c - b * b
    valid = valid_z & (det > 0)
    det_safe = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)
    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], dim=-1)

    with torch.no_grad():
        opac = opacities.detach().expand_as(z)
        valid = valid & (opac >= ALPHA_THRESHOLD)
        extend = torch.sqrt(2.0 * torch.log(opac.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD)).clamp_max(3.33)
        rad_x = torch.ceil(extend * torch.sqrt(a.detach().clamp_min(0)))
        rad_y = torch.ceil(extend * torch.sqrt(c.detach().clamp_min(0)))
        valid = valid & ((rad_x > 0) | (rad_y > 0))
        m = means2d.detach()
        inside = (
            (m[..., 0] + rad_x > 0)
            & (m[..., 0] - rad_x < width)
            & (m[..., 1] + rad_y > 0)
            & (m[..., 1] - rad_y < height)
        )
        valid = valid & inside
        radii = torch.stack([rad_x, rad_y], dim=-1).where(valid[..., None], torch.zeros_like(a)[..., None])
        radii = radii.to(torch.int32)
    return Projected(means2d=means2d, conics=conics, depths=z, radii=radii)
