"""Meshes from Gaussians: a sphere of surface Gaussians gives a closed mesh on the sphere with its volume, the head's
face ends up on the front (+Z in glTF) and its hair on top (+Y), files read back with trimesh, the commands."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from esd_gs.example import builtin_head
from esd_gs.mesh.extract import MeshConfig, scene_mesh
from esd_gs.mesh.field import opacity_field, scene_grid
from esd_gs.scene import GaussianScene
from esd_gs.testing.browser import CHROMIUM, CHROMIUM_ARGS

trimesh = pytest.importorskip("trimesh")
pytest.importorskip("skimage")
ROOT = Path(__file__).resolve().parents[1]


def sphere_of_disks(count: int = 6000, radius: float = 0.5) -> GaussianScene:
    """Flat opaque disks tangent to a sphere (a Fibonacci spiral of centres), the way a surface is made."""
    i = torch.arange(count, dtype=torch.float64) + 0.5
    polar = torch.acos(1 - 2 * i / count)
    azimuth = math.pi * (3 - math.sqrt(5)) * i
    normals = torch.stack(
        [torch.sin(polar) * torch.cos(azimuth), torch.sin(polar) * torch.sin(azimuth), torch.cos(polar)], dim=1
    ).float()
    axis = torch.linalg.cross(torch.tensor([0.0, 0.0, 1.0]).expand_as(normals), normals, dim=1)  # +Z -> normal
    angle = torch.acos(normals[:, 2].clamp(-1, 1))
    axis = torch.nn.functional.normalize(axis, dim=1)
    quats = torch.cat([torch.cos(angle / 2)[:, None], torch.sin(angle / 2)[:, None] * axis], dim=1)
    spacing = math.sqrt(4 * math.pi * radius**2 / count)
    return GaussianScene.from_activated(
        means=radius * normals,
        scales=torch.tensor([spacing, spacing, 0.1 * spacing]).expand(count, 3).clone(),
        quats=quats,
        opacities=torch.full((count,), 0.95),
        colors=torch.full((count, 3), 0.6),
        sh_degree=0,
    )


def test_the_field_of_one_gaussian_is_its_formula():
    scene = GaussianScene.from_activated(
        means=torch.zeros(1, 3),
        scales=torch.tensor([[0.2, 0.1, 0.05]]),
        quats=torch.tensor([[1.0, 0, 0, 0]]),
        opacities=torch.tensor([0.8]),
        colors=torch.tensor([[1.0, 0.5, 0.0]]),
        sh_degree=0,
    )
    grid = scene_grid(scene, 33)
    density, painted = opacity_field(scene, grid, budget=1000)  # small blocks: the chunking is exercised
    index = torch.stack(torch.meshgrid(*[torch.arange(33)] * 3, indexing="ij"), dim=-1).float()
    x = grid.to_world(index.reshape(-1, 3))
    s = torch.tensor([0.2, 0.1, 0.05]).clamp_min(grid.voxel / 2)
    m = (x / s).square().sum(-1)
    expected = torch.where(m < 9, 0.8 * torch.exp(-0.5 * m), torch.zeros(()))
    clear = (m - 9).abs() > 1e-3  # the 3-sigma cut itself is a float tie either way
    torch.testing.assert_close(density.reshape(-1)[clear], expected[clear], atol=1e-5, rtol=1e-4)
    colour = painted.reshape(-1, 3)[density.reshape(-1) > 1e-3] / density.reshape(-1)[density.reshape(-1) > 1e-3, None]
    torch.testing.assert_close(colour, torch.tensor([1.0, 0.5, 0.0]).expand_as(colour), atol=1e-5, rtol=0)


def test_a_sphere_of_gaussians_gives_the_sphere():
    """At the defaults (128^3, 100k faces): closed, on the sphere, and its volume within a few percent of the
    sphere's. The plain level surface sat about a voxel out in the disks' summed tails (+10% volume at 96^3); the
    half maximum leaves the disks' own half-thickness, floored at half a voxel (field.py), about 0.65 voxel."""
    mesh = scene_mesh(sphere_of_disks())
    assert mesh.is_watertight
    distance = np.linalg.norm(mesh.vertices, axis=1)
    grid_step = 1.1 / 125
    assert abs(distance.mean() - 0.5) < grid_step and distance.std() < 0.2 * grid_step
    volume = 4 / 3 * math.pi * distance.mean() ** 3
    assert mesh.volume == pytest.approx(volume, rel=0.01)  # the mesh's own volume, against a sphere its size
    assert mesh.volume == pytest.approx(4 / 3 * math.pi * 0.5**3, rel=0.05)


