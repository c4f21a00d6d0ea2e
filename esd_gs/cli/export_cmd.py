"""``esd-gs export SCENE.ply --to out.ply|.splat|.html|.glb|.obj``: convert between splat formats and up axes, or
make a standalone page or a mesh."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

from ..errors import UserError
from ..io import UpAxis, read_ply, write_ply, write_splat
from ..progress import console


@dataclass
class ExportArgs:
    """Convert a 3DGS .ply to another splat file, a web page or a mesh.

    The extension of --to picks the format: .ply, .splat, .html, .glb or .obj.

    A mesh has vertex colours, or a baked texture in a .glb (--texture).

    For example:
      esd-gs export scene.ply --to scene.splat
      esd-gs export scene.ply --to unity.ply --sh-degree 3
      esd-gs export scene.ply --to scene.glb --texture 1024
    """

    scene: tyro.conf.Positional[Path]
    """The 3DGS .ply file to read."""
    # .splat: antimatter15's, 32 bytes per Gaussian; .html: viser's client and the scene in one file, one colour per
    # Gaussian; .glb: glTF binary.
    to: Path
    """Output file; its extension picks the format: .ply (3DGS), .splat, .html (a web viewer), .glb or .obj (a mesh)."""
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
    suffix = args.to.suffix.lower()
    if suffix not in (".ply", ".splat", ".html", ".glb", ".obj"):
        raise UserError(f"--to must end in .ply, .splat, .html, .glb or .obj, got '{args.to.name}'")
    if args.to.exists() and not args.overwrite:
        raise UserError(f"{args.to} already exists: pass --overwrite to replace it")
    if os.path.realpath(args.to) == os.path.realpath(args.scene):  # Path.resolve raises on a symlink loop
        raise UserError("--to must differ from the input file")
    if not args.to.parent.is_dir():
        raise UserError(f"directory {args.to.parent} does not exist")
    if suffix in (".html", ".glb", ".obj") and args.up != "-y":
        raise UserError("--up applies to .ply and .splat files: .html is shown upright, meshes are glTF's +Y up")
    if args.texture and suffix != ".glb":
        raise UserError("--texture is written into the .glb itself: export to a .glb")
    mesh_config = None
    if suffix in (".glb", ".obj"):  # the mesh options and tools checked before the scene is read
        from ..mesh.extract import MeshConfig, import_mesh_tools

        mesh_config = MeshConfig(args.resolution, args.faces, args.level, texture=args.texture)
        import_mesh_tools(texture=bool(args.texture))
    scene = read_ply(args.scene, up=args.input_up)
    if args.sh_degree is not None and suffix != ".ply":
        raise UserError("--sh-degree applies to .ply output only (.splat and .html use one colour per Gaussian)")
    if args.sh_degree is not None and args.sh_degree < scene.sh_degree:
        raise UserError(f"--sh-degree {args.sh_degree} is below the scene's SH degree {scene.sh_degree}")
    try:
        if suffix == ".ply":
            write_ply(scene, args.to, up=args.up, pad_sh_degree=args.sh_degree)
        elif mesh_config is not None:
            from ..mesh.extract import write_mesh

            mesh = write_mesh(scene, args.to, mesh_config)
            console.print(
                f"wrote {args.to} ({len(mesh.vertices)} vertices, {len(mesh.faces)} faces, +Y up, front towards +Z)"
            )
            if "texture_seen" in mesh.metadata:
                seen = mesh.metadata["texture_seen"]
                console.print(f"texture: {seen:.1%} of the texels seen by a view, vertex colours elsewhere")
            return args.to
        elif suffix == ".html":
            from ..atomic import atomic_path
            from ..viewer.export import scene_html

            page = scene_html(scene, title=args.scene.name)
            with atomic_path(args.to) as tmp:
                tmp.write_text(page, encoding="utf-8")
        else:
            write_splat(scene, args.to, up=args.up)
    except ValueError as exc:  # the writers refuse scenes they cannot write faithfully
        raise UserError(f"{args.scene}: {exc}") from None
    console.print(f"wrote {args.to} ({scene.num_gaussians} Gaussians)")
    return args.to
