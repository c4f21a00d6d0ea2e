"""The renderer g(theta, c) on cases with known answers, and the sparse CPU renderer against the dense reference."""

import math

import pytest
import torch

from esd_gs.cameras import OrbitSampler, orbit_cameras
from esd_gs.render import render
from esd_gs.render.agreement import GSPLAT_AGREEMENT
from esd_gs.scene import GaussianScene
from esd_gs.testing.scenes import random_scene


def front_camera(fovy=50.0, radius=2.5):
    return orbit_cameras(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([radius]), torch.tensor([fovy]))


def one_gaussian(position, scale, opacity, color, dtype=torch.float32):
    return GaussianScene.from_activated(
        means=torch.tensor([position], dtype=dtype),
        scales=torch.full((1, 3), scale, dtype=dtype),
        quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=dtype),
        opacities=torch.tensor([opacity], dtype=dtype),
        colors=torch.tensor([color], dtype=dtype),
    )


@pytest.mark.parametrize("backend", ["torch", "dense"])
def test_single_isotropic_gaussian_footprint(backend):
    """A Gaussian of std s at the origin, camera at distance d with focal f: screen std^2 = (f s / d)^2 + 0.3."""
    size, fovy, dist, s, o = 48, 50.0, 2.5, 0.08, 0.8
    scene = one_gaussian([0.0, 0.0, 0.0], s, o, [1.0, 0.0, 0.0], dtype=torch.float64)
    out = render(scene, front_camera(fovy, dist), size, size, background=(0.0, 0.0, 1.0), backend=backend)
    f = 0.5 * size / math.tan(math.radians(fovy) / 2)
    var = (f * s / dist) ** 2 + 0.3
    centre = torch.arange(size, dtype=torch.float64) + 0.5 - size / 2
    r2 = centre[None, :] ** 2 + centre[:, None] ** 2
    alpha = o * torch.exp(-0.5 * r2 / var)
    alpha = torch.where(alpha >= 1 / 255, alpha, torch.zeros_like(alpha))
    assert torch.allclose(out.alpha[0, 0], alpha, atol=1e-6)
    assert torch.allclose(out.rgb[0, 0], alpha, atol=1e-6)  # red = alpha * 1
    assert torch.allclose(out.rgb[0, 1], torch.zeros_like(alpha), atol=1e-6)
    assert torch.allclose(out.rgb[0, 2], 1.0 - alpha, atol=1e-6)  # blue background through 1 - alpha
    covered = alpha > 0
    assert torch.allclose(out.depth[0, 0][covered], torch.full_like(alpha[covered], dist), atol=1e-6)


@pytest.mark.parametrize("backend", ["torch", "dense"])
def test_front_gaussian_occludes_back_one(backend):
    """Red in front of blue (closer to the camera on +X) wins the centre pixel, whatever the storage order."""
    for order in ([0, 1], [1, 0]):
        means = torch.tensor([[0.5, 0.0, 0.0], [-0.5, 0.0, 0.0]])[order]
        colors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])[order]
        scene = GaussianScene.from_activated(
            means, torch.full((2, 3), 0.2), torch.tensor([[1.0, 0, 0, 0]] * 2), torch.tensor([0.99, 0.99]), colors
        )
        out = render(scene, front_camera(), 32, 32, background=0.0, backend=backend)
        pixel = out.rgb[0, :, 16, 16]
        assert pixel[0] > 0.95 and pixel[2] < 0.05
        # Seen from the back (azimuth 180) blue is in front.
        back = orbit_cameras(torch.tensor([180.0]), torch.tensor([0.0]), torch.tensor([2.5]), torch.tensor([50.0]))
        pixel = render(scene, back, 32, 32, background=0.0, backend=backend).rgb[0, :, 16, 16]
        assert pixel[2] > 0.95 and pixel[0] < 0.05
        depth = out.depth[0, 0, 16, 16]
        assert abs(depth.item() - 2.0) < 0.05  # the front Gaussian is 2.0 from the camera


def test_transmittance_stop_matches_gsplat_rule():
    """Opaque layers: a pixel stops before T would fall to 1e-4, so a 3rd layer behind two 0.999 layers is unseen."""
    means = torch.tensor([[0.2, 0.0, 0.0], [0.0, 0.0, 0.0], [-0.2, 0.0, 0.0]])
    colors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    scene = GaussianScene.from_activated(
        means,
        torch.full((3, 3), 0.3),
        torch.tensor([[1.0, 0, 0, 0]] * 3),
        torch.tensor([0.9999, 0.9999, 0.9999]),
        colors,
    )
    out = render(scene, front_camera(), 17, 17, background=0.0, backend="torch")  # pixel 8's centre is on-axis
    # alpha clamps to 0.999 -> T after layer 1 = 1e-3 (> 1e-4: counted), after layer 2 = 1e-6 (stop: not counted).
    pixel = out.rgb[0, :, 8, 8]
    assert torch.allclose(pixel, torch.tensor([0.999, 0.0, 0.0]), atol=1e-4)
    assert abs(out.alpha[0, 0, 8, 8].item() - 0.999) < 1e-4


