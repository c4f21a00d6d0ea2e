"""A ``GaussianScene`` as the arrays of viser's Gaussian-splat scene node, in esd-gs's world (+Z up, front +X).

- centers [N, 3]; covariances [N, 3, 3] = R diag(s^2) R^T (R from the unit quaternion (w, x, y, z), s the scales);
- rgbs [N, 3]: the view-independent colour, SH_C0 * sh0 + 0.5 clamped to [0, 1] (viser draws one colour per
  Gaussian, so the higher SH bands, if any, are left out); opacities [N, 1] in (0, 1).
"""

from __future__ import annotations

import numpy as np
import torch

from ..io.splat import refuse_overflowing_scales
from ..render.projection import quat_to_rotmat
from ..scene import SH_C0, GaussianScene


def _covariances(scene: GaussianScene) -> torch.Tensor:
    rotations = quat_to_rotmat(torch.nn.functional.normalize(scene.quats.detach().float(), dim=-1))
    scales = scene.scales.detach().float()
    return rotations @ torch.diag_embed(scales.square()) @ rotations.transpose(-1, -2)


@torch.no_grad()
def splat_arrays(scene: GaussianScene) -> dict[str, np.ndarray]:
    """The arguments of viser's ``add_gaussian_splats`` (float32 numpy arrays, on the CPU)."""
    rgbs = (SH_C0 * scene.params["sh0"].detach().float()[:, 0, :] + 0.5).clamp(0.0, 1.0)
    return {
        "centers": scene.means.detach().float().cpu().numpy(),
        "covariances": _covariances(scene).cpu().numpy(),
        "rgbs": rgbs.cpu().numpy(),
        "opacities": scene.opacities.detach().float().reshape(-1, 1).cpu().numpy(),
    }


@torch.no_grad()
def refuse_nonfinite_splats(scene: GaussianScene, action: str = "write") -> None:
    """ValueError naming the first Gaussian whose :func:`splat_arrays` would not be finite: a finite log scale above
    about 44.3 makes its covariance, exp(scale)^2, overflow float32 (means, colours and opacities are finite in any
    scene esd-gs reads). For a file that is written (``export --to .html``) or shown (``view``, ``action="show"``),
    not for the live view of a run, which must go on."""
    finite = torch.isfinite(_covariances(scene)).flatten(1).all(dim=1).cpu()
    scales = scene.params["scales"].detach().float().cpu()
    refuse_overflowing_scales(scales, finite, "exp(scale)^2", "44.3", action)


def scene_stats(scene: GaussianScene) -> dict:
    """What the viewer's panel shows: the count, SH degree and bounds (min and max corner) of the Gaussians."""
    means = scene.means.detach().float()
    return {
        "gaussians": scene.num_gaussians,
        "sh_degree": scene.sh_degree,
        "bounds_min": [round(float(v), 3) for v in means.min(dim=0).values],
        "bounds_max": [round(float(v), 3) for v in means.max(dim=0).values],
    }