def test_vertices_move_to_the_half_maximum_of_a_known_profile():
    """A density that rises linearly inward from the level 0.5 to a peak of 3 at 2 voxels deep: half the peak (1.5)
    is 0.8 voxel in; a profile that never passes 2 x level leaves the vertex where it is."""
    from esd_gs.mesh.extract import half_maximum

    x = np.arange(16, dtype=float)
    rising = np.clip(0.5 + 1.25 * (10.0 - x), 0.0, 3.0)  # level 0.5 at x = 10, peak 3 from x = 8 inward
    flat = np.where(x <= 10, 0.9, 0.0)  # peak 0.9 < 2 x level
    for profile, expected in ((rising, 9.2), (flat, 10.0)):
        density = np.broadcast_to(profile[:, None, None], (16, 8, 8)).copy()
        moved = half_maximum(density, np.array([[10.0, 4.0, 4.0]]), np.array([[1.0, 0.0, 0.0]]), 0.5)
        np.testing.assert_allclose(moved, [[expected, 4.0, 4.0]], atol=1e-6)


def test_the_heads_face_is_on_the_front_and_its_hair_on_top(tmp_path):
    mesh = scene_mesh(builtin_head(), MeshConfig(resolution=96, faces=30_000))
    vertices, colours = np.asarray(mesh.vertices), np.asarray(mesh.visual.vertex_colors)[:, :3].astype(float)
    lips = (colours[:, 0] > 140) & (colours[:, 1] < 80) & (colours[:, 2] < 80)
    hair = colours.sum(1) < 200
    assert lips.sum() > 20 and vertices[lips, 2].mean() > 0.35  # the front faces +Z, a glTF viewer's camera
    assert vertices[hair, 1].mean() > vertices[:, 1].mean() + 0.1  # up is +Y
    from esd_gs.mesh.extract import with_material

    with_material(mesh).export(tmp_path / "head.glb")
    loaded = trimesh.load(tmp_path / "head.glb", force="mesh")  # an independent reader of the file
    assert len(loaded.faces) == len(mesh.faces) and loaded.visual.material.metallicFactor == 0.0
    import json
    import struct

    blob = (tmp_path / "head.glb").read_bytes()  # the glTF JSON chunk: the colours and the matte material
    assert blob[:4] == b"glTF" and blob[16:20] == b"JSON"
    gltf = json.loads(blob[20 : 20 + struct.unpack("<I", blob[12:16])[0]])
    (primitive,) = gltf["meshes"][0]["primitives"]
    assert "COLOR_0" in primitive["attributes"] and gltf["accessors"][primitive["attributes"]["COLOR_0"]]["normalized"]
    assert gltf["materials"][primitive["material"]]["pbrMetallicRoughness"]["metallicFactor"] == 0.0


def esd_gs(*args):
    return subprocess.run(
        [sys.executable, "-m", "esd_gs", *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=600
    )


def test_export_glb_and_obj_and_bad_options(tmp_path):
    head = ROOT / "assets" / "head.ply"
    done = esd_gs("export", head, "--to", tmp_path / "head.glb", "--resolution", 64, "--faces", 5000)
    assert done.returncode == 0, done.stderr
    assert len(trimesh.load(tmp_path / "head.glb", force="mesh").faces) <= 5000
    done = esd_gs("export", head, "--to", tmp_path / "head.obj", "--resolution", 48)
    assert done.returncode == 0, done.stderr
    assert len(trimesh.load(tmp_path / "head.obj", force="mesh").faces) > 1000
    for args, message in (
        (["--resolution", 8], "--resolution must be in 16..512"),
        (["--level", 1.5], "--level must be in (0, 1)"),
        (["--up", "z"], "--up applies to .ply and .splat"),
        (["--texture", 8], "--texture must be 0 (off) or a size in 16..8192"),
        (["--texture", -1], "--texture must be 0 (off) or a size in 16..8192"),
    ):
        bad = esd_gs("export", head, "--to", tmp_path / "bad.glb", *args)
        assert bad.returncode == 2 and message in bad.stderr.strip().splitlines()[-1]
    bad = esd_gs("export", head, "--to", tmp_path / "bad.obj", "--texture", 256)
    assert bad.returncode == 2 and "--texture is written into the .glb" in bad.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "bad.glb").exists() and not (tmp_path / "bad.obj").exists()