def test_empty_view_shows_background():
    scene = one_gaussian([0.0, 0.0, 0.0], 0.05, 0.9, [1.0, 1.0, 1.0])
    away = orbit_cameras(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([2.5]), torch.tensor([50.0]))
    away.c2w[:, :3, 3] += torch.tensor([0.0, 5.0, 0.0])  # shift sideways: the Gaussian is out of view
    out = render(scene, away, 16, 16, background=(0.2, 0.4, 0.6), backend="torch")
    assert torch.allclose(out.rgb[0], torch.tensor([0.2, 0.4, 0.6])[:, None, None].expand(3, 16, 16))
    assert torch.count_nonzero(out.alpha) == 0
    assert int((out.info["radii"] > 0).sum()) == 0


@pytest.mark.parametrize("sh_degree", [0, 3])
def test_sparse_matches_dense_images_and_gradients(sh_degree):
    scene = random_scene(300, sh_degree, seed=1)
    cams = OrbitSampler().sample(3, generator=torch.Generator().manual_seed(2))
    weights = torch.randn(3, 5, 40, 36, generator=torch.Generator().manual_seed(3))
    grads, images = [], []
    for backend in ("torch", "dense"):
        scene.zero_grad()
        out = render(
            scene,
            cams,
            36,
            40,
            background=torch.rand(3, 3, generator=torch.Generator().manual_seed(4)),
            backend=backend,
        )
        stacked = torch.cat([out.rgb, out.alpha, out.depth], dim=1)
        (stacked * weights).sum().backward()
        images.append(stacked.detach())
        grads.append(
            {k: v.grad.clone() for k, v in scene.params.items()} | {"means2d": out.info["means2d"].grad.clone()}
        )
    assert torch.allclose(images[0], images[1], atol=2e-5)
    for key in grads[0]:
        assert torch.allclose(grads[0][key], grads[1][key], atol=2e-4, rtol=1e-3), key


def test_gradients_match_finite_differences_float64():
    scene = random_scene(12, 1, seed=5, dtype=torch.float64)
    with torch.no_grad():
        scene.params["scales"].add_(1.0)  # a few large Gaussians over a small image
    cams = OrbitSampler(fovy=(45.0, 45.0)).sample(2, generator=torch.Generator().manual_seed(6))
    cams = cams.to("cpu", torch.float64)
    weights = torch.randn(2, 5, 10, 12, generator=torch.Generator().manual_seed(7), dtype=torch.float64)

    def loss():
        out = render(scene, cams, 12, 10, background=(0.3, 0.5, 0.7), backend="torch")
        return (torch.cat([out.rgb, out.alpha, out.depth * 0.1], dim=1) * weights).sum()

    loss().backward()
    for key, param in scene.params.items():
        assert param.grad.abs().max() > 1e-3, key  # every parameter kind really receives a gradient
    eps = 1e-6
    checked = 0
    for key, param in scene.params.items():
        flat = param.data.view(-1)
        for i in range(flat.numel()):
            with torch.no_grad():
                old = flat[i].item()
                flat[i] = old + eps
                up = loss().item()
                flat[i] = old - eps
                down = loss().item()
                flat[i] = old
            numeric = (up - down) / (2 * eps)
            analytic = param.grad.view(-1)[i].item()
            assert abs(numeric - analytic) <= 1e-5 + 1e-4 * abs(numeric), (key, i, numeric, analytic)
            checked += 1
    assert checked == 12 * (3 + 3 + 4 + 1 + 3 + 9)


