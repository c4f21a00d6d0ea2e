"""theta's starting point (``--init``): the ball, a .ply file, and Shap-E's coarse object (``esd_gs/initial``).

Known answers: the marching-cubes table meshes a sphere closed and on its radius; a mesh coloured red on Shap-E's
front (-Y) and blue on its back ends up red at esd-gs's front (+X) and blue at -X, +Z still up, at the orbit's scale,
with sRGB colours; surface samples lie on the mesh; grown points stay near their seeds. A tiny random Shap-E, written
and loaded through ``from_pretrained``, makes Gaussians on its own decoded mesh; an empty renderer table and an empty
mesh are one line each; real CLI runs start from Shap-E and from a .ply.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
import yaml
from cli_process import run_cli

from esd_gs.cameras import OrbitSampler
from esd_gs.configs.yaml_io import config_from_dict, config_to_dict
from esd_gs.errors import UserError
from esd_gs.initial import BallInit, InitContext, PlyInit, ShapEInit
from esd_gs.initial.points import gaussians_from_points, grow_points, neighbour_scale, sample_surface
from esd_gs.initial.shap_e import SHAP_E_TO_WORLD, linear_to_srgb
from esd_gs.initial.shap_e_model import load_shap_e, shap_e_mesh
from esd_gs.io import read_ply, write_ply
from esd_gs.scene import SH_C0
from esd_gs.testing.tiny_shap_e import marching_cubes_table, write_tiny_shap_e

ENV = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="150", OMP_NUM_THREADS="1")
CPU = torch.device("cpu")
PROMPT = "a red car"


def sphere_mesh(n: int = 24, radius: float = 0.5):
    """A sphere's mesh from diffusers' MeshDecoder with ``marching_cubes_table`` (inside = positive field)."""
    from diffusers.pipelines.shap_e.renderer import MeshDecoder

    decoder = MeshDecoder()
    cases, masks = marching_cubes_table()
    decoder.cases.copy_(cases)
    decoder.masks.copy_(masks)
    axis = torch.linspace(-1, 1, n)
    x, y, z = torch.meshgrid(axis, axis, axis, indexing="ij")
    field = radius - (x**2 + y**2 + z**2).sqrt()
    mesh = decoder(field, torch.tensor([-1.0, -1.0, -1.0]), torch.tensor([2.0, 2.0, 2.0]))
    return mesh.verts, mesh.faces


@pytest.fixture(scope="module")
def tiny_shap_e(tmp_path_factory):
    return write_tiny_shap_e(tmp_path_factory.mktemp("shap-e") / "tiny")


def context(seed: int = 0, radius: float = 2.5) -> InitContext:
    return InitContext(PROMPT, seed, CPU, OrbitSampler(radius=(radius, radius)))


# ------------------------------------------------------------------------------------------------ the maths


def test_marching_cubes_table_meshes_a_sphere_closed_on_its_radius():
    vertices, faces = sphere_mesh()
    radii = vertices.norm(dim=1)
    assert faces.shape[0] > 500
    assert float((radii - 0.5).abs().max()) < 0.01  # vertices interpolated onto the zero level
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).sort(dim=1).values
    _, uses = torch.unique(edges, dim=0, return_counts=True)
    assert bool((uses == 2).all())  # closed: every edge is shared by exactly two triangles
    from esd_gs.initial.points import triangle_areas

    assert float(triangle_areas(vertices, faces).sum()) == pytest.approx(4 * math.pi * 0.25, rel=0.02)


def test_surface_samples_lie_on_the_triangle_with_barycentric_colours():
    vertices = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    faces = torch.tensor([[0, 1, 2]])
    colors = torch.eye(3)  # each corner its own channel: a colour is its barycentric weights
    points, shades = sample_surface(vertices, faces, colors, 2000, torch.Generator().manual_seed(0))
    assert float(points[:, 2].abs().max()) == 0.0 and bool((points[:, :2] >= 0).all())
    assert bool((points[:, 0] + points[:, 1] <= 1 + 1e-6).all())
    # the colour at (x, y) is (1 - x - y, x, y)
    expected = torch.stack([1 - points[:, 0] - points[:, 1], points[:, 0], points[:, 1]], dim=1)
    assert torch.allclose(shades, expected, atol=1e-5)
    # uniform over the triangle: the mean is its centroid
    assert torch.allclose(points[:, :2].mean(dim=0), torch.tensor([1 / 3, 1 / 3]), atol=0.02)
    with pytest.raises(ValueError, match="no surface"):
        sample_surface(vertices, torch.zeros(0, 3, dtype=torch.long), colors, 4)


def test_grown_points_stay_near_their_seeds_and_are_brightened_within_bounds():
    seeds = torch.tensor([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]])
    colors = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.5, 0.5]])
    points, shades = grow_points(seeds, colors, 500, 0.05, 0.2, torch.Generator().manual_seed(0))
    assert points.shape == (502, 3) and torch.equal(points[:2], seeds) and torch.equal(shades[:2], colors)
    grown, grown_shades = points[2:], shades[2:]
    nearest = torch.cdist(grown, seeds).min(dim=1)
    assert float(nearest.values.max()) <= 0.05 + 1e-6
    base = colors[nearest.indices]
    assert bool((grown_shades >= base).all()) and bool((grown_shades <= base + 0.2 + 1e-6).all())
    assert float((grown_shades - base).mean()) == pytest.approx(0.1, abs=0.02)  # U[0, 0.2): mean 0.1


def test_neighbour_scale_is_3dgs_mean_squared_distance_to_three_neighbours():
    line = torch.tensor([[float(i), 0.0, 0.0] for i in range(5)])
    scale = neighbour_scale(line)
    assert float(scale[2]) == pytest.approx(math.sqrt((1 + 1 + 4) / 3))  # neighbours at 1, 1, 2
    assert float(scale[0]) == pytest.approx(math.sqrt((1 + 4 + 9) / 3))
    scene = gaussians_from_points(line, torch.full((5, 3), 0.25), opacity=0.1)
    assert torch.allclose(scene.scales[:, 0], scale) and torch.allclose(scene.opacities, torch.full((5,), 0.1))


def test_linear_to_srgb_known_values():
    linear = torch.tensor([0.0, 0.001, 0.0031308, 0.5, 1.0])
    srgb = linear_to_srgb(linear)
    assert torch.allclose(srgb, torch.tensor([0.0, 0.01292, 0.04045, 0.735357, 1.0]), atol=1e-4)


def test_shap_e_front_minus_y_becomes_plus_x_red_at_the_front_and_z_stays_up():
    """A sphere red on Shap-E's front (-Y), blue on its back (+Y), and green on top: after the start, the Gaussians at
    esd-gs's front (+X) are red, at -X blue, on top (+Z) green; sized to the orbit; colours encoded to sRGB."""
    assert torch.equal(SHAP_E_TO_WORLD @ torch.tensor([0.0, -1.0, 0.0]), torch.tensor([1.0, 0.0, 0.0]))
    vertices, faces = sphere_mesh(radius=0.4)
    vertices = vertices + torch.tensor([0.1, 0.05, 0.0])  # off-centre in Shap-E's box: centred by the start
    y, z = vertices[:, 1] - 0.05, vertices[:, 2]
    linear = torch.full((vertices.shape[0], 3), 0.0)
    linear[y < -0.2, 0] = 0.5  # red front (-Y), linear 0.5
    linear[y > 0.2, 2] = 1.0  # blue back
    linear[(z > 0.3) & (y.abs() <= 0.2), 1] = 1.0  # green top
    init = ShapEInit(surface_points=3000, grown_points=0)
    scene = init.from_mesh(vertices, faces, linear, orbit_radius=2.5, seed=0)
    means = scene.means.detach()
    colors = (0.5 + SH_C0 * scene.params["sh0"].detach()[:, 0]).clamp(0, 1)
    assert float(means.norm(dim=1).max()) == pytest.approx(0.24 * 2.5, rel=0.02)  # extent x orbit radius
    assert float(means.norm(dim=1).min()) > 0.55  # on the sphere's surface, not inside it
    front, back, top = means[:, 0] > 0.4, means[:, 0] < -0.4, means[:, 2] > 0.5
    assert colors[front, 0].mean() > 0.6 and colors[front, 2].mean() < 0.05  # red, sRGB-encoded (0.5 -> 0.74)
    assert float(colors[front, 0].max()) == pytest.approx(0.7354, abs=0.01)
    assert colors[back, 2].mean() > 0.8 and colors[back, 0].mean() < 0.05  # blue at -X
    assert colors[top, 1].mean() > 0.6  # green still on top: +Z up
    assert scene.num_gaussians == 3000


