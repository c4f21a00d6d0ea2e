"""The GPU acceptance script runs end to end on CPU at tiny sizes and passes; each fault injected into it (from a
``sitecustomize.py`` first on the PYTHONPATH of the acceptance process, which its generate runs inherit) fails it
with its reason; and its renderer comparison measures what it says."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from esd_gs.render.agreement import GSPLAT_AGREEMENT, allclose_excess
from esd_gs.render.gsplat_backend import GsplatProbe
from esd_gs.testing.tiny_sd import build_tiny_stable_diffusion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_acceptance  # noqa: E402

CLEAN_CONFIGS = "sds-fp16,esd-shared-fp16,esd-separate-bf16"

FAULTS = {
    # psi's loss is computed and logged as before, but its update does nothing
    "no-op psi update": (
        "esd-shared-fp16",
        4,
        """
from esd_gs.estimators.online import OnlineEstimator

_train_step = OnlineEstimator.train_step


def train_step(self, *args, **kwargs):
    self.optimizer.step = lambda *a, **k: None
    return _train_step(self, *args, **kwargs)


OnlineEstimator.train_step = train_step
""",
        ["esd-shared-fp32: psi's LoRA B: only 0.0% of its entries moved", "esd-shared-fp32: psi's probe loss did not"],
    ),
    # the second step's distillation loss is NaN (the loop skips that step and goes on)
    "NaN step": (
        "sds-fp16",
        3,
        """
from esd_gs.distillation.step import ScoreDistillation

_step = ScoreDistillation.step
_calls = []


def step(self, *args, **kwargs):
    out = _step(self, *args, **kwargs)
    _calls.append(1)
    if len(_calls) == 2:
        out.loss = out.loss * float("nan")
    return out


ScoreDistillation.step = step
""",
        ["sds-fp32: 1 non-finite step(s)"],
    ),
    # the reference renderer (on CPU the dense oracle, where gsplat would be on CUDA) draws 10% brighter
    "renderer mismatch": (
        "",
        1,
        """
from esd_gs import render

_dense = render.BACKENDS["dense"]


def brighter(*args, **kwargs):
    rgb, alpha, depth, info = _dense(*args, **kwargs)
    return rgb * 1.1, alpha, depth, info


