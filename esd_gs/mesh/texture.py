"""A UV texture for the mesh, baked from rendered views of the Gaussians (DreamGaussian's approach).

1. **Unwrap**: xatlas charts the mesh and packs them into the unit square, ``PADDING`` texels apart (``unwrap``);
   vertices on chart seams are split, so the mesh comes back with its own vertices, faces and one UV per vertex.
2. **Rasterize the UV layout** (``rasterize_uv``): every texel centre inside a triangle of the layout gets that
   triangle and its barycentric coordinates, hence a 3D point and a normal on the mesh.
3. **Back-project views** (``bake``): the Gaussians are rendered (colour, opacity, expected depth) from the 26
   cameras of ``views``, around, above and below the mesh, framing its bounding sphere. Each texel's point is
   projected into every view; a view counts where the point is visible there (its depth within ``depth_tolerance``
   of the rendered depth, the rendered opacity above one half) and faces it (the cosine between the normal and the
   direction to the camera above ``MIN_COSINE``), weighted by that cosine squared. The texel's colour is the
   weighted mean of the views' colours at its pixel.
4. Texels no view sees take the mesh's vertex colour there; empty texels take their nearest filled texel's colour,
   so that filtering across chart borders does not bleed in black.

Texture images follow trimesh's UV convention (v up: row = (1 - v) x size); trimesh writes glTF's (v down).
Points are in esd-gs's world axes (+Z up), as the renderer's cameras.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from ..cameras import orbit_cameras
from ..render import render
from ..scene import GaussianScene

SAMPLE_POINTS = np.array(
    [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [1 / 3, 1 / 3, 1 / 3]], dtype=float
)
"""Barycentric coordinates of the points of each face that claim a texel in ``rasterize_uv``'s conservative pass."""
PADDING = 2
"""Texels left between charts (filled from their own chart's border), so that filtering does not mix charts."""
MIN_COSINE = 0.2
"""A view counts for a texel only when the surface faces it at least this much."""


def views(centre: torch.Tensor, radius: float, fovy: float = 50.0):
    """The baking cameras, looking at ``centre`` [3] from far enough to see a sphere of ``radius`` whole: 8 azimuths
    at elevations -35 and 50 degrees, 8 more in between (10 degrees, turned by 22.5), and straight above and below.
    The returned cameras' poses (``c2w``) are moved to ``centre``; their azimuth, elevation and radius fields still
    describe the orbit about the origin they were built on."""
    azimuth = torch.arange(8, dtype=torch.float32).repeat(3) * 45.0 + torch.tensor([0.0, 22.5, 0.0]).repeat_interleave(
        8
    )
    elevation = torch.tensor([-35.0, 10.0, 50.0]).repeat_interleave(8)
    azimuth, elevation = torch.cat([azimuth, torch.zeros(2)]), torch.cat([elevation, torch.tensor([89.0, -89.0])])
    count = len(azimuth)
    distance = 1.1 * radius / math.sin(math.radians(fovy) / 2)
    cams = orbit_cameras(azimuth, elevation, torch.full((count,), distance), torch.full((count,), fovy))
    cams.c2w[:, :3, 3] += centre  # an orbit about the origin, moved to the mesh's centre
    return cams


