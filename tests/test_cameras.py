"""Camera conventions: +Z up world, OpenCV camera axes, azimuth 0 on +X, pinhole intrinsics."""

import math

import torch

from esd_gs.cameras import OrbitSampler, orbit_cameras, turntable


def project(cams, width, height, point):
    """Pixel coordinates of a world point in every camera (plain pinhole maths, independent of the renderer)."""
    w2c = cams.viewmats()
    p = w2c[:, :3, :3] @ point + w2c[:, :3, 3]
    K = cams.intrinsics(width, height)
    uv = (K @ p[..., None]).squeeze(-1)
    return uv[:, :2] / uv[:, 2:], p[:, 2]


def test_azimuth_zero_sits_on_plus_x_and_looks_at_origin():
    cams = orbit_cameras(
        torch.tensor([0.0, 90.0]), torch.tensor([0.0, 0.0]), torch.tensor([2.5, 2.5]), torch.tensor([50.0, 50.0])
    )
    assert torch.allclose(cams.positions[0], torch.tensor([2.5, 0.0, 0.0]), atol=1e-6)
    assert torch.allclose(cams.positions[1], torch.tensor([0.0, 2.5, 0.0]), atol=1e-6)
    uv, depth = project(cams, 64, 48, torch.zeros(3))
    assert torch.allclose(uv, torch.tensor([[32.0, 24.0], [32.0, 24.0]]), atol=1e-4)
    assert torch.allclose(depth, torch.tensor([2.5, 2.5]), atol=1e-5)


def test_world_up_is_image_up_and_rotation_is_orthonormal():
    cams = OrbitSampler().sample(16, generator=torch.Generator().manual_seed(3))
    rot = cams.c2w[:, :3, :3]
    assert torch.allclose(rot @ rot.transpose(1, 2), torch.eye(3).expand(16, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(16), atol=1e-5)
    # A point above the origin (+Z) appears above the image centre (smaller row index).
    uv, _ = project(cams, 64, 64, torch.tensor([0.0, 0.0, 0.3]))
    assert (uv[:, 1] < 32.0).all()


def test_front_camera_sees_plus_y_on_its_right():
    # Camera on +X looking at -X with +Z up: +Y is to its right (larger column index).
    cams = orbit_cameras(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([2.5]), torch.tensor([50.0]))
    uv, _ = project(cams, 64, 64, torch.tensor([0.0, 0.3, 0.0]))
    assert uv[0, 0] > 32.0


def test_viewmats_invert_c2w_and_focal_matches_fov():
    cams = OrbitSampler().sample(8, generator=torch.Generator().manual_seed(0))
    eye = cams.viewmats() @ cams.c2w
    assert torch.allclose(eye, torch.eye(4).expand(8, 4, 4), atol=1e-5)
    f = cams.focal(64)
    assert torch.allclose(f, 32.0 / torch.tan(torch.deg2rad(cams.fovy) / 2))
    emb = cams.embedding()
    assert emb.shape == (8, 16)
    assert torch.equal(emb[0], cams.c2w[0].reshape(16))


def test_sampler_is_seeded_and_respects_ranges():
    sampler = OrbitSampler(radius=(2.0, 3.0), elevation=(-10.0, 60.0), azimuth=(-180.0, 180.0), fovy=(40.0, 70.0))
    a = sampler.sample(256, generator=torch.Generator().manual_seed(7))
    b = sampler.sample(256, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.c2w, b.c2w)
    assert a.radius.min() >= 2.0 and a.radius.max() <= 3.0
    assert a.elevation.min() >= -10.0 and a.elevation.max() <= 60.0
    assert a.fovy.min() >= 40.0 and a.fovy.max() <= 70.0
    assert torch.allclose(a.positions.norm(dim=-1), a.radius, atol=1e-5)
    el = torch.rad2deg(torch.asin(a.positions[:, 2] / a.radius))
    assert torch.allclose(el, a.elevation, atol=1e-3)


def test_turntable_is_evenly_spaced():
    cams = turntable(120, elevation=15.0)
    assert len(cams) == 120
    steps = torch.remainder(torch.diff(cams.azimuth), 360.0)
    assert torch.allclose(steps, torch.full_like(steps, 3.0), atol=1e-4)
    heights = cams.positions[:, 2]
    assert torch.allclose(heights, torch.full_like(heights, 2.5 * math.sin(math.radians(15.0))), atol=1e-5)


def test_straight_overhead_camera_is_valid():
    cams = orbit_cameras(torch.tensor([0.0]), torch.tensor([90.0]), torch.tensor([2.0]), torch.tensor([50.0]))
    assert torch.isfinite(cams.c2w).all()
    uv, depth = project(cams, 32, 32, torch.zeros(3))
    assert torch.allclose(uv, torch.tensor([[16.0, 16.0]]), atol=1e-4)