def test_generate_mesh_writes_scene_glb(tmp_path):
    done = esd_gs(
        "generate",
        "a head",
        "--preset",
        "synthetic",
        "--steps",
        3,
        "--mesh",
        "--out",
        tmp_path / "run",
        "--init.num-points",
        300,
        "--prior.num-images",
        16,
        "--output.turntable-views",
        4,
        "--output.turntable-size",
        16,
        "--output.video-formats",
        "gif",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(trimesh.load(tmp_path / "run" / "scene.glb", force="mesh").faces) > 100


# ---------------------------------------------------------------------------------------------- in a browser viewer
THREE = ROOT / ".cache" / "web" / "node_modules" / "three"


@pytest.mark.parametrize("colour", [[], ["--texture", "256"]], ids=["vertex-colours", "texture"])
def test_the_glb_in_a_threejs_viewer_in_headless_chromium(tmp_path, colour):
    """three.js's GLTFLoader (from npm) draws the exported head in headless Chromium, from a glTF viewer's default
    front (+Z), with vertex colours or a baked texture: the face is seen (the red lips low in the middle), the hair
    is on top."""
    import functools
    import http.server
    import shutil
    import threading

    import imageio.v3 as iio

    if not CHROMIUM.exists() or not (THREE / "build" / "three.module.js").is_file():
        pytest.skip("needs /usr/bin/chromium and three.js in .cache/web (scripts/install_browser.sh installs both)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the test extra installs playwright")
    site = tmp_path / "site"
    (site / "node_modules").mkdir(parents=True)
    shutil.copytree(THREE, site / "node_modules" / "three", ignore=shutil.ignore_patterns("src", "*.cjs", "*webgpu*"))
    shutil.copy(ROOT / "tests" / "web" / "glb.html", site / "index.html")
    done = esd_gs("export", ROOT / "assets" / "head.ply", "--to", site / "model.glb", "--resolution", 96, *colour)
    assert done.returncode == 0, done.stderr
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 640, "height": 640})
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/index.html")
            page.wait_for_function("window.rendered === true || window.loadError !== undefined", timeout=60_000)
            assert page.evaluate("window.loadError") is None
            page.screenshot(path=str(tmp_path / "screenshot.png"))  # the README's picture
            picture = iio.imread(tmp_path / "screenshot.png")[..., :3].astype(int)
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    drawn = np.abs(picture - 255).sum(-1) > 40
    rows, columns = np.nonzero(drawn.any(axis=1))[0], np.nonzero(drawn.any(axis=0))[0]
    assert drawn.mean() > 0.1 and abs((columns[0] + columns[-1]) / 2 - 320) < 40  # drawn, in the middle
    red = (picture[..., 0] > 150) & (picture[..., 1] < 90) & (picture[..., 2] < 90)
    dark = drawn & (picture.sum(-1) < 200)
    top, height = rows[0], rows[-1] - rows[0]
    assert red.sum() > 100, "no lips: the viewer does not see the face"
    red_rows, red_columns = np.nonzero(red)
    assert red_rows.mean() > top + 0.6 * height and abs(red_columns.mean() - 320) < 40  # low in the middle
    assert np.nonzero(dark)[0].mean() < top + 0.45 * height  # the hair is above


# ---------------------------------------------------------------------------------------------- UV texture
def test_a_sliver_without_a_texel_centre_still_gets_texels():
    """A triangle thinner than a texel between two rows of texel centres: the exact pass finds no centre inside it;
    the conservative pass gives it the texels its corners, edge midpoints and centroid fall in."""
    from esd_gs.mesh.texture import rasterize_uv

    uv = np.array([[0.1, 0.1], [0.9, 0.1], [0.5, 0.11]])  # v in [0.1, 0.11]: texel centres sit at v = 0.0625, 0.1875
    owner, bary = rasterize_uv(uv, np.array([[0, 1, 2]]), 8)
    rows, cols = np.nonzero(owner == 0)
    assert len(rows) >= 2 and set(rows) == {7 - 0}  # row 7 holds v in [0, 0.125]
    np.testing.assert_allclose(bary[rows, cols].sum(1), 1.0)


