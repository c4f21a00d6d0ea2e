"""A GPU out of memory ends in one line naming what to lower, exit code 1, with the run's work kept (issue 31, item 5).

There is no GPU here: torch's ``OutOfMemoryError`` is a Python exception class, raised in a real CLI process by a
``sitecustomize`` module on its ``PYTHONPATH`` that makes psi's update fail on its third call, in the middle of the
third step (theta has already taken it), as a GPU running out of memory there would.
"""

import json
import os
import textwrap

import pytest
import torch
from cli_process import run_cli
from test_reliability_runs import ENV, SMALL, TINY_SD, in_process

from esd_gs.errors import out_of_memory
from esd_gs.testing.tiny_sd import build_tiny_stable_diffusion
from esd_gs.training.checkpoint import has_checkpoint
from esd_gs.training.run_dir import RunDir

CUDA_MESSAGE = (
    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which 1.06 GiB is "
    "free. Including non-PyTorch memory, this process has 78.12 GiB memory in use. Of the allocated memory 76.40 GiB "
    "is allocated by PyTorch, and 1.10 GiB is reserved by PyTorch but unallocated. If reserved but unallocated memory "
    "is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See documentation "
    "for Memory Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
)
SITECUSTOMIZE = f"""
import torch
from esd_gs.distillation.step import ScoreDistillation

update_psi = ScoreDistillation.update_psi
calls = []

def failing_update_psi(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == 3:
        raise torch.cuda.OutOfMemoryError({CUDA_MESSAGE!r})
    return update_psi(self, *args, **kwargs)

ScoreDistillation.update_psi = failing_update_psi
"""


def oom_error_line(stderr: str) -> str:
    """The one line: no traceback, no second error, and nothing of torch's paragraph."""
    assert "Traceback" not in stderr and "PYTORCH_CUDA_ALLOC_CONF" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("esd-gs: error:")]
    assert len(lines) == 1, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == lines[0]  # the last thing said
    return lines[0]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_stable_diffusion(tmp_path_factory.mktemp("sd") / "tiny", "epsilon")


def test_out_of_memory_mid_run_is_one_line_exit_1_and_keeps_a_checkpoint_and_the_scene(tiny_model, tmp_path):
    patch = tmp_path / "patch"
    patch.mkdir()
    (patch / "sitecustomize.py").write_text(textwrap.dedent(SITECUSTOMIZE))
    env = dict(ENV, PYTHONPATH=os.pathsep.join(filter(None, [str(patch), ENV.get("PYTHONPATH")])))
    run = tmp_path / "run"
    args = [
        "generate",
        "a head",
        "--prior.model",
        tiny_model,
        *TINY_SD,
        "--steps",
        "5",
        "--batch-size",
        "2",
        "--psi.no-shared-unet",
    ]
    result = run_cli(*args, "--out", run, env=env, timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    line = oom_error_line(result.stderr)
    assert line.startswith("esd-gs: error: the GPU ran out of memory (tried to allocate 2.00 GiB): lower ")
    for hint in ("--batch-size (now 2)", "--resolution (now 64)", "--psi.shared-unet", f"kept in {run}", "--resume"):
        assert hint in line, (hint, line)

    files = RunDir(run)
    status = json.loads(files.status_file.read_text())
    assert (status["status"], status["step"]) == ("failed", 2)  # the third step did not finish
    assert has_checkpoint(files.checkpoint) and files.scene_ply.is_file()
    assert json.loads((files.checkpoint / "meta.json").read_text())["step"] == 2
    # The checkpoint continues the run (where there is memory: here, without the patch).
    resumed = run_cli("generate", "--resume", run, env=ENV, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(files.status_file.read_text())["status"] == "finished"


def test_with_psi_in_phis_unet_the_line_names_only_the_sizes(tmp_path, capsys, monkeypatch):
    from esd_gs.distillation.step import ScoreDistillation

    def out_of_memory_now(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError(CUDA_MESSAGE)

    monkeypatch.setattr(ScoreDistillation, "update_psi", out_of_memory_now)
    result = in_process(capsys, "generate", "a head", *SMALL, "--steps", "3", "--batch-size", "2", "--out", tmp_path)
    assert result.returncode == 1
    line = oom_error_line(result.stderr)
    assert "--batch-size (now 2) or --resolution (now 32)" in line and "--psi.shared-unet" not in line
    assert f"kept in {tmp_path}" in line and RunDir(tmp_path).scene_ply.is_file()


def test_out_of_memory_outside_generate_is_one_line_too(tmp_path, capsys, monkeypatch):
    import esd_gs.cli.export_cmd as export_cmd

    def out_of_memory_now(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory.")

    monkeypatch.setattr(export_cmd, "read_ply", out_of_memory_now)
    result = in_process(capsys, "export", "assets/head.ply", "--to", tmp_path / "head.splat")
    assert result.returncode == 1
    assert oom_error_line(result.stderr) == (
        "esd-gs: error: the GPU ran out of memory: free what other processes hold, or use smaller sizes"
    )


def test_the_line_keeps_only_the_allocation_of_torchs_paragraph():
    assert (
        out_of_memory(torch.cuda.OutOfMemoryError(CUDA_MESSAGE))
        == "the GPU ran out of memory (tried to allocate 2.00 GiB)"
    )
    assert out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 512 MiB")) == (
        "the GPU ran out of memory (tried to allocate 512 MiB)"
    )
    assert out_of_memory(torch.cuda.OutOfMemoryError("out of memory")) == "the GPU ran out of memory"


def test_out_of_memory_while_loading_names_what_sets_the_weights_memory(tmp_path, capsys, monkeypatch):
    """Loading fails whatever the batch or the render size: the line says what does change it, and nothing is made."""
    import esd_gs.pipeline.generate as generate_module

    def out_of_memory_now(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError(CUDA_MESSAGE)

    monkeypatch.setattr(generate_module, "build_trainer", out_of_memory_now)
    out = tmp_path / "run"
    result = in_process(capsys, "generate", "a head", *SMALL, "--steps", "3", "--out", out)
    assert result.returncode == 1
    line = oom_error_line(result.stderr)
    assert "free the GPU memory other processes hold" in line
    assert "--batch-size" not in line and "--resolution" not in line and "kept in" not in line
    assert not out.exists()
