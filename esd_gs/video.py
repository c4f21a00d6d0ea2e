"""Turntable videos (mp4, gif), contact sheets and PNGs from uint8 frames [V, H, W, 3]. All writes are atomic."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .atomic import atomic_path


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[0] == 0 or frames.shape[-1] != 3 or 0 in frames.shape:
        raise ValueError(f"expected a non-empty uint8 array of frames [V, H, W, 3], got shape {list(frames.shape)}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    return frames


def _atomic_write(path: Path, write) -> Path:
    """Call ``write(tmp_path)`` on a temp file beside ``path`` (same suffix), then rename it onto ``path``."""
    with atomic_path(path) as tmp:
        write(str(tmp))
    return Path(path)


def _pad_even(frames: np.ndarray) -> np.ndarray:
    """Pad bottom/right by repeating the edge so H and W are even (H.264 with yuv420p needs it)."""
    _, h, w, _ = frames.shape
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _write_mp4(frames: np.ndarray, path: str, fps: float) -> None:
    import imageio.v2 as imageio

    with imageio.get_writer(
        path, format="FFMPEG", fps=fps, codec="libx264", quality=8, pixelformat="yuv420p", macro_block_size=1
    ) as writer:
        for frame in _pad_even(frames):
            writer.append_data(frame)


def _write_gif(frames: np.ndarray, path: str, fps: float) -> None:
    import imageio.v2 as imageio

    # Pillow's GIF writer takes the frame duration in milliseconds and loop=0 for "forever".
    imageio.mimsave(path, list(frames), format="GIF", duration=1000.0 / fps, loop=0)


_WRITERS = {"mp4": _write_mp4, "gif": _write_gif}


def write_turntable(
    frames: np.ndarray,
    out_dir: Path,
    stem: str = "turntable",
    formats: Sequence[str] = ("mp4", "gif"),
    fps: float = 30,
) -> list[Path]:
    """Write ``frames`` as ``out_dir/stem.<fmt>`` for each format ("mp4", "gif"); returns the paths written.

    Odd frame sizes are padded by one edge pixel for mp4 (H.264 in yuv420p needs even sizes); gifs keep the exact
    size (Pillow merges consecutive identical frames into one longer frame).
    """
    frames = _check_frames(frames)
    formats = (formats,) if isinstance(formats, str) else tuple(formats)
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    unknown = [f for f in formats if f not in _WRITERS]
    if unknown:
        raise ValueError(f"unknown video format(s) {unknown}; choose from {sorted(_WRITERS)}")
    paths = []
    for fmt in formats:
        path = Path(out_dir) / f"{stem}.{fmt}"
        paths.append(_atomic_write(path, lambda tmp, fmt=fmt: _WRITERS[fmt](frames, tmp, fps)))
    return paths


def contact_sheet(frames: np.ndarray, columns: int = 8, pad: int = 2, background: int = 255) -> np.ndarray:
    """Tile frames into a grid image [rows*(H+pad)+pad, cols*(W+pad)+pad, 3] with ``pad`` pixels around each."""
    frames = _check_frames(frames)
    if columns < 1 or pad < 0:
        raise ValueError("columns must be >= 1 and pad >= 0")
    v, h, w, _ = frames.shape
    cols = min(columns, v)
    rows = -(-v // cols)
    sheet = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), background, dtype=np.uint8)
    for i, frame in enumerate(frames):
        r, c = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        sheet[y : y + h, x : x + w] = frame
    return sheet


SHEET_COLUMNS = 8
"""Columns of a turntable's contact sheet (``turntable_sheet``): its 16 views in two rows."""


def turntable_sheet(frames: np.ndarray, count: int = 16, max_columns: int = SHEET_COLUMNS) -> np.ndarray:
    """A contact sheet of ``count`` frames picked evenly around a turntable (the first one: its first frame)."""
    frames = _check_frames(frames)
    picks = np.linspace(0, len(frames), num=min(count, len(frames)), endpoint=False).astype(int)
    return contact_sheet(frames[picks], columns=min(max_columns, len(picks)))


def write_png(image: np.ndarray, path: Path) -> Path:
    """Write a uint8 image [H, W, 3] (or [H, W]) as a PNG, atomically."""
    import imageio.v2 as imageio

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or image.size == 0:
        raise ValueError(f"expected a non-empty uint8 image [H, W(, C)], got {image.dtype} {list(image.shape)}")
    return _atomic_write(Path(path), lambda tmp: imageio.imwrite(tmp, image, format="PNG"))