render.BACKENDS["dense"] = brighter
""",
        [
            f"renderers disagree on scene {scene}: the PyTorch renderer's"
            for scene, _, _ in gpu_acceptance.RENDERER_SCENES
        ],
    ),
}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """One tiny model for every acceptance run here (each would build its own: seconds apiece)."""
    return build_tiny_stable_diffusion(tmp_path_factory.mktemp("model") / "model-tiny")


def acceptance(
    out: Path, model: Path, configs: str, steps: int, sitecustomize: str | None = None
) -> subprocess.CompletedProcess:
    out.mkdir(parents=True)
    (out / "model-tiny").symlink_to(model)  # where the script keeps (and reuses) its tiny model
    env = dict(os.environ)
    if sitecustomize is not None:
        inject = out.parent / "inject"
        inject.mkdir(parents=True)
        (inject / "sitecustomize.py").write_text(sitecustomize)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(inject), env.get("PYTHONPATH")]))
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu_acceptance.py"), "--out", str(out)]
    command += ["--steps", str(steps), "--configs", configs]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)


@pytest.fixture(scope="module")
def clean(tmp_path_factory, tiny_model):
    out = tmp_path_factory.mktemp("clean") / "acceptance"
    result = acceptance(out, tiny_model, CLEAN_CONFIGS, 6)
    return result, json.loads((out / "acceptance.json").read_text()), (out / "acceptance.md").read_text()


def test_acceptance_script_end_to_end_on_cpu(clean):
    result, report, table = clean
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert report["failures"] == [] and result.stdout.rstrip().endswith("acceptance run passed")
    runs = {r["name"]: r for r in report["runs"]}
    assert set(runs) == {"sds-fp32", "esd-shared-fp32", "esd-separate-bf16"}  # fp16 -> fp32 on CPU
    for run in runs.values():
        assert run["ok"] and run["failures"] == [] and run["it_s"] > 0 and run["skipped_steps"] == 0, run
        assert run["it_s_final"] > 0 and run["final_resolution"] == 64 and run["gaussians_end"] >= 1
        assert run["renderers"] == ["torch"] and run["run_json_renderer"] == "torch"
    assert "lora_b_moved" not in runs["sds-fp32"]  # SDS has no psi
    for name in ("esd-shared-fp32", "esd-separate-bf16"):  # psi's LoRA trained in both modes
        run = runs[name]
        assert run["lora_b_moved"] == 1.0 and run["psi_steps"] == 6 and run["psi_scaler_skipped"] == 0
        assert run["psi_loss_drop"] >= 4 * gpu_acceptance.PSI_MIN_LOSS_DROP  # a clear margin at 6 steps
    assert report["renderer"] == "torch" and report["reference_renderer"] == "dense"
    assert len(report["renderers"]) == 3 and all(r["agree"] for r in report["renderers"])
    assert "| esd-separate-bf16 | esd | separate | bf16 |" in table and table.count("| ok |") == 3
    assert "## The PyTorch renderer vs dense" in table and "- result: passed" in table


@pytest.mark.parametrize("fault", FAULTS)
def test_each_injected_fault_fails_the_run_with_its_reason(fault, tmp_path, tiny_model):
    configs, steps, sitecustomize, reasons = FAULTS[fault]
    out = tmp_path / "acceptance"
    result = acceptance(out, tiny_model, configs, steps, sitecustomize)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-2000:]
    report = json.loads((out / "acceptance.json").read_text())
    table = (out / "acceptance.md").read_text()
    for reason in reasons:
        assert sum(failure.startswith(reason) for failure in report["failures"]) == 1, (reason, report["failures"])
        assert f"- {reason}" in result.stdout and f"- FAILED: {reason}" in table
    assert len(report["failures"]) == len(reasons)  # this fault, nothing else


def test_a_run_that_used_another_renderer_fails(clean):
    _, report, _ = clean
    run = next(r for r in report["runs"] if r["name"] == "esd-shared-fp32")
    assert gpu_acceptance.run_failures(run, "torch") == []
    assert gpu_acceptance.run_failures(run, "gsplat") == ["rendered with torch, expected gsplat"]
    degraded = dict(run, lora_b_moved=0.5, psi_scaler_skipped=2)  # underflowing gradients; a scaler that skips a third
    assert gpu_acceptance.run_failures(degraded, "torch") == [
        "psi's LoRA B: only 50.0% of its entries moved (< 90%)",
        "psi's fp16 loss scaler skipped 2 of 6 steps (> 10%)",
    ]


def test_a_compiled_run_that_ran_eager_fails_and_a_compiled_pair_reports_its_speedup(clean):
    """The compiled row times ``--compile``: a compile that fell back to eager (its one line in the run's stderr)
    would report eager's it/s under its name, so it fails; beside its eager twin the report gives the ratio."""
    _, report, _ = clean
    eager = next(r for r in report["runs"] if r["name"] == "esd-shared-fp32")
    stderr = "phi: ...\n--compile: torch.compile failed (BackendCompilerFailed: no nvcc); the UNet passes run eager\n"
    line = gpu_acceptance.compile_fallback(stderr)
    assert line == "--compile: torch.compile failed (BackendCompilerFailed: no nvcc); the UNet passes run eager"
    assert (
        gpu_acceptance.compile_fallback("--compile: UNet passes through torch.compile, compiled in the first step")
        is None
    )
    compiled = dict(eager, name="esd-shared-fp32-compiled", compiled=True, compile_fallback=line)
    assert gpu_acceptance.run_failures(compiled, "torch") == [f"--compile ran eager, so its it/s are eager's: {line}"]
    assert gpu_acceptance.run_failures(dict(eager, compile_fallback=line), "torch") == []  # not a compiled run
    fast = dict(compiled, compile_fallback=None, it_s_final=2 * eager["it_s_final"], failures=[])
    assert gpu_acceptance.speedups([eager, fast]) == [
        f"esd-shared-fp32-compiled: 2.00x its eager twin's it/s at the final size ({fast['it_s_final']:.2f} against "
        f"{eager['it_s_final']:.2f})"
    ]
    assert gpu_acceptance.speedups([eager]) == []


def test_the_compiled_row_runs_on_cuda_only_unless_named():
    on_cpu = gpu_acceptance.select_configs(None, full=True, cuda=False)
    assert "esd-shared-fp16-compiled" not in on_cpu and len(on_cpu) == len(gpu_acceptance.CONFIGS) - 1
    assert "esd-shared-fp16-compiled" in gpu_acceptance.select_configs(None, full=True, cuda=True)
    assert "esd-shared-fp16-compiled" not in gpu_acceptance.select_configs(None, full=False, cuda=True)
    pair = "esd-shared-fp16,esd-shared-fp16-compiled"
    assert gpu_acceptance.select_configs(pair, full=False, cuda=False) == pair.split(",")


def test_gsplat_not_loading_on_cuda_fails_unless_the_fallback_is_accepted(monkeypatch, tmp_path, capsys):
    broken = GsplatProbe(False, "no CUDA toolkit (nvcc) to build gsplat's kernels")
    assert gpu_acceptance.gsplat_failure(False, broken, accept_torch=False) is None  # CPU: the PyTorch renderer
    assert gpu_acceptance.gsplat_failure(True, broken, accept_torch=True) is None
    assert gpu_acceptance.expected_renderer(True, broken) == "torch"
    assert gpu_acceptance.expected_renderer(True, GsplatProbe(True, "prebuilt")) == "gsplat"
    # A CUDA machine whose gsplat does not load: the run stops at once, before building a model or running anything.
    monkeypatch.setattr(gpu_acceptance.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gpu_acceptance.torch.cuda, "get_device_name", lambda index: "a GPU")
    monkeypatch.setattr(gpu_acceptance.gsplat_backend, "probe_gsplat", lambda announce: broken)
    monkeypatch.setattr(sys, "argv", ["gpu_acceptance.py", "--out", str(tmp_path)])
    assert gpu_acceptance.main() == 1
    report = json.loads((tmp_path / "acceptance.json").read_text())
    assert report["runs"] == [] and len(report["failures"]) == 1
    assert report["failures"][0].startswith("gsplat does not load on CUDA (no CUDA toolkit (nvcc)")
    assert "--accept-torch-renderer" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acceptance.json", "acceptance.md"]


def test_allclose_excess_passes_exactly_where_allclose_does():
    gen = torch.Generator().manual_seed(0)
    expected = torch.randn(1000, generator=gen)
    for scale in (1e-4, 1e-3, 3e-3, 1e-2, 3e-2):
        actual = expected + scale * torch.randn(1000, generator=gen)
        for tol in GSPLAT_AGREEMENT.values():
            assert (allclose_excess(actual, expected, **tol) <= 1.0) == torch.allclose(actual, expected, **tol)
    nan = expected.clone()
    nan[3] = float("nan")
    assert not allclose_excess(nan, expected, **GSPLAT_AGREEMENT["image"]) <= 1.0


def test_renderer_comparison_is_zero_for_equal_renderers_and_catches_a_difference():
    rows = gpu_acceptance.compare_renderers(
        torch.device("cpu"), seeds=(0,), n=200, size=24, backends=("torch", "dense")
    )
    row = rows[0]
    assert row["rgb_max_abs"] < 1e-4 and row["visible_agreement"] == 1.0 and row["agree"]
    assert row["means2d_grad_rel"] < 1e-3 and all(v < 1e-3 for k, v in row.items() if k.startswith("grad_rel_"))
    assert gpu_acceptance.renderer_failures(rows, "dense") == []
    # A renderer that draws a different scene (brighter colours) must show up in the numbers, and fail.
    original = gpu_acceptance.render

    def brighter(scene, *args, backend="auto", **kwargs):
        out = original(scene, *args, backend="torch", **kwargs)
        if backend == "dense":
            out.rgb = out.rgb * 1.1
        return out

    gpu_acceptance.render = brighter
    try:
        rows = gpu_acceptance.compare_renderers(
            torch.device("cpu"), seeds=(0,), n=200, size=24, backends=("torch", "dense")
        )
    finally:
        gpu_acceptance.render = original
    row = rows[0]
    assert row["rgb_max_abs"] > 1e-2 and row["grad_rel_sh0"] > 1e-2 and not row["agree"]
    assert row["image_excess"] > 1.0 and row["grad_excess_sh0"] > 1.0
    (reason,) = gpu_acceptance.renderer_failures(rows, "dense")
    assert reason.startswith("renderers disagree on scene 0: the PyTorch renderer's ")
