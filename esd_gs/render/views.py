"""Render many views for people to look at: uint8 frames for videos, contact sheets and previews."""

from __future__ import annotations

import numpy as np
import torch

from ..cameras import Cameras
from ..scene import GaussianScene
from . import render


@torch.no_grad()
def render_views(
    scene: GaussianScene,
    cameras: Cameras,
    size: int,
    background=1.0,
    batch: int = 8,
    progress_label: str | None = None,
    backend: str = "auto",
) -> np.ndarray:
    """Render every camera at ``size`` x ``size``, ``batch`` at a time -> uint8 frames [V, size, size, 3].

    With ``progress_label`` a rich progress bar (it/s, ETA) is shown while rendering. ``backend`` as in ``render``.
    The PyTorch renderer composites in 8 front-to-back depth slices (early termination), which pays off for the
    opaque scenes people look at.
    """
    if len(cameras) == 0:
        raise ValueError("render_views needs at least one camera")
    frames = np.empty((len(cameras), size, size, 3), dtype=np.uint8)
    progress = None
    if progress_label is not None:
        from ..progress import make_progress

        progress = make_progress()
        progress.start()
        task = progress.add_task(progress_label, total=len(cameras))
    try:
        for start in range(0, len(cameras), batch):
            chunk = cameras[start : start + batch]
            rgb = render(scene, chunk, size, size, background=background, backend=backend, depth_chunks=8).rgb
            frames[start : start + len(chunk)] = (
                (rgb.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            )
            if progress is not None:
                progress.advance(task, len(chunk))
    finally:
        if progress is not None:
            progress.stop()
    return frames