# ------------------------------------------------------------------------------------------------ the starts


def test_ball_start_is_the_random_ball_of_the_run_seed():
    init = BallInit(num_points=50)
    built = init.build(context(seed=3))
    again = init.scene(torch.Generator().manual_seed(5))
    assert torch.equal(built.means, again.means) and built.num_gaussians == 50


def test_ply_start_reads_the_file_in_its_own_axes(tmp_path):
    scene = BallInit(num_points=20, sh_degree=1).scene(torch.Generator().manual_seed(0))
    write_ply(scene, tmp_path / "start.ply")
    built = PlyInit(path=tmp_path / "start.ply").build(context())
    assert torch.allclose(built.means, scene.means, atol=1e-6) and built.sh_degree == 1
    (tmp_path / "bad.ply").write_text("not a ply")
    with pytest.raises(UserError, match="--init.path"):
        PlyInit(path=tmp_path / "bad.ply").build(context())
    with pytest.raises(UserError, match="no such file"):
        PlyInit(path=tmp_path / "missing.ply").check_run(10_000)
    with pytest.raises(UserError, match="needs the file"):
        PlyInit().check_run(10_000)


def test_tiny_shap_e_start_puts_gaussians_on_its_own_decoded_mesh(tiny_shap_e):
    init = ShapEInit(model=str(tiny_shap_e), steps=2, grid_size=16, surface_points=400, grown_points=0)
    scene = init.build(context(seed=1))
    assert scene.num_gaussians == 400
    pipe = load_shap_e(str(tiny_shap_e), CPU, "fp32", lambda line: None)
    vertices, faces, linear = shap_e_mesh(pipe, PROMPT, 2, 15.0, 16, 1, CPU)
    assert faces.shape[0] > 0
    expected = init.from_mesh(vertices, faces, linear, orbit_radius=2.5, seed=1)
    assert torch.allclose(scene.means, expected.means) and torch.allclose(scene.params["sh0"], expected.params["sh0"])
    # every Gaussian lies on the decoded mesh, once mapped into esd-gs's world
    from esd_gs.initial.shap_e import mesh_to_world

    world = mesh_to_world(vertices, 2.5, init.extent)
    corners = world[faces]  # [F, 3, 3]: each sample is within a triangle's bounding box of some triangle
    low, high = corners.min(dim=1).values, corners.max(dim=1).values
    inside = ((scene.means.detach()[:, None] >= low - 1e-5) & (scene.means.detach()[:, None] <= high + 1e-5)).all(-1)
    assert bool(inside.any(dim=1).all())


