"""``esd-gs doctor``: one line per check, exit 0 only when a run can start, and never a weight download."""

import socket
import time
import types

import pytest
import torch
from fake_hub import hub_env, run_cli, serving

from esd_gs.cli import doctor_cmd
from esd_gs.configs.generate import GenerateConfig
from esd_gs.priors.sources import KNOWN_SOURCES, PROBE_TIMEOUT_S, SourceCheck
from esd_gs.render import gsplat_backend
from esd_gs.testing.tiny_sd import build_tiny_stable_diffusion

FIRST, SECOND = KNOWN_SOURCES["sd2.1-base"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_stable_diffusion(tmp_path_factory.mktemp("sd") / "tiny", "epsilon")


def offline(tmp_path):
    return {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}


def test_a_local_model_can_start_a_run(tiny, tmp_path):
    result = run_cli("doctor", "--model", tiny, "--out", tmp_path / "runs", env_extra=offline(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "a run can start"
    assert [line.split(":")[0].split()[-1] for line in lines[:-1]] == ["torch", "gsplat", "phi", "disk"]
    assert f"ok  phi: {tiny}: local folder" in result.stdout


def test_no_model_to_be_had_fails_with_every_reason(tmp_path):
    result = run_cli("doctor", env_extra=offline(tmp_path))
    assert result.returncode == 1
    phi = next(line for line in result.stdout.splitlines() if "phi:" in line)
    assert phi.startswith("fail  phi: sd2.1-base (2 known source(s)): tried ")
    assert f"{FIRST} (offline and not in the Hugging Face cache)" in phi and "--preset synthetic" in phi
    assert result.stdout.strip().splitlines()[-1] == "a run cannot start: see the lines marked fail"


def test_a_model_on_the_hub_is_found_without_downloading_weights(tiny, tmp_path):
    with serving({FIRST: "gated", SECOND: str(tiny)}) as server:
        result = run_cli("doctor", env_extra=hub_env(server, tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        f"ok  phi: sd2.1-base -> {SECOND}: on the Hugging Face Hub (the first run downloads its weights and checks "
        "their sha256)" in result.stdout
    )
    fetched = [r for r in server.requests if r.startswith("GET ") and "/resolve/" in r]
    assert fetched and all(r.endswith("model_index.json") for r in fetched), fetched


def test_an_unreachable_hub_is_one_quick_line_and_no_retries(tmp_path):
    """HF_HUB_OFFLINE unset, nothing answering at HF_ENDPOINT: the phi line says so, nothing else is printed, and
    the whole check takes the connectivity check's few seconds, not huggingface_hub's minute of retries."""
    offline_env = {**offline(tmp_path), "ESD_GS_CACHE": str(tmp_path / "cache")}
    start = time.monotonic()
    run_cli("doctor", "--out", tmp_path, env_extra=offline_env)
    offline_seconds = time.monotonic() - start
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        env = {**offline_env, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{port}"}
        start = time.monotonic()
        result = run_cli("doctor", "--out", tmp_path, env_extra=env, timeout=60)
        elapsed = time.monotonic() - start
    assert result.returncode == 1 and result.stderr == "", result.stderr
    phi = [line for line in result.stdout.splitlines() if "phi:" in line]
    assert len(phi) == 1 and phi[0].startswith("fail  phi: sd2.1-base (2 known source(s)): tried "), result.stdout
    assert f"{FIRST} (Hub unreachable (127.0.0.1:{port} did not answer within 5 s) and not in the cache)" in phi[0]
    assert elapsed < max(15.0, offline_seconds + PROBE_TIMEOUT_S + 3.0), (elapsed, offline_seconds)


def test_synthetic_prior_needs_no_model(tmp_path):
    result = run_cli("doctor", "--preset", "synthetic", env_extra=offline(tmp_path))
    assert result.returncode == 0
    assert "ok  phi: prior:synthetic needs no model" in result.stdout
    old = run_cli("doctor", "--prior", "synthetic", env_extra=offline(tmp_path))  # esd-gs 0.1's spelling
    lines = old.stderr.strip().splitlines()
    assert old.returncode == 2 and len(lines) == 1 and "--preset synthetic" in lines[0], old.stderr


def test_the_fitted_unet_prior_counts_the_fits_in_its_cache(tmp_path):
    """--preset synthetic-unet downloads nothing; the line says whether the first run has a UNet to fit."""
    env = {**offline(tmp_path), "ESD_GS_CACHE": str(tmp_path / "cache")}
    empty = run_cli("doctor", "--preset", "synthetic-unet", "--out", tmp_path, env_extra=env)
    assert empty.returncode == 0, empty.stdout + empty.stderr
    cache = tmp_path / "cache" / "synthetic-unet"
    assert f"ok  phi: the fitted synthetic UNet needs no download: none fitted in {cache} yet" in empty.stdout
    (cache / "0123456789abcdef").mkdir(parents=True)
    (cache / "0123456789abcdef" / "prompts.json").write_text("{}")
    (cache / ".fedcba9876543210.partial").mkdir()  # a stopped fit, its prompts.json written: not a fitted UNet
    (cache / ".fedcba9876543210.partial" / "prompts.json").write_text("{}")
    one = run_cli("doctor", "--preset", "synthetic-unet", "--out", tmp_path, env_extra=env)
    assert f"ok  phi: the fitted synthetic UNet needs no download: 1 fitted in {cache}" in one.stdout


def test_gsplat_line_on_a_cuda_machine_without_nvcc(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gsplat_backend, "find_nvcc", lambda: None)
    monkeypatch.setattr(gsplat_backend, "jit_build_dir", lambda: str(tmp_path))
    report = doctor_cmd.Report()
    doctor_cmd.check_gsplat(report)
    out = capsys.readouterr().out
    assert out.startswith("warn  gsplat: ") and "cannot be built (no nvcc)" in out and not report.failed


def test_weights_estimate_is_the_exact_parameter_memory(tiny):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    count = sum(p.numel() for p in UNet2DConditionModel.from_pretrained(tiny, subfolder="unet").parameters())
    count += sum(p.numel() for p in AutoencoderKL.from_pretrained(tiny, subfolder="vae").parameters())
    count += sum(p.numel() for p in CLIPTextModel.from_pretrained(tiny, subfolder="text_encoder").parameters())
    assert doctor_cmd.weights_gib(str(tiny), 2) == pytest.approx(count * 2 / 2**30, rel=1e-12)


def test_gpu_memory_too_small_fails(tiny, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (1 * 2**30, 8 * 2**30))
    report = doctor_cmd.Report()
    phi = SourceCheck(str(tiny), True, "local folder")
    doctor_cmd.check_gpu_memory(report, GenerateConfig(), phi, None)  # 512 px: ~4 GiB of working memory
    assert report.failed and "1.0 GiB free of 8.0, the run needs about 4.0 GiB" in capsys.readouterr().out
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (80 * 2**30, 80 * 2**30))
    report = doctor_cmd.Report()
    doctor_cmd.check_gpu_memory(report, GenerateConfig(), phi, None)
    assert not report.failed


def test_full_disk_fails(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(doctor_cmd.shutil, "disk_usage", lambda path: types.SimpleNamespace(free=100 * 2**20))
    report = doctor_cmd.Report()
    doctor_cmd.check_disk(report, tmp_path / "not" / "yet")
    assert report.failed and capsys.readouterr().out.startswith("fail  disk: 0.1 GiB free")
