"""Render many views without gradient, a batch at a time: float images for metrics and priors, uint8 frames for
videos, contact sheets and previews."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from ..cameras import Cameras
from ..scene import GaussianScene
from . import render

Background = Tensor | float | tuple | Callable[[int], Tensor]
"""As in ``render``, or a function of the batch size giving [b, 3] colours (called once per batch, in order)."""


@torch.no_grad()
def render_batches(
    scene: GaussianScene,
    cameras: Cameras,
    size: int,
    background: Background = 1.0,
    batch: int = 8,
    backend: str = "auto",
    depth_chunks: int = 1,
) -> Iterator[Tensor]:
    """Render every camera at ``size`` x ``size``, ``batch`` at a time: yields the rgb [b, 3, size, size] of each
    batch, unclamped, on the scene's device. ``backend`` and ``depth_chunks`` as in ``render``."""
    if len(cameras) == 0:
        raise ValueError("rendering views needs at least one camera")
    for start in range(0, len(cameras), batch):
        chunk = cameras[start : start + batch]
        colour = background(len(chunk)).to(scene.device) if callable(background) else background
        yield render(scene, chunk, size, size, background=colour, backend=backend, depth_chunks=depth_chunks).rgb


def render_images(
    scene: GaussianScene, cameras: Cameras, size: int, background: Background = 1.0, backend: str = "auto"
) -> Tensor:
    """Every view as float images [V, 3, size, size] in [0, 1] on the CPU (what metrics compare: no 8-bit rounding).
    The same images as ``render_views`` before its rounding."""
    return torch.cat(
        [
            rgb.clamp(0, 1).cpu()
            for rgb in render_batches(scene, cameras, size, background, backend=backend, depth_chunks=8)
        ]
    )


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
    frames = np.empty((len(cameras), size, size, 3), dtype=np.uint8)
    progress = None
    if progress_label is not None:
        from ..progress import make_progress

        progress = make_progress()
        progress.start()
        task = progress.add_task(progress_label, total=len(cameras))
    try:
        start = 0
        for rgb in render_batches(scene, cameras, size, background, batch, backend, depth_chunks=8):
            frames[start : start + len(rgb)] = (
                (rgb.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            )
            start += len(rgb)
            if progress is not None:
                progress.advance(task, len(rgb))
    finally:
        if progress is not None:
            progress.stop()
    return frames
