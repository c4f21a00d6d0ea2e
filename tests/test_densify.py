"""Densification around gsplat's DefaultStrategy: growth relative to the run's own gradients (the same decisions
whatever their scale), from our CPU renderer's info, opacity reset, cap, cleanup, and old configs' threshold."""

import math
import os
import subprocess
import sys
from pathlib import Path

import gsplat.strategy.default
import pytest
import torch
import yaml

from esd_gs.cameras import OrbitSampler
from esd_gs.errors import ConfigError, UserError
from esd_gs.initial import BallInit
from esd_gs.render import render
from esd_gs.training.densify import Densifier, DensifyConfig, RelativeGrowthStrategy, growth_threshold

ROOT = Path(__file__).resolve().parents[1]


def setup(n=200, **overrides):
    scene = BallInit(num_points=n, opacity=0.5).scene(generator=torch.Generator().manual_seed(0))
    optimizers = {k: torch.optim.Adam([p], lr=1e-3) for k, p in scene.params.items()}
    config = DensifyConfig(**({"start": 0.0, "stop": 1.0, "every": 0.1, "grow_ratio": 1e-9} | overrides))
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
    assert scene.num_gaussians > n0  # every Gaussian with a gradient is above the (tiny) ratio: clone / split
    for key, opt in optimizers.items():
        assert opt.param_groups[0]["params"][0] is scene.params[key]
        assert opt.state[scene.params[key]]["exp_avg"].shape == scene.params[key].shape


def test_opacity_reset_happens_here_at_its_fraction():
    scene, optimizers, densifier = setup(grow_ratio=math.inf, opacity_reset_every=0.3, prune_opacity=0.005)
    with torch.no_grad():
        scene.params["opacities"].fill_(3.0)  # sigmoid = 0.95
    for i in range(4):  # reset_every = 3 steps -> the reset happens at step 3
        step(scene, optimizers, densifier, i)
        if i < 3:
            assert scene.opacities.min() > 0.5
    assert torch.allclose(scene.opacities.max(), torch.tensor(0.01), atol=1e-4)
    assert densifier.last_refinement.cloned == densifier.last_refinement.split == 0  # an infinite ratio grows none


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
    assert scene.num_gaussians == 40 and densifier.capped == 8
    assert torch.equal(scene.params["opacities"].detach(), kept_before[8:])  # the 8 least opaque went