def test_a_renderer_without_its_marching_cubes_table_is_one_line(tmp_path):
    folder = write_tiny_shap_e(tmp_path / "no-table", with_table=False)
    with pytest.raises(UserError, match="no marching-cubes table"):
        load_shap_e(str(folder), CPU, "fp32", lambda line: None)


def test_an_empty_mesh_is_one_line(tmp_path):
    folder = write_tiny_shap_e(tmp_path / "empty", lift=-5.0)  # the whole box outside: no surface
    init = ShapEInit(model=str(folder), steps=1, grid_size=8, surface_points=10, grown_points=0)
    with pytest.raises(UserError, match="made no surface"):
        init.build(context())


def test_init_is_named_in_yaml_and_its_short_forms(tmp_path):
    config = config_from_dict(yaml.safe_load("init: shap-e\nprompt: a car\n"))
    assert isinstance(config.init, ShapEInit) and config.init == ShapEInit()
    plain = config_to_dict(config)
    assert plain["init"]["name"] == "shap-e" and config_from_dict(plain) == config
    old = config_from_dict({"init": {"num_points": 10, "radius": 0.6, "opacity": 0.1, "color": 0.5, "sh_degree": 0}})
    assert old.init == BallInit(num_points=10)  # a config saved before init had names: the ball


# ------------------------------------------------------------------------------------------------ through the CLI


def test_generate_starts_from_shap_e_and_from_a_ply(tiny_shap_e, tmp_path):
    run = tmp_path / "shap-e-run"
    small = [
        "--preset",
        "synthetic",
        "--steps",
        "2",
        "--prior.num-images",
        "16",
        "psi:particle",
        "--output.turntable-views",
        "4",
    ]
    result = run_cli(
        "generate", PROMPT, *small, "--init", "shap-e", "--init.model", tiny_shap_e, "--init.steps", "2",
        "--init.grid-size", "16", "--init.surface-points", "300", "--init.grown-points", "300", "--out", run, env=ENV,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "theta: a coarse object from Shap-E" in result.stdout + result.stderr
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["init"]["name"] == "shap-e" and saved["init"]["grid_size"] == 16
    assert read_ply(run / "scene.ply").num_gaussians == 600  # the synthetic preset does not densify

    start = tmp_path / "start.ply"
    write_ply(BallInit(num_points=37).scene(torch.Generator().manual_seed(0)), start)
    result = run_cli("generate", PROMPT, *small, "--init", "ply", start, "--out", tmp_path / "ply-run", env=ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    assert read_ply(tmp_path / "ply-run" / "scene.ply").num_gaussians == 37


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--init", "cube"], "--init cube: use --init ball (the default), --init ply PATH or --init shap-e"),
        (["--init", "ply"], "--init ply needs the file to start from: --init ply PATH"),
        (["--init", "ply", "missing.ply"], "--init.path missing.ply: no such file"),
        (["--init.path", "x.ply"], "--init.path belongs to init:ply: name it first"),
        (["--init", "shap-e", "--init.grid-size", "4"], "--init.grid-size must be in 8..512, got 4"),
    ],
)
def test_bad_init_is_one_line(args, expected, tmp_path):
    result = run_cli("generate", PROMPT, "--preset", "synthetic", *args, "--out", tmp_path / "r", env=ENV)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert not (tmp_path / "r").exists()


