"""``esd-gs export SCENE.ply --to OUT``: convert between splat formats and up axes, or make a standalone page or a
mesh; the suffix of OUT picks the format from ``formats.FORMATS``, which also says which options each honours."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

from ..errors import UserError
from ..formats import FORMATS, WriteOptions, format_of, listed, reasons, suffixes
from ..io import UpAxis, read_ply
from ..progress import console

TO_HELP = (
    "Output file; its extension picks the format: "
    + listed([f"{entry.suffix} ({entry.name})" for entry in FORMATS.values()], "or")
    + "."
)
"""--to's help, from the table of formats."""


@dataclass
class ExportArgs:
    """Convert a 3DGS .ply to another splat file, a web page or a mesh.

    The extension of --to picks the format (--to lists them).

    A mesh has vertex colours, or a baked texture in a .glb (--texture).

    For example:
      esd-gs export scene.ply --to scene.splat
      esd-gs export scene.ply --to unity.ply --sh-degree 3
      esd-gs export scene.ply --to scene.glb --texture 1024
    """

    scene: tyro.conf.Positional[Path]
    """The 3DGS .ply file to read."""
    to: Annotated[Path, tyro.conf.arg(help=TO_HELP)]  # what each format writes: formats.FORMATS
    up: UpAxis = "-y"
    """Up axis of the written file: -y (viewers: SuperSplat, antimatter15, 3DGS), y, or z (esd-gs world)."""
    input_up: UpAxis = "-y"
    """Up axis of the input file (-y for files esd-gs and 3DGS trainers write)."""
    sh_degree: Literal[0, 1, 2, 3] | None = None
    """Zero-pad the SH bands to this degree in a .ply (3 for consumers that need 45 f_rest, such as Unity)."""
    resolution: int = 128
    """.glb / .obj: grid size per axis of the opacity field the surface is extracted from."""
    faces: int = 100_000
    """.glb / .obj: most triangles kept."""
    level: float = 0.5
    """.glb / .obj: opacity level of the surface."""
    # The UVs come from xatlas; baking is slower than vertex colours.
    texture: int = 0
    """.glb: bake a UV texture of this many pixels per side (e.g. 1024) from rendered views; 0 = vertex colours."""
    overwrite: bool = False
    """Replace the output file if it exists."""


def run_export(args: ExportArgs) -> Path:
    scene_format = format_of(args.to)
    if scene_format is None:
        raise UserError(f"--to must end in {listed(suffixes(), 'or')}, got '{args.to.name}'")
    if args.to.exists() and not args.overwrite:
        raise UserError(f"{args.to} already exists: pass --overwrite to replace it")
    if os.path.realpath(args.to) == os.path.realpath(args.scene):  # Path.resolve raises on a symlink loop
        raise UserError("--to must differ from the input file")
    if not args.to.parent.is_dir():
        raise UserError(f"directory {args.to.parent} does not exist")
    if not scene_format.up and args.up != "-y":
        raise UserError(f"--up applies to {listed(suffixes('up'), 'and')} files: {reasons('without_up')}")
    if args.texture and not scene_format.texture:
        within = listed(suffixes("texture"), "or")
        raise UserError(f"--texture is written into the {within} itself: export to a {within}")
    options = WriteOptions(
        up=args.up,
        sh_degree=args.sh_degree,
        title=args.scene.name,
        resolution=args.resolution,
        faces=args.faces,
        level=args.level,
        texture=args.texture,
    )
    if scene_format.prepare is not None:  # its options and tools checked before the scene is read
        scene_format.prepare(options)
    scene = read_ply(args.scene, up=args.input_up)
    if args.sh_degree is not None and not scene_format.sh_degree:
        only = listed(suffixes("sh_degree"), "and")
        raise UserError(f"--sh-degree applies to {only} output only ({reasons('without_sh_degree')})")
    if args.sh_degree is not None and args.sh_degree < scene.sh_degree:
        raise UserError(f"--sh-degree {args.sh_degree} is below the scene's SH degree {scene.sh_degree}")
    try:
        written = scene_format.write(scene, args.to, options)
    except ValueError as exc:  # the writers refuse scenes they cannot write faithfully
        raise UserError(f"{args.scene}: {exc}") from None
    for line in written:
        console.print(line)
    return args.to
