"""Scene files by suffix: the one table (``FORMATS``) that ``esd-gs export`` and a run's outputs (scene.ply,
scene.splat, and scene.glb with --mesh) write through.

Conventions:
- a ``SceneFormat`` declares its suffix, its name, what it writes, which of the export options it honours (``--up``,
  ``--sh-degree``, ``--texture``) and its ``write(scene, path, options)``, which writes atomically, raises ValueError
  for a scene it cannot write faithfully (and UserError for a missing optional package) and returns the lines that
  say what it wrote;
- ``prepare(options)``, where a format has one, checks its options and imports its tools before any scene is read,
  so that a bad option or a missing package costs no reading;
- layering: this module sits above ``io/``, ``mesh/`` and ``viewer/`` (it is imported by ``cli/`` and
  ``training/``). The mesh and web-page writers import ``mesh/`` and ``viewer/`` (trimesh, scikit-image, viser)
  inside their functions, only when that suffix is written; nothing in ``io/`` imports from here.

Adding a format touches two files (and its tests): its writer's module (e.g. ``io/<format>.py``, imported here from
that module) and this one (the writer's adapter and its entry in ``FORMATS``). The export command's checks, messages
and --help, and a run's outputs, read the table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .io import UpAxis, write_ply, write_splat
from .scene import GaussianScene


@dataclass(frozen=True)
class WriteOptions:
    """How a scene is written; each format reads the options it honours and ignores the rest."""

    up: UpAxis = "-y"
    """Up axis of the file (formats with ``up``; the others have fixed axes)."""
    sh_degree: int | None = None
    """Zero-pad the SH bands to this degree (formats with ``sh_degree``); None = the scene's own degree."""
    title: str = "esd-gs"
    """Title of a web page."""
    resolution: int = 128
    """Meshes: grid size per axis of the opacity field (``mesh.extract.MeshConfig``)."""
    faces: int = 100_000
    """Meshes: most triangles kept."""
    level: float = 0.5
    """Meshes: opacity level of the surface."""
    texture: int = 0
    """Meshes with ``texture``: pixels per side of a baked UV texture; 0 = vertex colours."""


Writer = Callable[[GaussianScene, Path, WriteOptions], list[str]]


@dataclass(frozen=True)
class SceneFormat:
    """One output format: what a suffix writes, the options it honours and its writer."""

    suffix: str
    """Lower-case, with the dot: ``.ply``."""
    name: str
    """Short name shown in --to's help: ``.ply (3DGS)``."""
    writes: str
    """What the file holds, in one line."""
    write: Writer
    """``(scene, path, options) -> lines saying what was written``."""
    up: bool = False
    """Honours ``--up``."""
    sh_degree: bool = False
    """Honours ``--sh-degree``."""
    texture: bool = False
    """Honours ``--texture``."""
    without_up: str = ""
    """Why ``--up`` does not apply, shown when it is refused; ``{}`` stands for the suffixes sharing the reason."""
    without_sh_degree: str = ""
    """Why ``--sh-degree`` does not apply, shown when it is refused; ``{}`` as in ``without_up``."""
    prepare: Callable[[WriteOptions], None] | None = None
    """Checks the options and imports the writer's tools before any scene is read (UserError)."""


# ---------------------------------------------------------------------------------------------- writers
def _wrote_gaussians(scene: GaussianScene, path: Path) -> list[str]:
    return [f"wrote {path} ({scene.num_gaussians} Gaussians)"]


def _write_ply(scene: GaussianScene, path: Path, options: WriteOptions) -> list[str]:
    write_ply(scene, path, up=options.up, pad_sh_degree=options.sh_degree)
    return _wrote_gaussians(scene, path)


def _write_splat(scene: GaussianScene, path: Path, options: WriteOptions) -> list[str]:
    write_splat(scene, path, up=options.up)
    return _wrote_gaussians(scene, path)


def _write_html(scene: GaussianScene, path: Path, options: WriteOptions) -> list[str]:
    from .atomic import atomic_path
    from .viewer.export import scene_html

    page = scene_html(scene, title=options.title)
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return _wrote_gaussians(scene, path)


