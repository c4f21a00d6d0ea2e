"""The GPU acceptance script runs end to end on CPU at tiny sizes, and its renderer comparison measures what it says."""

import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_acceptance  # noqa: E402


def test_acceptance_script_end_to_end_on_cpu(tmp_path):
    out = tmp_path / "acceptance"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "gpu_acceptance.py"),
            "--out",
            str(out),
            "--steps",
            "5",
            "--configs",
            "sds-fp16,esd-shared-fp16,esd-separate-bf16",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads((out / "acceptance.json").read_text())
    runs = {r["name"]: r for r in report["runs"]}
    assert set(runs) == {"sds-fp32", "esd-shared-fp32", "esd-separate-bf16"}  # fp16 -> fp32 on CPU
    for run in runs.values():
        assert run["ok"] and run["it_s"] > 0 and run["skipped_steps"] == 0, run
        assert run["gaussians_end"] >= 1
    assert runs["sds-fp32"]["lora_b_max"] is None  # SDS has no psi
    for name in ("esd-shared-fp32", "esd-separate-bf16"):
        assert runs[name]["lora_b_max"] > 0  # psi's LoRA trained in both modes
    table = (out / "acceptance.md").read_text()
    assert "| esd-separate-bf16 | esd | separate | bf16 |" in table
    assert "Renderer comparison skipped: no CUDA device." in table or "gsplat vs the PyTorch renderer" in table


def test_renderer_comparison_is_zero_for_equal_renderers_and_catches_a_difference():
    rows = gpu_acceptance.compare_renderers(
        torch.device("cpu"), seeds=(0,), n=200, size=24, backends=("torch", "dense")
    )
    row = rows[0]
    assert row["rgb_max_abs"] < 1e-4 and row["visible_agreement"] == 1.0
    assert row["means2d_grad_rel"] < 1e-3 and all(v < 1e-3 for k, v in row.items() if k.startswith("grad_rel_"))
    # A renderer that draws a different scene (brighter colours) must show up in the numbers.
    original = gpu_acceptance.render

    def brighter(scene, *args, backend="auto", **kwargs):
        out = original(scene, *args, backend="torch", **kwargs)
        if backend == "dense":
            out.rgb = out.rgb * 1.1
        return out

    gpu_acceptance.render = brighter
    try:
        row = gpu_acceptance.compare_renderers(
            torch.device("cpu"), seeds=(0,), n=200, size=24, backends=("torch", "dense")
        )[0]
    finally:
        gpu_acceptance.render = original
    assert row["rgb_max_abs"] > 1e-2 and row["grad_rel_sh0"] > 1e-2