def unwrap(vertices: np.ndarray, faces: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """xatlas's charts packed for a ``size``-pixel texture with ``PADDING`` texels between charts: (index of each
    new vertex into ``vertices`` [V'], new faces [F, 3], UVs [V', 2] in [0, 1])."""
    import xatlas

    pack = xatlas.PackOptions()
    pack.resolution, pack.padding = size, PADDING
    atlas = xatlas.Atlas()
    atlas.add_mesh(vertices.astype(np.float32), faces.astype(np.uint32))
    atlas.generate(pack_options=pack)
    mapping, new_faces, uv = atlas[0]
    return mapping.astype(np.int64), new_faces.astype(np.int64), uv.astype(np.float64)


def rasterize_uv(uv: np.ndarray, faces: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(face index [size, size] (-1: no face), barycentric coordinates [size, size, 3]) of every texel centre.

    Texel (row, col) has its centre at u = (col + 0.5) / size, v = 1 - (row + 0.5) / size. Faces are processed in
    groups of similar bounding-box size, each group as one array of candidate texels."""
    points = np.stack([uv[:, 0] * size, (1.0 - uv[:, 1]) * size], axis=1)[faces]  # [F, 3, 2] in texel units
    low = np.floor(points.min(axis=1) - 0.5).astype(np.int64)
    extent = (np.ceil(points.max(axis=1) - 0.5).astype(np.int64) - low + 1).max(axis=1)
    owner = np.full(size * size, -1, dtype=np.int64)
    bary = np.zeros((size * size, 3))
    a, b, c = points[:, 0], points[:, 1], points[:, 2]
    denominator = (b[:, 1] - c[:, 1]) * (a[:, 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (a[:, 1] - c[:, 1])
    bucket = 1
    while True:
        group = np.nonzero((extent <= bucket) & (extent > bucket // 2) & (np.abs(denominator) > 1e-12))[0]
        if group.size:
            offsets = np.stack(np.meshgrid(np.arange(bucket), np.arange(bucket), indexing="ij"), -1).reshape(-1, 2)
            texel = low[group][:, None, :] + offsets[None, :, ::-1]  # [n, k, (x, y)]
            x, y = texel[..., 0] + 0.5, texel[..., 1] + 0.5
            ga, gb, gc, gd = a[group], b[group], c[group], denominator[group][:, None]
            w0 = ((gb[:, None, 1] - gc[:, None, 1]) * (x - gc[:, None, 0]) + (gc[:, None, 0] - gb[:, None, 0]) * (
                y - gc[:, None, 1])) / gd  # fmt: skip
            w1 = ((gc[:, None, 1] - ga[:, None, 1]) * (x - gc[:, None, 0]) + (ga[:, None, 0] - gc[:, None, 0]) * (
                y - gc[:, None, 1])) / gd  # fmt: skip
            w2 = 1.0 - w0 - w1
            inside = (w0 >= -1e-9) & (w1 >= -1e-9) & (w2 >= -1e-9) & (texel >= 0).all(-1) & (texel < size).all(-1)
            rows, cols = np.nonzero(inside)
            flat = texel[rows, cols, 1] * size + texel[rows, cols, 0]
            owner[flat] = group[rows]
            bary[flat] = np.stack([w0[rows, cols], w1[rows, cols], w2[rows, cols]], axis=1)
        if bucket >= extent.max(initial=1):
            break
        bucket *= 2
    # Conservative pass: a sliver thinner than a texel may hold no texel centre. Its corners, edge midpoints and
    # centroid claim the texels they fall in (when no face has), so every face has texels of its own chart.
    for weights in SAMPLE_POINTS:
        point = np.einsum("k,fkd->fd", weights, points)
        texel = np.clip(np.floor(point).astype(np.int64), 0, size - 1)
        flat = texel[:, 1] * size + texel[:, 0]
        free = owner[flat] == -1
        owner[flat[free]] = np.nonzero(free)[0]
        bary[flat[free]] = weights
    return owner.reshape(size, size), bary.reshape(size, size, 3)


def _sample(image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear samples [n, C] of ``image`` [1, C, H, W] at normalised points ``grid`` [1, 1, n, 2]."""
    return torch.nn.functional.grid_sample(image, grid, align_corners=False)[0, :, 0].T


@torch.no_grad()
def bake(
    scene: GaussianScene,
    vertices: np.ndarray,
    faces: np.ndarray,
    normals: np.ndarray,
    colours: np.ndarray,
    uv: np.ndarray,
    size: int,
    depth_tolerance: float,
    render_size: int = 512,
) -> tuple[np.ndarray, float]:
    """(the texture [size, size, 3] uint8, the share of covered texels seen by at least one view) for a mesh with
    world ``vertices`` [V, 3], ``faces`` [F, 3], unit vertex ``normals`` [V, 3], vertex ``colours`` [V, 3] in [0, 1]
    and ``uv`` [V, 2] (module docstring)."""
    from scipy.ndimage import distance_transform_edt

    owner, bary = rasterize_uv(uv, faces, size)
    covered = owner >= 0
    corners = faces[owner[covered]]  # [n, 3]
    weights = bary[covered][..., None]
    points = torch.from_numpy((vertices[corners] * weights).sum(1)).float()
    normal = torch.nn.functional.normalize(torch.from_numpy((normals[corners] * weights).sum(1)).float(), dim=1)
    fallback = (colours[corners] * weights).sum(1)
    centre = torch.from_numpy((vertices.min(0) + vertices.max(0)) / 2).float()
    cams = views(centre, float(np.linalg.norm(vertices - centre.numpy(), axis=1).max()))
    total, weight = torch.zeros(len(points), 3), torch.zeros(len(points))
    for index in range(len(cams)):
        view = cams[index : index + 1]
        out = render(scene, view, render_size, render_size, background=0.0)  # on the scene's device
        out = dataclasses.replace(
            out, rgb=out.rgb.float().cpu(), alpha=out.alpha.float().cpu(), depth=out.depth.float().cpu()
        )
        camera_points = (points - view.positions[0]) @ view.c2w[0, :3, :3]  # OpenCV camera axes: x, y, z
        depth = camera_points[:, 2].clamp_min(1e-6)
        focal = float(view.focal(render_size)[0])
        u = focal * camera_points[:, 0] / depth + render_size / 2
        v = focal * camera_points[:, 1] / depth + render_size / 2
        grid = torch.stack([u / render_size * 2 - 1, v / render_size * 2 - 1], dim=1)[None, None]  # [1, 1, n, 2]
        rgb, alpha, rendered_depth = (_sample(image, grid) for image in (out.rgb, out.alpha, out.depth))
        alpha, rendered_depth = alpha[:, 0], rendered_depth[:, 0]
        facing = (normal * torch.nn.functional.normalize(view.positions[0] - points, dim=1)).sum(1)
        on_image = (grid.abs() < 1).all(-1)[0, 0]
        seen = on_image & (alpha > 0.5) & ((rendered_depth - depth).abs() < depth_tolerance) & (facing > MIN_COSINE)
        w = torch.where(seen, facing.square(), torch.zeros(()))
        total += w[:, None] * (rgb / alpha.clamp_min(1e-6)[:, None]).clamp(0, 1)  # un-premultiplied (black background)
        weight += w
    seen_any = weight > 0
    colour = np.where(seen_any[:, None].numpy(), (total / weight.clamp_min(1e-9)[:, None]).numpy(), fallback)
    texture = np.zeros((size, size, 3))
    texture[covered] = colour
    if not covered.all():  # empty texels: the nearest covered texel's colour
        nearest = distance_transform_edt(~covered, return_distances=False, return_indices=True)
        texture = texture[nearest[0], nearest[1]]
    return np.round(np.clip(texture, 0, 1) * 255).astype(np.uint8), float(seen_any.float().mean())