def _mesh_config(options: WriteOptions):
    from .mesh.extract import MeshConfig

    return MeshConfig(options.resolution, options.faces, options.level, texture=options.texture)


def _prepare_mesh(options: WriteOptions) -> None:
    from .mesh.extract import import_mesh_tools

    _mesh_config(options)  # its checks
    import_mesh_tools(texture=bool(options.texture))


def _write_mesh(scene: GaussianScene, path: Path, options: WriteOptions) -> list[str]:
    from .mesh.extract import write_mesh

    mesh = write_mesh(scene, path, _mesh_config(options))
    lines = [f"wrote {path} ({len(mesh.vertices)} vertices, {len(mesh.faces)} faces, +Y up, front towards +Z)"]
    if "texture_seen" in mesh.metadata:
        seen = mesh.metadata["texture_seen"]
        lines.append(f"texture: {seen:.1%} of the texels seen by a view, vertex colours elsewhere")
    return lines


# ---------------------------------------------------------------------------------------------- the table
_ONE_COLOUR = "{} use one colour per Gaussian"
_MESH_AXES = "meshes are glTF's +Y up"

FORMATS: dict[str, SceneFormat] = {
    entry.suffix: entry
    for entry in (
        SceneFormat(
            ".ply",
            "3DGS",
            "the standard 3DGS .ply: every Gaussian with all its SH bands",
            _write_ply,
            up=True,
            sh_degree=True,
        ),
        SceneFormat(
            ".splat",
            "antimatter15",
            "antimatter15's .splat: 32 bytes per Gaussian, one colour each",
            _write_splat,
            up=True,
            without_sh_degree=_ONE_COLOUR,
        ),
        SceneFormat(
            ".html",
            "a web viewer",
            "viser's client and the scene in one offline page, one colour per Gaussian",
            _write_html,
            without_up="{} is shown upright",
            without_sh_degree=_ONE_COLOUR,
        ),
        SceneFormat(
            ".glb",
            "a glTF mesh",
            "a glTF binary triangle mesh with vertex colours or a baked texture",
            _write_mesh,
            texture=True,
            without_up=_MESH_AXES,
            prepare=_prepare_mesh,
        ),
        SceneFormat(
            ".obj",
            "a mesh",
            "a Wavefront .obj triangle mesh with vertex colours",
            _write_mesh,
            without_up=_MESH_AXES,
            prepare=_prepare_mesh,
        ),
    )
}
"""Every scene format, by suffix, in the order the messages and --help list them."""


# ---------------------------------------------------------------------------------------------- use
def format_of(path: Path) -> SceneFormat | None:
    """The format ``path``'s suffix picks (case-insensitive), or None."""
    return FORMATS.get(path.suffix.lower())


def write_scene(scene: GaussianScene, path: Path, options: WriteOptions) -> list[str]:
    """Write ``scene`` in the format of ``path``'s suffix (ValueError for a suffix not in ``FORMATS``)."""
    scene_format = format_of(path)
    if scene_format is None:
        raise ValueError(f"no scene format writes '{path.name}'")
    return scene_format.write(scene, path, options)


def listed(items: Iterable[str], last: str) -> str:
    """``a, b and c`` (``last`` = "and") or ``a, b or c``."""
    items = list(items)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {last} {items[-1]}"


def reasons(field: str) -> str:
    """The formats' reasons in ``field`` (``without_up`` / ``without_sh_degree``), each once, in table order, its
    ``{}`` filled with the suffixes that share it."""
    grouped: dict[str, list[str]] = {}
    for entry in FORMATS.values():
        if reason := getattr(entry, field):
            grouped.setdefault(reason, []).append(entry.suffix)
    return ", ".join(reason.format(listed(suffixes, "and")) for reason, suffixes in grouped.items())


def suffixes(honours: str = "") -> list[str]:
    """Every suffix, or those whose format honours the option ``honours`` (``up``, ``sh_degree``, ``texture``)."""
    return [s for s, entry in FORMATS.items() if not honours or getattr(entry, honours)]