def test_doctor_checks_the_shap_e_source_in_one_line(tiny_shap_e, tmp_path):
    env = dict(ENV, HF_HOME=str(tmp_path / "hf-home"))
    lines = {}
    for name, model in (("local", tiny_shap_e), ("missing", tmp_path / "nope"), ("offline", None)):
        if model is None:  # doctor's own flags: the default source (openai/shap-e)
            where = ["--init", "shap-e"]
        else:  # a generate config file naming the start
            (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({"init": {"name": "shap-e", "model": str(model)}}))
            where = ["--config", tmp_path / f"{name}.yaml"]
        result = run_cli("doctor", "--preset", "synthetic", *where, "--out", tmp_path, env=env)
        lines[name] = [line for line in result.stdout.splitlines() if "init:shap-e" in line]
        assert len(lines[name]) == 1, result.stdout
        assert result.returncode == (0 if name == "local" else 1), result.stdout
    assert lines["local"][0].startswith("  ok  init:shap-e: ") and "local folder" in lines["local"][0]
    assert "fail  init:shap-e" in lines["missing"][0] and "no such folder" in lines["missing"][0]
    assert "openai/shap-e (offline and not in the Hugging Face cache)" in lines["offline"][0]
    assert "--init.model PATH" in lines["offline"][0]


def test_a_resumed_run_neither_checks_nor_remakes_its_start(tmp_path, monkeypatch):
    """A run started from a .ply resumes after the file is gone: the start is neither checked nor made again (the
    checkpoint holds the scene); a new run with the file gone is one line."""
    from dataclasses import replace

    from small_runs import small_synthetic_config

    from esd_gs.pipeline.build import build_trainer

    start = tmp_path / "start.ply"
    write_ply(BallInit(num_points=30).scene(torch.Generator().manual_seed(0)), start)
    config = replace(small_synthetic_config(2, psi={"name": "particle"}), init=PlyInit(path=start))
    config.validate()
    trainer = build_trainer(config, tmp_path / "run", CPU)
    assert trainer.scene.num_gaussians == 30
    trainer.train_step()
    trainer.save()
    saved = trainer.scene.raw()
    start.unlink()
    with pytest.raises(UserError, match="no such file"):
        config.validate()
    config.validate(resuming=True)
    monkeypatch.setattr(PlyInit, "build", lambda *_: pytest.fail("the start was made again"))
    resumed = build_trainer(config, tmp_path / "run", CPU, resuming=True)
    resumed.restore()
    assert resumed.step == 1 and all(torch.equal(resumed.scene.raw()[k], v) for k, v in saved.items())


def test_batch_jobs_give_the_start_absolute_paths(tiny_shap_e, tmp_path, monkeypatch):
    from esd_gs.batch.jobs import _absolute_paths
    from esd_gs.configs.generate import GenerateConfig

    monkeypatch.chdir(tiny_shap_e.parent)
    ply = _absolute_paths(GenerateConfig(init=PlyInit(path=Path("start.ply"))))
    assert ply.init.path == tiny_shap_e.parent / "start.ply"
    shap_e = _absolute_paths(GenerateConfig(init=ShapEInit(model=tiny_shap_e.name)))
    assert (
        shap_e.init.model == str(tiny_shap_e)
        and _absolute_paths(GenerateConfig(init=ShapEInit())).init.model == "shap-e"
    )


def test_shap_e_is_moved_to_the_cpu_and_dropped_once_the_start_is_made(tiny_shap_e, monkeypatch):
    import gc
    import weakref

    from esd_gs.initial import shap_e_model

    loaded, moves = [], []
    real_load = shap_e_model.load_shap_e

    def tracked_load(*args, **kwargs):
        pipe = real_load(*args, **kwargs)
        real_to = pipe.to
        pipe.to = lambda device: moves.append(str(device)) or real_to(device)  # a cycle on pipe only: gc frees it
        loaded.append(weakref.ref(pipe))
        return pipe

    monkeypatch.setattr(shap_e_model, "load_shap_e", tracked_load)
    ShapEInit(model=str(tiny_shap_e), steps=1, grid_size=16, surface_points=50, grown_points=0).build(context())
    gc.collect()
    assert moves == ["cpu"] and len(loaded) == 1 and loaded[0]() is None
