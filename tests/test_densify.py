"""Densification around gsplat's DefaultStrategy: growth from our CPU renderer's info, opacity reset, cap, cleanup."""

import math

import torch

from esd_gs.cameras import OrbitSampler
from esd_gs.render import render
from esd_gs.scene import BallInit, GaussianScene
from esd_gs.training.densify import Densifier, DensifyConfig


def setup(n=200, **overrides):
    scene = GaussianScene.random_ball(BallInit(num_points=n, opacity=0.5), generator=torch.Generator().manual_seed(0))
    optimizers = {k: torch.optim.Adam([p], lr=1e-3) for k, p in scene.params.items()}
    config = DensifyConfig(**({"start": 0.0, "stop": 1.0, "every": 0.1, "grad_threshold": 1e-12} | overrides))
    return scene, optimizers, Densifier(config, total_steps=10, scene_scale=2.75)


def step(scene, optimizers, densifier, index):
    cams = OrbitSampler().sample(2, generator=torch.Generator().manual_seed(index))
    out = render(scene, cams, 32, 32)
    densifier.pre_backward(scene.params, optimizers, index, out.info)
    out.rgb.sum().backward()
    for opt in optimizers.values():
        opt.step()
    densifier.post_backward(scene.params, optimizers, index, out.info)
    for opt in optimizers.values():
        opt.zero_grad(set_to_none=True)


def test_gsplat_strategy_grows_from_cpu_render_info_and_keeps_optimizers_in_sync():
    scene, optimizers, densifier = setup(opacity_reset_every=1.0)
    n0 = scene.num_gaussians
    for i in range(3):  # refine_every = 1 step; refinement starts after step 0
        step(scene, optimizers, densifier, i)
    assert scene.num_gaussians > n0  # every visible Gaussian is above the (tiny) threshold: clone / split
    for key, opt in optimizers.items():
        assert opt.param_groups[0]["params"][0] is scene.params[key]
        assert opt.state[scene.params[key]]["exp_avg"].shape == scene.params[key].shape


def test_opacity_reset_happens_here_at_its_fraction():
    scene, optimizers, densifier = setup(grad_threshold=1e9, opacity_reset_every=0.3, prune_opacity=0.005)
    with torch.no_grad():
        scene.params["opacities"].fill_(3.0)  # sigmoid = 0.95
    for i in range(4):  # reset_every = 3 steps -> the reset happens at step 3
        step(scene, optimizers, densifier, i)
        if i < 3:
            assert scene.opacities.min() > 0.5
    assert torch.allclose(scene.opacities.max(), torch.tensor(0.01), atol=1e-4)


def test_cap_removes_the_least_opaque_and_degenerate_ones_go():
    scene, optimizers, densifier = setup(n=50, enabled=True, max_gaussians=40, max_scale=0.5)
    with torch.no_grad():
        scene.params["opacities"].copy_(torch.linspace(-3, 3, 50))
        scene.params["means"][0, 0] = float("nan")
        scene.params["scales"][49, 2] = math.log(0.9)  # above max_scale
    assert densifier.remove_degenerate(scene.params, optimizers) == 2
    assert scene.num_gaussians == 48 and torch.isfinite(scene.params["means"]).all()
    kept_before = scene.params["opacities"].detach().clone()
    densifier.enforce_cap(scene.params, optimizers)
    assert scene.num_gaussians == 40
    assert torch.equal(scene.params["opacities"].detach(), kept_before[8:])  # the 8 least opaque went


def test_growth_threshold_defaults_by_method_and_an_explicit_one_is_kept(tmp_path):
    """SDS's CFG-100 gradients are ~10x VSD/ESD's (research/janus.md, Appendix B): the unset threshold follows
    the method."""
    from esd_gs.cli.main import parse_args
    from esd_gs.pipeline.build import build_trainer
    from esd_gs.training.densify import GRAD_THRESHOLD

    assert GRAD_THRESHOLD == {"vsd": 0.1, "esd": 0.1, "sds": 1.0}
    common = ["--preset", "synthetic", "--prior.num-images", "4", "--densify.enabled"]
    for method, expected in (("sds", 1.0), ("esd", 0.1), ("vsd", 0.1)):
        config = parse_args(["generate", "x", "--method", method, *common])
        assert config.densify.grad_threshold is None
        trainer = build_trainer(config, tmp_path, torch.device("cpu"))
        assert trainer.densifier.strategy.grow_grad2d == expected, method
    config = parse_args(["generate", "x", "--method", "sds", "--densify.grad-threshold", "0.0002", *common])
    assert build_trainer(config, tmp_path, torch.device("cpu")).densifier.strategy.grow_grad2d == 0.0002
