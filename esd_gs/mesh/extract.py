"""Gaussians -> a vertex-coloured triangle mesh in glTF's axes, ready for .glb / .obj.

1. ``field.opacity_field`` on a ``resolution``^3 grid;
2. the occupied voxels (density >= ``level``) with every enclosed cavity filled (``scipy.ndimage.binary_fill_holes``):
   a shell of surface Gaussians becomes a solid, so only its outer surface is extracted;
3. marching cubes (``skimage.measure.marching_cubes``) at ``level``;
4. cleaning with trimesh: degenerate faces and unreferenced vertices removed, components with fewer than
   ``min_component`` of the faces dropped (floaters);
5. decimation to at most ``faces`` triangles (trimesh's quadric decimation, fast-simplification);
6. vertex colours: the field's colour (colour-weighted density / density, each trilinear) at each vertex of the
   level surface: the outermost material, so the thin features that stand on a surface (a face's brows,
   pupils and lips) keep their colour;
7. the half maximum (``half_maximum``): each vertex moves inward along its normal to where the density reaches half
   its peak beneath it. Overlapping surface Gaussians sum to well above the level, so the level surface sits out in
   their summed tails (a sphere of disks: +10% volume at 96^3); the half maximum is the sheet's own half-thickness.
   Moving vertices rather than taking a half-maximum isosurface keeps the level surface's topology: a 3D
   half-maximum field carved cracks where a dense feature (the nose) meets the face;
8. axes: esd-gs's world (+Z up, front +X, left +Y) to glTF's (+Y up, +Z towards the viewer, +X the viewer's right):
   (x, y, z) -> (y, z, x), a rotation, so the object stands upright and faces a glTF viewer's default camera;
9. with ``texture`` (``texture.py``): xatlas's UV charts and a texture baked from rendered views of the Gaussians,
   instead of vertex colours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UserError
from ..scene import GaussianScene
from .field import Grid, opacity_field, scene_grid

HALF_MAX_DEPTH = 3.0
"""Voxels inward from the level surface over which a vertex looks for the field's peak (``half_maximum``)."""
HALF_MAX_SMOOTHING = 10
"""Rounds of averaging each vertex's inward move with its neighbours' (``half_maximum``): the moves differ where
features stand on a surface, and unsmoothed they roughen it."""
HALF_MAX_STEP = 0.25
"""Step, in voxels, of the density profile ``half_maximum`` reads along each normal."""
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
    texture: int = 0
    """Bake a UV texture of this many pixels per side from rendered views (``texture.py``; .glb only); 0 = vertex
    colours only."""

    def __post_init__(self) -> None:
        if not 16 <= self.resolution <= 512:
            raise UserError(f"--resolution must be in 16..512, got {self.resolution}")
        if self.faces < 4:
            raise UserError(f"--faces must be at least 4, got {self.faces}")
        if not 0.0 < self.level < 1.0:
            raise UserError(f"--level must be in (0, 1), got {self.level}")
        if self.texture and not 16 <= self.texture <= 8192:
            raise UserError(f"--texture must be 0 (off) or a size in 16..8192, got {self.texture}")


def import_mesh_tools(texture: bool = False):
    """trimesh, once scikit-image (and for ``texture`` xatlas and pillow) are known to be there: else one line."""
    try:
        import scipy.ndimage  # noqa: F401
        import skimage.measure  # noqa: F401
        import trimesh
    except ImportError:
        raise UserError("meshes need scikit-image and trimesh: pip install 'esd-gs[mesh]'") from None
    if texture:
        try:
            import PIL.Image  # noqa: F401
            import xatlas  # noqa: F401
        except ImportError:
            raise UserError("--texture needs xatlas and pillow: pip install 'esd-gs[mesh]'") from None
    return trimesh


def _trilinear(volume: np.ndarray, points: np.ndarray) -> np.ndarray:
    from scipy.ndimage import map_coordinates

    return map_coordinates(volume, points.T, order=1, mode="nearest")


def half_maximum(
    density: np.ndarray, points: np.ndarray, normals: np.ndarray, level: float, edges: np.ndarray | None = None
) -> np.ndarray:
    """The level-surface ``points`` [N, 3] (voxel coordinates) moved inward along their unit outward ``normals`` to
    where the density first reaches half its peak P over the next ``HALF_MAX_DEPTH`` voxels inward (linear between
    samples), if P > 2 ``level`` (otherwise by 0); with the mesh's ``edges`` [E, 2], each move is then averaged with
    its neighbours' ``HALF_MAX_SMOOTHING`` times, so a vertex next to moved ones moves a little too. A sheet of
    overlapping surface Gaussians sums to well above the level, so its level surface sits out in the summed tails;
    its half maximum is the sheet's own half-thickness."""
    depths = np.arange(0.0, HALF_MAX_DEPTH + 1e-9, HALF_MAX_STEP)  # inward from the vertex
    samples = (points[:, None, :] - depths[None, :, None] * normals[:, None, :]).reshape(-1, 3)
    profile = _trilinear(density, samples).reshape(len(points), -1)
    target = np.maximum(profile.max(axis=1) / 2.0, level)[:, None]
    above = profile >= target
    first = np.where(above.any(axis=1), above.argmax(axis=1), 0)
    rows = np.arange(len(points))
    before = np.maximum(first - 1, 0)
    low, high = profile[rows, before], profile[rows, first]
    share = np.where(first > 0, (target[:, 0] - low) / np.maximum(high - low, 1e-9), 0.0)
    depth = depths[before] + np.clip(share, 0.0, 1.0) * HALF_MAX_STEP * (first > 0)
    if edges is not None:  # the mesh's edges [E, 2]: smooth the depths over neighbours, so the surface stays smooth
        from scipy.sparse import coo_matrix

        n = len(points)
        ones = np.ones(2 * len(edges))
        adjacency = coo_matrix((ones, (edges.ravel(), edges[:, ::-1].ravel())), shape=(n, n)).tocsr()
        degree = np.asarray(adjacency.sum(axis=1)).ravel() + 1.0
        for _ in range(HALF_MAX_SMOOTHING):
            depth = (adjacency @ depth + depth) / degree
    return points - depth[:, None] * normals


