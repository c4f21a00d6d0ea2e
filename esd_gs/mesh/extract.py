"""Gaussians -> a vertex-coloured triangle mesh in glTF's axes, ready for .glb / .obj.

1. ``field.opacity_field`` on a ``resolution``^3 grid;
2. the occupied voxels (density >= ``level``) with every enclosed cavity filled (``scipy.ndimage.binary_fill_holes``):
   a shell of surface Gaussians becomes a solid, so only its outer surface is extracted;
3. marching cubes (``skimage.measure.marching_cubes``) at ``level``;
4. cleaning with trimesh: degenerate faces and unreferenced vertices removed, components with fewer than
   ``min_component`` of the faces dropped (floaters);
5. decimation to at most ``faces`` triangles (trimesh's quadric decimation, fast-simplification);
6. vertex colours: the field's colour (colour-weighted density / density) at each final vertex, trilinear;
7. axes: esd-gs's world (+Z up, front +X, left +Y) to glTF's (+Y up, +Z towards the viewer, +X the viewer's right):
   (x, y, z) -> (y, z, x), a rotation, so the object stands upright and faces a glTF viewer's default camera.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UserError
from ..scene import GaussianScene
from .field import Grid, opacity_field, scene_grid

TO_GLTF = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
"""esd-gs world -> glTF axes: new (x, y, z) = old (y, z, x)."""


@dataclass
class MeshConfig:
    """How Gaussians become a mesh."""

    resolution: int = 128
    """Grid size per axis (memory: 16 bytes per voxel, 32 MB at 128, 256 MB at 256)."""
    faces: int = 100_000
    """Most triangles kept (quadric decimation)."""
    level: float = 0.5
    """Opacity level of the surface."""
    min_component: float = 0.02
    """Components with fewer than this share of the faces are dropped."""

    def __post_init__(self) -> None:
        if not 16 <= self.resolution <= 512:
            raise UserError(f"--resolution must be in 16..512, got {self.resolution}")
        if self.faces < 4:
            raise UserError(f"--faces must be at least 4, got {self.faces}")
        if not 0.0 < self.level < 1.0:
            raise UserError(f"--level must be in (0, 1), got {self.level}")


def import_mesh_tools():
    try:
        import scipy.ndimage  # noqa: F401
        import skimage.measure  # noqa: F401
        import trimesh
    except ImportError:
        raise UserError("meshes need scikit-image and trimesh: pip install 'esd-gs[mesh]'") from None
    return trimesh


def _trilinear(volume: np.ndarray, points: np.ndarray) -> np.ndarray:
    from scipy.ndimage import map_coordinates

    return map_coordinates(volume, points.T, order=1, mode="nearest")


def scene_mesh(scene: GaussianScene, config: MeshConfig | None = None):
    """The mesh of ``scene`` (module docstring) as a ``trimesh.Trimesh`` in glTF axes, with vertex colours."""
    from scipy.ndimage import binary_fill_holes
    from skimage.measure import marching_cubes

    trimesh = import_mesh_tools()
    config = config or MeshConfig()
    grid: Grid = scene_grid(scene, config.resolution)
    density, painted = (t.numpy() for t in opacity_field(scene, grid))
    solid = binary_fill_holes(density >= config.level)
    field = np.where(solid & (density < config.level), 2.0 * config.level, density)  # cavities count as inside
    field[[0, -1]] = field[:, [0, -1]] = field[:, :, [0, -1]] = 0.0  # closed at the grid's border
    if not (field >= config.level).any():
        raise UserError(f"no surface at opacity level {config.level}: the Gaussians are too transparent (try --level)")
    vertices, faces, _, _ = marching_cubes(field, level=config.level, gradient_direction="descent")
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=True)
    mesh.update_faces(mesh.nondegenerate_faces())
    mesh.remove_unreferenced_vertices()
    parts = mesh.split(only_watertight=False)
    if len(parts) > 1:
        keep = [p for p in parts if len(p.faces) >= config.min_component * len(mesh.faces)]
        mesh = trimesh.util.concatenate(keep or [max(parts, key=lambda p: len(p.faces))])
    if len(mesh.faces) > config.faces:
        mesh = mesh.simplify_quadric_decimation(face_count=config.faces)
    voxel_points = np.asarray(mesh.vertices)  # in voxel coordinates until here
    weight = _trilinear(density, voxel_points)
    colours = np.stack([_trilinear(painted[..., c], voxel_points) for c in range(3)], axis=1)
    colours = np.clip(colours / np.maximum(weight, 1e-6)[:, None], 0.0, 1.0)
    world = grid.to_world(torch.from_numpy(voxel_points).float()).numpy()
    rgba = np.concatenate([np.round(colours * 255), np.full((len(colours), 1), 255)], axis=1).astype(np.uint8)
    out = trimesh.Trimesh(vertices=world @ TO_GLTF.T, faces=np.asarray(mesh.faces), vertex_colors=rgba, process=False)
    if out.volume < 0:  # faces wound inwards: turn them so that the normals point out
        out.invert()
    return out


def write_mesh(scene: GaussianScene, path, config: MeshConfig | None = None) -> tuple[int, int]:
    """Write ``scene``'s mesh to ``path`` (.glb or .obj, atomically); returns (vertices, faces)."""
    from ..atomic import atomic_path

    mesh = scene_mesh(scene, config)
    suffix = str(path).lower().rsplit(".", 1)[-1]
    with atomic_path(path) as tmp:
        (with_material(mesh) if suffix == "glb" else mesh).export(str(tmp), file_type=suffix)
    return len(mesh.vertices), len(mesh.faces)


def with_material(mesh):
    """The mesh for glTF: an explicit matte, non-metallic PBR material (without one, glTF's defaults make the surface
    fully metallic, which renders black under diffuse light) and the vertex colours (COLOR_0) converted from sRGB to
    the linear values glTF specifies."""
    import trimesh

    material = trimesh.visual.material.PBRMaterial(
        name="vertex colours", baseColorFactor=[255, 255, 255, 255], metallicFactor=0.0, roughnessFactor=1.0
    )
    visual = trimesh.visual.TextureVisuals(material=material)
    rgba = np.asarray(mesh.visual.vertex_colors).astype(np.float64) / 255.0
    srgb = rgba[:, :3]
    rgba[:, :3] = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    visual.vertex_attributes["color"] = np.round(rgba * 255).astype(np.uint8)
    return trimesh.Trimesh(vertices=mesh.vertices, faces=mesh.faces, visual=visual, process=False)
