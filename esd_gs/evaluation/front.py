"""Where a finished run's own front is, when its prior knows the answer (the synthetic prior's reference object).

The run's views on the Janus benchmark's turntable are aligned with the reference's (``janus.aligned_psnr``: the
shift s of the run's views that best matches the reference's, so that run view ``-s`` matches the reference's front,
view 0). The run's front is then at azimuth ``-s * 360 / V`` (wrapped to [-180, 180)): a one-faced result's face.
``generate``'s turntable, contact sheet and ``esd-gs view`` start there (``training.outputs.write_front``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..cameras import wrap_azimuth
from ..configs.generate import GenerateConfig
from ..priors import synthetic_images
from ..scene import GaussianScene
from .janus import aligned_psnr


def front_azimuth(views: torch.Tensor, reference_views: torch.Tensor) -> float:
    """The azimuth (degrees, in [-180, 180)) of the run's front: views and reference_views [V, 3, H, W] on the same
    turntable from azimuth 0 (module docstring)."""
    _, shift = aligned_psnr(views, reference_views)
    return float(wrap_azimuth(torch.tensor(-shift * 360.0 / views.shape[0])))


def run_front_finder(
    run: GenerateConfig, device: torch.device, backend: str = "auto"
) -> Callable[[GaussianScene], float] | None:
    """For a run of a synthetic prior: a function scene -> its front's azimuth (``front_azimuth`` on the benchmark's
    turntable at the run's resolution, against the reference object's views); None for any other prior (whose front
    is not known)."""
    if synthetic_images(run.prior) is None:
        return None
    from .evaluate import _benchmark_turntable, synthetic_reference_object

    # read now, when the prior reads it: a reference file moved or changed during a long run cannot fail the run's end
    # (the outputs are written after this)
    reference = synthetic_reference_object(run).to(device)

    def find(scene: GaussianScene) -> float:
        from ..render.views import render_images

        cameras = _benchmark_turntable()
        reference_views = render_images(reference, cameras, run.resolution, background=1.0, backend=backend)
        views = render_images(scene, cameras, run.resolution, background=1.0, backend=backend)
        return front_azimuth(views.cpu(), reference_views.cpu())

    return find
