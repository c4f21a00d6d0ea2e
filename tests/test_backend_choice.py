"""The render-backend choice: gsplat only where its CUDA kernels load, else our PyTorch renderer, never a traceback.

A CUDA machine is simulated on this CPU machine (``torch.cuda.is_available`` patched to True); gsplat's extension
loader is replaced by a stand-in whose ``_C`` is unset, as gsplat leaves it when no CUDA toolkit can build it.
"""

import types

import pytest
import torch
from test_generate import esd_gs

from esd_gs import render as render_pkg
from esd_gs.errors import UserError
from esd_gs.render import gsplat_backend, resolve_backend


@pytest.fixture
def fake_cuda(monkeypatch, tmp_path):
    """A 'CUDA' machine with nvcc but no finished gsplat build; the probe and the one-time notice start fresh."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gsplat_backend, "find_nvcc", lambda: "/usr/local/cuda/bin/nvcc")
    monkeypatch.setattr(gsplat_backend, "jit_build_dir", lambda: str(tmp_path / "empty-build-dir"))
    monkeypatch.setattr(render_pkg, "_fallback_noted", False)
    monkeypatch.setattr(gsplat_backend, "_smoke_test", lambda: None)  # no CUDA tensors here
    gsplat_backend.reset_probe()
    yield monkeypatch
    gsplat_backend.reset_probe()


def test_unloadable_extension_falls_back_to_torch_with_one_notice(fake_cuda, capsys):
    fake_cuda.setattr(gsplat_backend, "_import_backend", lambda: types.SimpleNamespace(_C=None))
    assert resolve_backend("auto", "cuda") == "torch"
    assert resolve_backend("auto", "cuda") == "torch"  # probed once, noticed once
    err = capsys.readouterr().err
    assert err.count("PyTorch renderer on CUDA instead") == 1
    assert "extension is unset" in err


def test_forced_gsplat_that_cannot_load_is_one_clear_error(fake_cuda):
    fake_cuda.setattr(gsplat_backend, "_import_backend", lambda: types.SimpleNamespace(_C=None))
    with pytest.raises(UserError, match="--backend gsplat cannot run.*--backend torch"):
        resolve_backend("gsplat", "cuda")


def test_a_failing_build_is_reported_not_raised(fake_cuda):
    def broken_build():
        raise RuntimeError("Error building extension 'gsplat_cuda'\nninja: build stopped")

    fake_cuda.setattr(gsplat_backend, "_import_backend", broken_build)
    probe = gsplat_backend.probe_gsplat(announce=lambda line: None)
    assert not probe.ok and "Error building extension 'gsplat_cuda'" in probe.reason
    assert resolve_backend("auto", "cuda") == "torch"


def test_first_build_is_announced_before_it_starts(fake_cuda):
    events = []
    fake_cuda.setattr(
        gsplat_backend, "_import_backend", lambda: events.append("build") or types.SimpleNamespace(_C=object())
    )
    probe = gsplat_backend.probe_gsplat(announce=events.append)
    assert events == ["building gsplat's CUDA kernels (first run only, a few minutes)", "build"]
    assert probe.ok and probe.build_seconds is not None
    assert resolve_backend("auto", "cuda") == "gsplat"


def test_kernels_that_load_but_fail_on_this_gpu_fall_back(fake_cuda):
    """A prebuilt wheel without kernels for this GPU's architecture imports fine and fails at the first render."""
    fake_cuda.setattr(gsplat_backend, "_import_backend", lambda: types.SimpleNamespace(_C=object()))

    def no_kernel_image():
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device")

    fake_cuda.setattr(gsplat_backend, "_smoke_test", no_kernel_image)
    probe = gsplat_backend.probe_gsplat(announce=lambda line: None)
    assert not probe.ok and "failed on this GPU" in probe.reason and "no kernel image" in probe.reason
    assert resolve_backend("auto", "cuda") == "torch"


def test_no_toolkit_never_tries_to_build(fake_cuda):
    fake_cuda.setattr(gsplat_backend, "find_nvcc", lambda: None)
    fake_cuda.setattr(gsplat_backend, "_import_backend", lambda: pytest.fail("must not import (it would build)"))
    assert gsplat_backend.gsplat_build_state() == "no-toolkit"
    probe = gsplat_backend.probe_gsplat(announce=lambda line: pytest.fail("nothing is built"))
    assert not probe.ok and "no nvcc" in probe.reason
    assert resolve_backend("auto", "cuda") == "torch"


def test_a_cached_build_without_nvcc_is_not_used(fake_cuda, tmp_path):
    """gsplat 1.5.3 looks at its JIT cache only when it finds a CUDA toolkit."""
    build = tmp_path / "build"
    build.mkdir()
    (build / "gsplat_cuda.so").write_bytes(b"")
    fake_cuda.setattr(gsplat_backend, "jit_build_dir", lambda: str(build))
    fake_cuda.setattr(gsplat_backend, "find_nvcc", lambda: None)
    assert gsplat_backend.gsplat_build_state() == "no-toolkit"


def test_a_cached_build_loads_without_announcement(fake_cuda, tmp_path):
    build = tmp_path / "build"
    build.mkdir()
    (build / "gsplat_cuda.so").write_bytes(b"")
    fake_cuda.setattr(gsplat_backend, "jit_build_dir", lambda: str(build))
    fake_cuda.setattr(gsplat_backend, "_import_backend", lambda: types.SimpleNamespace(_C=object()))
    assert gsplat_backend.gsplat_build_state() == "cached"
    probe = gsplat_backend.probe_gsplat(announce=lambda line: pytest.fail("a cached build is not a first build"))
    assert probe.ok and probe.build_seconds is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only machine")
def test_on_cpu_torch_is_chosen_and_gsplat_refused():
    assert gsplat_backend.gsplat_build_state() == "no-cuda"
    assert resolve_backend("auto", "cpu") == "torch"
    assert resolve_backend("cpu", "cpu") == "torch"  # the old name still works
    with pytest.raises(UserError, match="needs a CUDA device"):
        resolve_backend("gsplat", "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only machine")
def test_cli_forced_gsplat_on_cpu_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    result = esd_gs("generate", "a head", "--preset", "synthetic", "--backend", "gsplat", "--out", out)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "esd-gs: error: --backend gsplat needs a CUDA device: use --backend torch (or auto) on this machine"
    ]
    assert not out.exists() or not any(out.iterdir())


def test_cli_torch_backend_runs(tmp_path):
    """--backend torch was refused by the renderer before; it now names the PyTorch renderer."""
    out = tmp_path / "run"
    result = esd_gs(
        "generate",
        "a head",
        "--preset",
        "synthetic",
        "--backend",
        "torch",
        "--steps",
        "2",
        "--out",
        out,
        "--output.turntable-views",
        "2",
        "--output.turntable-size",
        "32",
        "--prior.num-images",
        "8",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "scene.ply").is_file()
