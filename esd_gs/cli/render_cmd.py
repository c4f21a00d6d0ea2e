"""``esd-gs render SCENE.ply --out DIR``: a turntable video and a contact sheet of a 3DGS scene."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

from ..cameras import MAX_VIEWS, turntable
from ..environment import check_writable_dir, output_folder
from ..errors import UserError
from ..io import UpAxis, read_ply
from ..progress import console
from ..render import UserBackend, resolve_backend
from ..render.views import render_views
from ..video import turntable_sheet, write_png, write_turntable
from .common import pick_device


@dataclass
class RenderArgs:
    """Render a 3DGS .ply as a turntable: a video (mp4 and/or gif) and a contact sheet.

    The views circle the scene from its front, at a fixed elevation and distance.

    For example:
      esd-gs render runs/a-plush-dragon-toy-esd/scene.ply --out runs/dragon-turn
      esd-gs render scene.ply --out turn --views 60 --formats gif
    """

    scene: tyro.conf.Positional[Path]
    """The 3DGS .ply file to render."""
    out: Path = Path("runs/render")
    """Output directory (created if needed); files are written atomically."""
    views: int = 120
    """Number of turntable views (evenly spaced azimuths, starting at the front, azimuth 0)."""
    size: int = 256
    """Image width and height in pixels."""
    elevation: float = 15.0
    """Camera elevation above the ground plane, degrees."""
    radius: float = 2.5
    """Camera distance from the origin (esd-gs scenes live within ~0.8 of it)."""
    fovy: float = 50.0
    """Vertical field of view, degrees."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Background RGB in [0, 1]."""
    formats: tuple[Literal["mp4", "gif"], ...] = ("mp4", "gif")
    """Video formats to write."""
    fps: int = 30
    """Frames per second of the videos."""
    sheet_views: int = 16
    """Number of views in the contact sheet (evenly picked from the turntable)."""
    up: UpAxis = "-y"
    """Up axis of the file: -y for standard 3DGS/viewer files (what esd-gs writes), z for +Z-up files."""
    device: str = "auto"
    """'auto' (CUDA if available), 'cpu' or 'cuda'."""
    backend: UserBackend = "auto"
    """Renderer: auto (gsplat on CUDA when its kernels load, else esd-gs's PyTorch renderer), gsplat or torch."""
    overwrite: bool = False
    """Replace a turntable and contact sheet already in --out."""


def run_render(args: RenderArgs) -> list[Path]:
    if not 1 <= args.views <= MAX_VIEWS:
        raise UserError(f"--views must be in 1..{MAX_VIEWS}, got {args.views}")
    if not 8 <= args.size <= 4096:
        raise UserError(f"--size must be between 8 and 4096 pixels, got {args.size}")
    if args.fps < 1:
        raise UserError(f"--fps must be at least 1, got {args.fps}")
    if not all(0.0 <= c <= 1.0 for c in args.background):
        raise UserError(f"--background values must be in [0, 1], got {args.background}")
    if args.sheet_views < 1:
        raise UserError(f"--sheet-views must be at least 1, got {args.sheet_views}")
    if not 0.0 < args.fovy < 180.0:
        raise UserError(f"--fovy must be between 0 and 180 degrees, got {args.fovy}")
    if not (math.isfinite(args.radius) and args.radius > 0):
        raise UserError(f"--radius must be a positive distance, got {args.radius}")
    if not -90.0 <= args.elevation <= 90.0:
        raise UserError(f"--elevation must be in [-90, 90] degrees, got {args.elevation}")
    if not args.formats:
        raise UserError("--formats needs at least one of mp4, gif")
    existing = [p.name for p in (args.out / f"turntable.{f}" for f in ("mp4", "gif")) if p.exists()]
    existing += ["contact_sheet.png"] if (args.out / "contact_sheet.png").exists() else []
    if existing and not args.overwrite:
        raise UserError(f"{args.out} already holds {', '.join(existing)}: pass --overwrite or choose another --out")
    device = pick_device(args.device)
    backend = resolve_backend(args.backend, device)
    scene = read_ply(args.scene, up=args.up).to(device)
    check_writable_dir(args.out)  # creates nothing: the folder is made once the frames exist
    cams = turntable(args.views, elevation=args.elevation, radius=args.radius, fovy=args.fovy)
    frames = render_views(
        scene, cams, args.size, background=args.background, progress_label="rendering", backend=backend
    )
    with output_folder(args.out):  # a failed write leaves no empty folder
        written = write_turntable(frames, args.out, stem="turntable", formats=args.formats, fps=args.fps)
        sheet_path = args.out / "contact_sheet.png"
        write_png(turntable_sheet(frames, args.sheet_views), sheet_path)
    written.append(sheet_path)
    for path in written:
        console.print(f"wrote {path}")
    return written