def test_the_uv_layout_rasterizes_to_its_known_texels():
    """One triangle over half the unit square at 8 x 8 texels: the 36 texels whose centre has u + v <= 1, each with
    barycentric coordinates that give back its centre."""
    from esd_gs.mesh.texture import rasterize_uv

    uv = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    owner, bary = rasterize_uv(uv, np.array([[0, 1, 2]]), 8)
    rows, cols = np.nonzero(owner == 0)
    centre_u, centre_v = (cols + 0.5) / 8, 1 - (rows + 0.5) / 8
    assert len(rows) == 36 and (centre_u + centre_v <= 1).all() and (owner[owner != 0] == -1).all()
    np.testing.assert_allclose(bary[rows, cols] @ uv, np.stack([centre_u, centre_v], 1), atol=1e-9)


def test_the_baked_texture_puts_each_side_s_colour_on_its_side(tmp_path):
    """A sphere of disks, red where x > 0 and blue where x < 0: the texture is red on the red half and blue on the
    blue half (the views' projection is right), and the .glb carries it."""
    pytest.importorskip("xatlas")
    from esd_gs.mesh.extract import TO_GLTF

    sphere = sphere_of_disks(3000)
    raw = sphere.raw()
    red = raw["means"][:, 0] > 0
    colours = torch.where(red[:, None], torch.tensor([0.9, 0.1, 0.1]), torch.tensor([0.1, 0.1, 0.9]))
    scene = GaussianScene.from_activated(
        means=raw["means"], scales=sphere.scales.detach(), quats=sphere.quats.detach(),
        opacities=torch.full((3000,), 0.95), colors=colours, sh_degree=0,
    )  # fmt: skip
    mesh = scene_mesh(scene, MeshConfig(resolution=64, faces=4000, texture=128))
    assert mesh.metadata["texture_seen"] > 0.95
    world = np.asarray(mesh.vertices) @ TO_GLTF  # back to esd-gs axes: x is the red-blue axis
    texels = mesh.visual.to_color()  # trimesh samples the texture at each vertex's UV
    rgb = np.asarray(texels.vertex_colors)[:, :3].astype(int)
    far_red, far_blue = world[:, 0] > 0.1, world[:, 0] < -0.1
    assert (rgb[far_red, 0] > 150).mean() > 0.98 and (rgb[far_red, 2] < 90).mean() > 0.98
    assert (rgb[far_blue, 2] > 150).mean() > 0.98 and (rgb[far_blue, 0] < 90).mean() > 0.98
    from esd_gs.mesh.extract import with_material

    with_material(mesh).export(tmp_path / "sphere.glb")
    loaded = trimesh.load(tmp_path / "sphere.glb", force="mesh")
    assert loaded.visual.kind == "texture" and loaded.visual.material.baseColorTexture.size == (128, 128)


def test_a_hidden_surface_takes_no_colour_from_what_hides_it():
    """A red ball in front (+X) of a blue one: the views from the front see red where the blue ball's front is; the
    depth test keeps that red off the blue ball's texture (without it, the blue ball's front turns red)."""
    pytest.importorskip("xatlas")
    from esd_gs.mesh.extract import TO_GLTF

    parts = []
    for radius, centre, colour in ((0.32, (-0.25, 0.0, 0.0), (0.1, 0.1, 0.9)), (0.2, (0.4, 0.0, 0.0), (0.9, 0.1, 0.1))):
        ball = sphere_of_disks(2500, radius)
        raw = ball.raw()
        parts.append((raw["means"] + torch.tensor(centre), ball.scales.detach(), ball.quats.detach(), colour))
    scene = GaussianScene.from_activated(
        means=torch.cat([p[0] for p in parts]), scales=torch.cat([p[1] for p in parts]),
        quats=torch.cat([p[2] for p in parts]), opacities=torch.full((5000,), 0.95),
        colors=torch.cat([torch.tensor(p[3]).expand(2500, 3) for p in parts]), sh_degree=0,
    )  # fmt: skip
    mesh = scene_mesh(scene, MeshConfig(resolution=80, faces=6000, texture=128))
    world = np.asarray(mesh.vertices) @ TO_GLTF
    rgb = np.asarray(mesh.visual.to_color().vertex_colors)[:, :3].astype(int)
    blue_front = (np.linalg.norm(world - [-0.25, 0, 0], axis=1) < 0.4) & (world[:, 0] > -0.05)  # behind the red ball
    assert blue_front.sum() > 50
    assert (rgb[blue_front, 2] > 150).mean() > 0.95 and (rgb[blue_front, 0] < 90).mean() > 0.95