# ---------------------------------------------------------------------- invariance to the gradients' scale
def run_densifier_with_scaled_gradients(densifier, factor, steps=9):
    """Drive ``densifier`` (refining every 2nd step) on a fixed scene and views with a photometric loss, every
    means2d gradient multiplied by ``factor`` before the densifier sees it (the parameters' own gradients, hence
    the optimiser steps, are untouched). Returns each refinement's decisions, as gsplat's ops received them (the
    indices cloned, split and removed), and the final parameters."""
    torch.manual_seed(0)  # gsplat's split draws the new centres from the global generator
    scene = BallInit(num_points=300, opacity=0.3).scene(generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        scene.params["scales"][:100] = math.log(0.01)  # small: cloned when they grow (the rest are split)
        scene.params["opacities"][-20:] = -6.0  # opacity 0.0025: pruned at the first refinement
    optimizers = {k: torch.optim.Adam([p], lr=1e-3) for k, p in scene.params.items()}
    target = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    decisions: list[tuple[str, list[int]]] = []
    originals = {name: getattr(gsplat.strategy.default, name) for name in ("duplicate", "split", "remove")}

    def spy(name):
        def recorded(*args, mask, **kwargs):
            decisions.append((name, torch.where(mask)[0].tolist()))
            return originals[name](*args, mask=mask, **kwargs)

        return recorded

    with pytest.MonkeyPatch.context() as patch:
        for name in originals:
            patch.setattr(gsplat.strategy.default, name, spy(name))
        for index in range(steps):
            cams = OrbitSampler().sample(2, generator=torch.Generator().manual_seed(index))
            out = render(scene, cams, 32, 32)
            densifier.pre_backward(scene.params, optimizers, index, out.info)
            ((out.rgb - target) ** 2).sum().backward()
            out.info["means2d"].grad.mul_(factor)
            for opt in optimizers.values():
                opt.step()
            densifier.post_backward(scene.params, optimizers, index, out.info)
            for opt in optimizers.values():
                opt.zero_grad(set_to_none=True)
    return decisions, {key: value.detach() for key, value in scene.params.items()}


def test_densification_decisions_do_not_depend_on_the_scale_of_the_2d_gradients(tmp_path):
    """The issue: a fixed growth threshold was measured on a random-weight model; a trained prior's gradients are
    some unknown factor off. Multiplying every means2d gradient by 0.1 or 10 must clone, split and prune the same
    Gaussians at every refinement (4 here), through the densifier a generate run builds."""
    from esd_gs.cli.main import parse_args
    from esd_gs.pipeline.build import build_trainer

    results = {}
    for factor in (0.1, 1.0, 10.0):
        config = parse_args(
            [
                "generate",
                "a head",
                "--preset",
                "synthetic",
                "--prior.num-images",
                "4",
                "--steps",
                "20",
                "--densify.enabled",
                "--densify.start",
                "0",
                "--densify.stop",
                "1",
                "--densify.every",
                "0.1",  # every 2 steps: refinements at steps 2, 4, 6 and 8
                "--densify.opacity-reset-every",
                "1",
            ]
        )
        densifier = build_trainer(config, tmp_path, torch.device("cpu")).densifier
        results[factor] = run_densifier_with_scaled_gradients(densifier, factor)
    decisions, params = results[1.0]
    grown = {name: sum(len(ids) for kind, ids in decisions if kind == name) for name in ("duplicate", "split")}
    removed = sum(len(ids) for kind, ids in decisions if kind == "remove")
    assert grown["duplicate"] > 0 and grown["split"] > 0 and removed >= 20  # not a vacuous comparison
    for factor in (0.1, 10.0):
        assert results[factor][0] == decisions, f"gradients x{factor} changed which Gaussians were cloned/split/pruned"
        for key, value in params.items():
            assert torch.equal(results[factor][1][key], value), (factor, key)


def test_the_threshold_is_the_ratio_times_the_median_of_the_seen_gaussians():
    # mean gradients 0 (never seen), 0 (seen, zero gradient: hidden), 1, 2, 3, 4, 10
    state = {
        "grad2d": torch.tensor([0.0, 0.0, 2.0, 2.0, 6.0, 4.0, 10.0]),
        "count": torch.tensor([0.0, 3.0, 2.0, 1.0, 2.0, 1.0, 1.0]),
    }
    assert growth_threshold(state, 2.0) == (5, 3.0, 6.0)  # the median of 1, 2, 3, 4, 10; the zeros do not count
    assert growth_threshold({"grad2d": torch.zeros(3), "count": torch.ones(3)}, 2.0) == (0, math.inf, math.inf)
    scaled = {"grad2d": state["grad2d"] * 1e-3, "count": state["count"]}
    assert growth_threshold(scaled, 2.0)[2] == pytest.approx(6e-3)


def test_each_refinement_is_recorded_with_its_threshold_and_counts():
    scene, optimizers, densifier = setup(grow_ratio=2.0, opacity_reset_every=1.0)
    assert isinstance(densifier.strategy, RelativeGrowthStrategy) and densifier.last_refinement is None
    with torch.no_grad():
        scene.params["opacities"][:5] = -7.0
    n0 = scene.num_gaussians
    for i in range(2):  # refinement at step 1 (gsplat's _grow_gs / _prune_gs hooks ran)
        step(scene, optimizers, densifier, i)
    last = densifier.last_refinement
    assert last is not None and last.step == 1 and 0 < last.seen <= n0
    assert last.threshold == pytest.approx(2.0 * last.median_grad) and last.median_grad > 0
    assert last.cloned + last.split < last.seen / 2  # above twice the median: fewer than half
    assert last.pruned == 5 and last.gaussians == n0 + last.cloned + last.split - 5 == scene.num_gaussians


def test_the_growth_rule_is_the_same_for_every_method(tmp_path):
    """SDS's CFG-100 gradients are ~10x VSD/ESD's (research/janus.md, Appendix B); a relative threshold needs no
    per-method value."""
    from esd_gs.cli.main import parse_args
    from esd_gs.pipeline.build import build_trainer

    common = ["--preset", "synthetic", "--prior.num-images", "4", "--densify.enabled"]
    for method in ("sds", "esd", "vsd"):
        config = parse_args(["generate", "a head", "--method", method, *common])
        assert build_trainer(config, tmp_path, torch.device("cpu")).densifier.strategy.grow_ratio == 2.0, method
    config = parse_args(["generate", "a head", "--densify.grow-ratio", "3", *common])
    assert build_trainer(config, tmp_path, torch.device("cpu")).densifier.strategy.grow_ratio == 3.0
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(ConfigError, match="--densify.grow-ratio must be > 0"):
            DensifyConfig(grow_ratio=bad)


def test_a_run_resumed_between_refinements_grows_the_same_gaussians(tmp_path):
    """The threshold is recomputed from gsplat's statistics, which checkpoints keep: a run saved between two
    refinements (statistics half accumulated) and resumed ends with the scene of the uninterrupted run."""
    from esd_gs.cli.main import parse_args
    from esd_gs.pipeline.build import build_trainer

    flags = ["--preset", "synthetic", "--prior.num-images", "4", "--steps", "8", "--init.num-points", "200"]
    flags += ["--densify.enabled", "--densify.start", "0", "--densify.stop", "1", "--densify.every", "0.25"]
    config = parse_args(["generate", "a head", *flags])  # refinements at steps 2, 4 and 6
    cpu = torch.device("cpu")
    whole = build_trainer(config, tmp_path / "whole", cpu)
    while whole.step < 8:
        whole.train_step()
    first = build_trainer(config, tmp_path / "parts", cpu)
    while first.step < 4:  # steps 0 to 3: refined at step 2, step 3 accumulated
        first.train_step()
    first.save()
    resumed = build_trainer(config, tmp_path / "parts", cpu)
    resumed.restore()
    assert resumed.densifier.state["count"].sum() > 0  # mid-way between two refinements
    while resumed.step < 8:
        resumed.train_step()
    assert resumed.scene.num_gaussians == whole.scene.num_gaussians > 200
    for key, value in whole.scene.params.items():
        assert torch.equal(resumed.scene.params[key], value), key


# ---------------------------------------------------------------------- old configs' absolute threshold
def saved_config(tmp_path, **densify):
    """A saved config.yaml of the current defaults with ``densify`` changed (as an older esd-gs wrote it)."""
    from esd_gs.configs.generate import GenerateConfig
    from esd_gs.configs.yaml_io import config_to_dict

    plain = config_to_dict(GenerateConfig())
    plain["densify"] = {**plain["densify"], **densify}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(plain, sort_keys=False))
    return path