def scene_mesh(scene: GaussianScene, config: MeshConfig | None = None):
    """The mesh of ``scene`` (module docstring) as a ``trimesh.Trimesh`` in glTF axes, with vertex colours."""
    from scipy.ndimage import binary_fill_holes
    from skimage.measure import marching_cubes

    config = config or MeshConfig()
    trimesh = import_mesh_tools(texture=bool(config.texture))
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
    if mesh.volume < 0:  # faces wound inwards: turn them so that the normals point out
        mesh.invert()
    level_points = np.asarray(mesh.vertices)  # voxel coordinates until the end
    weight = _trilinear(density, level_points)
    colours = np.stack([_trilinear(painted[..., c], level_points) for c in range(3)], axis=1)
    colours = np.clip(colours / np.maximum(weight, 1e-6)[:, None], 0.0, 1.0)
    voxel_points = half_maximum(
        density, level_points, np.asarray(mesh.vertex_normals), config.level, np.asarray(mesh.edges_unique)
    )
    world = grid.to_world(torch.from_numpy(voxel_points).float()).numpy()
    if config.texture:
        return _textured(scene, world, np.asarray(mesh.faces), colours, config, grid.voxel)
    rgba = np.concatenate([np.round(colours * 255), np.full((len(colours), 1), 255)], axis=1).astype(np.uint8)
    return trimesh.Trimesh(vertices=world @ TO_GLTF.T, faces=np.asarray(mesh.faces), vertex_colors=rgba, process=False)


def _textured(scene: GaussianScene, world: np.ndarray, faces: np.ndarray, colours: np.ndarray, config, voxel: float):
    """Step 9: the mesh unwrapped by xatlas, with a texture baked from rendered views (``texture.py``), in glTF axes
    with a matte material whose base colour is the texture."""
    import trimesh
    from PIL import Image

    from .texture import bake, unwrap

    normals = np.asarray(trimesh.Trimesh(vertices=world, faces=faces, process=False).vertex_normals)
    mapping, faces, uv = unwrap(world, faces, config.texture)
    world, normals, colours = world[mapping], normals[mapping], colours[mapping]
    render_size = min(512, max(128, config.texture))  # the views: about one pixel per texel, at most 512 px
    image, seen = bake(scene, world, faces, normals, colours, uv, config.texture, 3.0 * voxel, render_size)
    material = trimesh.visual.material.PBRMaterial(
        name="baked texture", baseColorTexture=Image.fromarray(image), metallicFactor=0.0, roughnessFactor=1.0
    )
    mesh = trimesh.Trimesh(vertices=world @ TO_GLTF.T, faces=faces, process=False)
    mesh.visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
    mesh.metadata["texture_seen"] = seen  # share of texels some view saw (the rest: vertex colours)
    return mesh


def write_mesh(scene: GaussianScene, path, config: MeshConfig | None = None):
    """Write ``scene``'s mesh to ``path`` (.glb or .obj, atomically); returns the mesh (a ``trimesh.Trimesh``)."""
    from ..atomic import atomic_path

    suffix = str(path).lower().rsplit(".", 1)[-1]
    if config is not None and config.texture and suffix != "glb":
        raise UserError("--texture is written into the .glb itself: export to a .glb")
    mesh = scene_mesh(scene, config)
    with atomic_path(path) as tmp:
        (with_material(mesh) if suffix == "glb" else mesh).export(str(tmp), file_type=suffix)
    return mesh


def with_material(mesh):
    """The mesh for glTF: an explicit matte, non-metallic PBR material (without one, glTF's defaults make the surface
    fully metallic, which renders black under diffuse light) and the vertex colours (COLOR_0) converted from sRGB to
    the linear values glTF specifies."""
    import trimesh

    if mesh.visual.kind == "texture":  # baked: the texture is the colour (sRGB, as glTF specifies for it)
        return mesh
    material = trimesh.visual.material.PBRMaterial(
        name="vertex colours", baseColorFactor=[255, 255, 255, 255], metallicFactor=0.0, roughnessFactor=1.0
    )
    visual = trimesh.visual.TextureVisuals(material=material)
    rgba = np.asarray(mesh.visual.vertex_colors).astype(np.float64) / 255.0
    srgb = rgba[:, :3]
    rgba[:, :3] = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    visual.vertex_attributes["color"] = np.round(rgba * 255).astype(np.uint8)
    return trimesh.Trimesh(vertices=mesh.vertices, faces=mesh.faces, visual=visual, process=False)