def test_densification_info_has_gsplat_keys():
    scene = random_scene(200, 0, seed=8)
    cams = OrbitSampler().sample(2, generator=torch.Generator().manual_seed(9))
    out = render(scene, cams, 32, 32, backend="torch")
    out.rgb.sum().backward()
    info = out.info
    assert info["means2d"].shape == (2, 200, 2) and info["means2d"].grad is not None
    assert info["radii"].shape == (2, 200, 2) and info["radii"].dtype == torch.int32
    assert info["width"] == 32 and info["height"] == 32 and info["n_cameras"] == 2
    assert info["gaussian_ids"] is None
    visible = (info["radii"] > 0).all(-1)
    assert visible.any() and torch.count_nonzero(info["means2d"].grad[~visible]) == 0


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (gsplat rasterizes only on GPU)")
def test_cpu_renderer_matches_gsplat():
    scene = random_scene(2000, 3, seed=10)
    cams = OrbitSampler().sample(2, generator=torch.Generator().manual_seed(11))
    weights = torch.randn(2, 5, 64, 64, generator=torch.Generator().manual_seed(12))
    results = []
    for device, backend in (("cpu", "torch"), ("cuda", "gsplat")):
        probe = GaussianScene(scene.raw()).to(device)
        out = render(probe, cams, 64, 64, background=(0.1, 0.2, 0.3), backend=backend)
        stacked = torch.cat([out.rgb, out.alpha, out.depth], dim=1)
        (stacked * weights.to(device)).sum().backward()
        results.append((stacked.detach().cpu(), {k: v.grad.cpu() for k, v in probe.params.items()}))
    assert torch.allclose(results[0][0], results[1][0], **GSPLAT_AGREEMENT["image"])
    for key in results[0][1]:
        assert torch.allclose(results[0][1][key], results[1][1][key], **GSPLAT_AGREEMENT["grad"]), key


def test_early_termination_gives_the_same_image():
    """Compositing in depth slices, skipping pixels that stopped, gives the same images (and the dense reference's)."""
    from esd_gs.example import make_head_scene
    from esd_gs.render import project_gaussians, rasterize_sparse

    scene = make_head_scene(800)  # opaque surfaces: most pixels stop early
    cams = OrbitSampler().sample(2, generator=torch.Generator().manual_seed(13))
    with torch.no_grad():
        dense = render(scene, cams, 48, 40, background=(0.2, 0.3, 0.4), backend="dense")
        sparse = render(scene, cams, 48, 40, background=(0.2, 0.3, 0.4), backend="torch", depth_chunks=8)
        assert torch.allclose(sparse.rgb, dense.rgb, atol=2e-5)
        assert torch.allclose(sparse.alpha, dense.alpha, atol=2e-5)
        assert torch.allclose(sparse.depth, dense.depth, atol=1e-4)
        viewmats, Ks = cams.viewmats(), cams.intrinsics(48, 40)
        proj = project_gaussians(scene.means, scene.quats, scene.scales, scene.opacities, viewmats, Ks, 48, 40)
        colors = torch.rand(2, scene.num_gaussians, 3, generator=torch.Generator().manual_seed(1))
        one = rasterize_sparse(proj, colors, scene.opacities, 48, 40, depth_chunks=1)
        many = rasterize_sparse(proj, colors, scene.opacities, 48, 40, depth_chunks=7)
    for a, b in zip(one, many):
        assert torch.allclose(a, b, atol=1e-5)


def test_depth_slices_keep_gradients():
    scene = random_scene(300, 1, seed=21)
    cams = OrbitSampler().sample(2, generator=torch.Generator().manual_seed(22))
    weights = torch.randn(2, 5, 32, 32, generator=torch.Generator().manual_seed(23))
    grads = []
    for chunks in (1, 5):
        scene.zero_grad()
        out = render(scene, cams, 32, 32, background=0.5, depth_chunks=chunks)
        (torch.cat([out.rgb, out.alpha, out.depth], 1) * weights).sum().backward()
        grads.append({k: v.grad.clone() for k, v in scene.params.items()})
    for key in grads[0]:
        assert torch.allclose(grads[0][key], grads[1][key], atol=2e-4, rtol=1e-3), key


def test_a_render_too_large_for_memory_is_refused_before_it_allocates(monkeypatch):
    from esd_gs.errors import UserError
    from esd_gs.render import cpu

    scene = random_scene(300, 0, seed=3)
    cams = OrbitSampler().sample(2, generator=torch.Generator().manual_seed(4))
    monkeypatch.setattr(cpu, "BYTES_PER_PAIR", 2**30)  # every pair "needs" 1 GiB
    monkeypatch.setattr(cpu, "available_memory", lambda device: 8 * 2**30)
    with pytest.raises(
        UserError, match=r"this render needs about \d+ GiB for [\d,]+ \(pixel, Gaussian\) pairs but only 8 GiB"
    ):
        render(scene, cams, 32, 32, backend="torch")
    monkeypatch.setattr(cpu, "available_memory", lambda device: None)  # unknown: render anyway
    assert render(scene, cams, 32, 32, backend="torch").rgb.shape == (2, 3, 32, 32)