def test_an_old_config_with_the_default_threshold_loads_with_the_relative_rule(tmp_path):
    from esd_gs.configs.generate import GenerateConfig
    from esd_gs.configs.yaml_io import load_yaml_config

    assert load_yaml_config(saved_config(tmp_path, grad_threshold=None)) == GenerateConfig()
    # a threshold in a file that turns densification off never did anything: dropped too
    off = load_yaml_config(saved_config(tmp_path, grad_threshold=0.3, enabled=False))
    assert off.densify == DensifyConfig(enabled=False)


def test_an_old_config_with_an_explicit_threshold_is_refused_in_one_line(tmp_path):
    from esd_gs.configs.yaml_io import load_yaml_config

    path = saved_config(tmp_path, grad_threshold=0.3)
    with pytest.raises(UserError) as error:
        load_yaml_config(path)
    message = str(error.value)
    assert "\n" not in message and message.startswith(str(path))
    assert "densify.grad_threshold 0.3" in message and "densify.grow_ratio" in message
    done = subprocess.run(  # the same line from the command line, before any work
        [sys.executable, "-m", "esd_gs", "generate", "x", "--config", str(path), "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    lines = [line for line in done.stderr.splitlines() if line.strip() and "torchvision" not in line]
    assert done.returncode == 2 and len(lines) == 1 and "densify.grow_ratio" in lines[0], done.stderr
    assert not (tmp_path / "run").exists()


def test_help_says_what_the_growth_number_means():
    done = subprocess.run(  # one column of options at 70 characters
        [sys.executable, "-m", "esd_gs", "generate", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env={**os.environ, "COLUMNS": "70"},
    )
    text = " ".join(done.stdout.replace("│", " ").split())
    assert "--densify.grow-ratio FLOAT Clone/split the Gaussians whose mean screen-space gradient" in text
    assert "above this multiple of the run's median one" in text and "grad-threshold" not in text
