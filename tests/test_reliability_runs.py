"""Runs under hostile settings, files, signals and disks (issue 33, items 5, 9, 10, 12 and 16): bad settings and
damaged checkpoints are refused in one stderr line before any model loads, a run never ends with an empty scene, and
run.json and metrics.jsonl tell the truth after a full disk, a second Ctrl-C or a SIGKILL."""

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from cli_process import run_cli, start_cli
from safetensors.torch import load_file, save_file
from small_disk import small_disk
from small_runs import small_synthetic_config

from esd_gs.configs.yaml_io import run_config_text
from esd_gs.pipeline.build import build_trainer
from esd_gs.testing.tiny_sd import build_tiny_stable_diffusion
from esd_gs.training.checkpoint import checkpoint_tensor_file
from esd_gs.training.run_dir import RunDir
from esd_gs.training.trainer import Interrupted, TrainingError

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="120", OMP_NUM_THREADS="1")
SMALL = [
    "--preset",
    "synthetic",
    "--prior.num-images",
    "8",
    "--init.num-points",
    "100",
    "--output.turntable-views",
    "2",
    "--output.turntable-size",
    "16",
    "--output.video-formats",
    "gif",
    "--output.preview-every",
    "0",
]
"""A synthetic run of a second a step at most: what a wrong acceptance would cost before the test fails."""
TINY_SD = ["--resolution", "64", "--init.num-points", "100", "--output.turntable-views", "2"]


def esd_gs(*args, timeout=120):
    return run_cli(*args, env=ENV, timeout=timeout)


def in_process(capsys, *args):
    """The same command through ``esd_gs.cli.main.main`` in this process (no second start-up of torch): for the
    variants of a case whose first one runs as a real subprocess."""
    from esd_gs.cli.main import main

    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


def one_error_line(result, expected: str, code: int = 2) -> str:
    """The command failed with ``code`` and wrote exactly one line on stderr, the ``esd-gs: error:`` line."""
    lines = [line for line in result.stderr.splitlines() if line.strip() and "torchvision" not in line]
    assert result.returncode == code, result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("esd-gs: error: "), result.stderr[-3000:]
    assert expected in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def prior():
    """The synthetic prior of ``small_synthetic_config``, built once for every trainer of this module."""
    config = small_synthetic_config(4)
    return config.prior.build(torch.device("cpu"), config.run_context)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_stable_diffusion(tmp_path_factory.mktemp("sd") / "tiny", "epsilon")


# ---------------------------------------------------------------------------------------------- bad settings
@pytest.mark.parametrize(
    "flags,expected,real",
    [
        (["--densify.prune-opacity", "1"], "--densify.prune-opacity must be in [0, 1)", True),
        (["--densify.prune-opacity", "2"], "--densify.prune-opacity must be in [0, 1)", False),
        (
            ["--densify.start", "0.9", "--densify.stop", "0.1"],
            "--densify.start (0.9) must be before --densify.stop",
            False,
        ),
    ],
    ids=["prune-1", "prune-2", "start-after-stop"],
)
def test_densify_settings_out_of_range_are_refused_in_one_line(tmp_path, capsys, flags, expected, real):
    """Item 5 (every Gaussian pruned: "cannot reshape tensor of 0 elements") and item 9 (start after stop)."""
    run = tmp_path / "run"
    densify = ["--densify.enabled", "--densify.every", "0.2"]  # the synthetic prior's default is off
    args = ["generate", "a head", *SMALL, "--steps", "6", *densify, *flags, "--out", run]
    one_error_line(esd_gs(*args) if real else in_process(capsys, *args), expected)
    assert not run.exists()  # refused before any file is written


def test_a_run_whose_pruning_removes_every_gaussian_stops_in_one_line(tmp_path, prior):
    """Item 5: every Gaussian is under the pruning threshold at the first refinement; the run stops with a
    TrainingError naming the option, instead of failing later on an empty scene ("cannot reshape tensor of 0
    elements")."""
    base = small_synthetic_config(4)
    config = replace(
        base,
        init=replace(base.init, num_points=20, opacity=0.1),
        densify=replace(base.densify, enabled=True, start=0.0, stop=1.0, every=0.25, prune_opacity=0.9),
    )
    trainer = build_trainer(config, tmp_path / "run", torch.device("cpu"), prior=prior)
    with pytest.raises(TrainingError, match="pruned every Gaussian.*--densify.prune-opacity"):
        for _ in range(4):
            trainer.train_step()


def test_psi_target_modules_that_do_not_exist_are_one_line_naming_real_ones(tiny_model, tmp_path):
    """Item 5 (peft's NoMatchingPeftModuleError traceback) and item 10 (no ``phi:`` line before the error)."""
    result = esd_gs(
        "generate", "a head", "--prior.model", tiny_model, *TINY_SD, "--psi.target-modules", "nonexistent_module",
        "--steps", "2", "--out", tmp_path / "run",
    )  # fmt: skip
    line = one_error_line(result, "--psi.target-modules nonexistent_module: no such module")
    assert "to_q" in line and "to_out.0" in line  # examples of what exists


def test_a_model_folder_with_truncated_weights_is_one_line(tiny_model, tmp_path):
    """Item 10: the ``phi: Stable Diffusion from ...`` line is printed only once phi has loaded."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    (weights,) = (model / "unet").glob("*.safetensors")
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    result = esd_gs("generate", "a head", "--prior.model", model, *TINY_SD, "--steps", "2", "--out", tmp_path / "run")
    one_error_line(result, str(model))
    assert not (tmp_path / "run").exists()  # the run folder is made only once the models have loaded


def test_a_first_generate_whose_model_does_not_load_leaves_no_run_folder(tmp_path, capsys):
    """Issue 31, item 5: the folder (and its missing parents) is made after the models load, not before."""
    run = tmp_path / "runs" / "run"
    result = in_process(capsys, "generate", "a head", "--prior.model", "/nonexistent", "--out", run)
    one_error_line(result, "/nonexistent")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("where", ["under a file", "a file"])
def test_an_out_where_no_folder_can_be_made_fails_fast_in_one_line(tmp_path, capsys, where):
    """The early check of --out creates nothing and loads no model (the model named here does not exist, so a check
    made after loading would report the model instead)."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    out, expected = (
        (blocker / "run", f"cannot create output directory {blocker / 'run'}: {blocker} is not a directory")
        if where == "under a file"
        else (blocker, f"output path {blocker} exists and is not a directory")
    )
    result = in_process(capsys, "generate", "a head", "--prior.model", "/nonexistent", "--out", out)
    one_error_line(result, expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # not even the write check's folder is left


# ---------------------------------------------------------------------------------------------- damaged checkpoints
@pytest.fixture(scope="module")
def checkpointed_run(tmp_path_factory, prior):
    """A synthetic run checkpointed at step 2 of 4 (through the CLI's own files), marked interrupted."""
    run = tmp_path_factory.mktemp("runs") / "run"
    base = small_synthetic_config(4)  # no densification: the 40 rows stay 40
    config = replace(base, init=replace(base.init, num_points=40), densify=replace(base.densify, enabled=False))
    trainer = build_trainer(config, run, torch.device("cpu"), prior=prior)
    RunDir(run).write_config(run_config_text(config))
    for _ in range(2):
        trainer.train_step()
    trainer.save()
    RunDir(run).write_status("interrupted", 2, 4)
    return run


def test_every_checkpoint_esd_gs_writes_passes_its_own_checks(tmp_path, prior):
    """The checks refuse NaN rows and NaN Adam moments: a step that leaves a NaN row (removed only when the next step
    starts) or an exp_avg_sq overflowed to +inf (which Adam copes with) must not make the run's own checkpoint one
    that --resume refuses."""
    from esd_gs.training.checkpoint import check_checkpoint, load_checkpoint

    config = small_synthetic_config(4)
    trainer = build_trainer(config, tmp_path / "run", torch.device("cpu"), prior=prior)
    trainer.train_step()
    count = trainer.scene.num_gaussians
    with torch.no_grad():
        trainer.scene.params["means"][5] = float("nan")
    state = trainer.optimizers["scales"].state[trainer.scene.params["scales"]]
    state["exp_avg_sq"][0, 0] = float("inf")
    trainer.save()
    tensors, meta = load_checkpoint(tmp_path / "run" / "checkpoint")
    check_checkpoint(tensors, meta, config.steps)  # raises on a checkpoint --resume would refuse
    assert tensors["scene.means"].shape[0] == count - 1


def damaged(run: Path, tmp_path: Path, edit) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    path = checkpoint_tensor_file(copy / "checkpoint")
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))
    return copy


def nan_rows(tensors):
    tensors["scene.means"][[3, 7]] = float("nan")


def zero_rows(tensors):
    for name in list(tensors):
        if name.startswith(("scene.", "optim.", "densify.")) and tensors[name].dim() > 0:
            tensors[name] = tensors[name][:0].contiguous()


@pytest.mark.parametrize(
    "edit,expected,real",
    [
        (lambda t: t.pop("optim.scales.0.exp_avg"), "the optimiser of scene.scales lacks its exp_avg", True),
        (
            lambda t: t.update({"optim.quats.0.exp_avg_sq": torch.zeros(40, 3)}),
            "the optimiser of scene.quats has exp_avg_sq of shape [40, 3], not [40, 4]",
            False,
        ),
        (zero_rows, "the scene has no Gaussians (0 rows)", False),
        (nan_rows, "scene.means holds NaN or infinite values in 2 of its 40 rows", True),
    ],
    ids=["no-exp-avg", "mis-shaped-exp-avg-sq", "zero-rows", "nan-means"],
)
def test_a_checkpoint_that_would_fail_at_the_first_step_is_refused_in_one_line(
    checkpointed_run, tmp_path, capsys, edit, expected, real
):
    """Items 5 and 9: these passed the checkpoint checks and failed at the first step (or finished, silently dropping
    the NaN rows); the run is left as it was."""
    copy = damaged(checkpointed_run, tmp_path, edit)
    before = {p.name: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    # ``real``: as a real command (one case per issue item); the others in this process, sparing a start-up
    line = one_error_line(
        esd_gs("generate", "--resume", copy) if real else in_process(capsys, "generate", "--resume", copy), expected
    )
    assert "does not fit this run" in line and "--overwrite" in line
    assert {p.name: p.read_bytes() for p in copy.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("fifo", ["run.json", "checkpoint/meta.json"])
def test_a_fifo_in_place_of_a_run_file_does_not_hang(checkpointed_run, tmp_path, capsys, fifo):
    """Issue 33.2, in a run directory: a FIFO run.json hung ``generate --out DIR`` and a FIFO meta.json hung
    ``--resume``; both are now read without blocking (files.read_text_file) and refused in one line."""
    copy = tmp_path / "copy"
    shutil.copytree(checkpointed_run, copy)
    (copy / fifo).unlink()
    os.mkfifo(copy / fifo)
    args = ("generate", "a head", "--preset", "synthetic", "--out", copy) if fifo == "run.json" else ("generate",)
    args = args if fifo == "run.json" else (*args, "--resume", copy)
    result = esd_gs(*args, timeout=60)
    one_error_line(result, str(copy))


def test_a_damaged_checkpoint_of_a_stable_diffusion_run_is_refused_before_phi_loads(
    checkpointed_run, tiny_model, tmp_path
):
    """Item 10: the checkpoint is checked before phi loads, so the one line is the error; no ``phi:`` line precedes
    it (the run's config.yaml names the tiny Stable Diffusion as its prior)."""
    from esd_gs.configs.yaml_io import dump_yaml_config, load_yaml_config
    from esd_gs.estimators import ParticlePsiConfig
    from esd_gs.priors import StableDiffusionConfig

    copy = damaged(checkpointed_run, tmp_path, lambda t: t.pop("optim.means.0.exp_avg_sq"))
    config = load_yaml_config(copy / "config.yaml")
    # A psi Stable Diffusion takes (the synthetic preset's learned one reads the exact prior)
    sd = replace(config, prior=StableDiffusionConfig(model=str(tiny_model)), psi=ParticlePsiConfig())
    (copy / "config.yaml").write_text(dump_yaml_config(sd))
    assert "name: sd" in (copy / "config.yaml").read_text()
    one_error_line(esd_gs("generate", "--resume", copy), "lacks its exp_avg_sq")


# ---------------------------------------------------------------------------------------------- run.json and metrics
def fill(disk: Path) -> None:
    """Fill ``disk`` to its last byte (what is left in the last page of other files stays writable)."""
    with open(disk / "filler", "wb", buffering=0) as fh:
        for size in (1 << 16, 1 << 12, 1 << 9, 1 << 6, 1):
            try:
                while True:
                    fh.write(b"\0" * size)
            except OSError as error:
                assert error.errno == errno.ENOSPC


def test_a_full_disk_still_records_the_failure_in_run_json(tmp_path, monkeypatch, prior):
    """Item 12: with the disk full to the last byte, run.json could not be rewritten and kept saying "running"."""
    with small_disk(tmp_path / "disk", 400) as disk:
        run = disk / "run"
        trainer = build_trainer(small_synthetic_config(6), run, torch.device("cpu"), prior=prior)
        real_step = trainer.train_step

        def step():
            if trainer.step == 2:
                fill(disk)
                raise OSError(errno.ENOSPC, "No space left on device", str(run / "previews"))
            return real_step()

        monkeypatch.setattr(trainer, "train_step", step)
        with pytest.raises(OSError):
            trainer.run()
        assert json.loads((run / "run.json").read_text())["status"] == "failed"


def test_sigint_on_a_full_disk_without_a_checkpoint_is_not_called_resumable(tmp_path, monkeypatch, prior):
    """Item 12: nothing could be saved and no earlier checkpoint exists, so the interruption says it cannot be
    resumed (``Interrupted.resumable``, which the command's last line reads) and run.json says failed."""
    with small_disk(tmp_path / "disk", 400) as disk:
        run = disk / "run"
        trainer = build_trainer(small_synthetic_config(20), run, torch.device("cpu"), prior=prior)
        real_step = trainer.train_step

        def step():
            if trainer.step == 2:
                fill(disk)
                trainer._on_signal(signal.SIGINT, None)
            return real_step()

        monkeypatch.setattr(trainer, "train_step", step)
        with pytest.raises(Interrupted) as stopped:
            trainer.run()
        assert stopped.value.resumable is False
        assert json.loads((run / "run.json").read_text())["status"] == "failed"


def test_a_second_sigint_during_the_save_does_not_leave_running(tmp_path, monkeypatch, prior):
    """Item 16: the second Ctrl-C stops the save at once, and run.json still gets the truth (no checkpoint: failed)."""
    trainer = build_trainer(small_synthetic_config(20), tmp_path / "run", torch.device("cpu"), prior=prior)
    real_step = trainer.train_step

    def step():
        if trainer.step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C: the loop stops and saves
        return real_step()

    def save():
        os.kill(os.getpid(), signal.SIGINT)  # the second, in the middle of the save
        raise AssertionError("the second signal should have stopped the save")

    monkeypatch.setattr(trainer, "train_step", step)
    monkeypatch.setattr(trainer, "save", save)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises((Interrupted, KeyboardInterrupt)):
            trainer.run()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "failed"


def test_a_killed_run_is_not_reported_as_running_and_a_live_one_is_not_resumed_twice(tmp_path):
    """Item 16: SIGKILL leaves run.json saying "running"; a later command reads it as what it is (interrupted: a
    checkpoint exists), and --resume of a run that is still going is refused instead of racing it."""
    run = tmp_path / "run"
    proc = start_cli(
        "generate", "a head", *SMALL, "--steps", "2000", "--output.checkpoint-every", "0.001", "--out", run, env=ENV
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if (run / "checkpoint" / "meta.json").exists() and (run / "metrics.jsonl").stat().st_size > 0:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert RunDir(run).read_status() == "running"
        refused = esd_gs("generate", "--resume", run, timeout=45)
        one_error_line(refused, f"is being run now by process {proc.pid}")
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    assert json.loads((run / "run.json").read_text())["status"] == "running"  # what SIGKILL leaves
    assert RunDir(run).read_status() == "interrupted"


def test_a_resume_from_an_earlier_checkpoint_does_not_repeat_metrics_rows(tmp_path, monkeypatch, prior):
    """Item 16: killed after step 5 with its last checkpoint at step 4, the resumed run writes step 5 again."""
    run = tmp_path / "run"
    config = small_synthetic_config(6)
    config = replace(config, output=replace(config.output, checkpoint_every=1 / 3))
    first = build_trainer(config, run, torch.device("cpu"), prior=prior)
    real_step = first.train_step

    def step():
        if first.step == 5:
            raise SystemExit("killed")  # as if SIGKILL: nothing after step 5 was written
        return real_step()

    monkeypatch.setattr(first, "train_step", step)
    with pytest.raises(SystemExit):
        first.run()
    resumed = build_trainer(config, run, torch.device("cpu"), prior=prior)
    resumed.restore()
    assert resumed.step == 4
    resumed.run()
    metrics = run / "metrics.jsonl"
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [1, 2, 3, 4, 5, 6]
    # A line torn by the kill goes too, and rows written twice by an earlier resume keep their last version.
    rows = metrics.read_text().splitlines(keepends=True)
    metrics.write_text("".join(rows[:5] + rows[3:5] + ['{"step": 6, "lo']))
    RunDir(run).truncate_metrics(5)
    assert metrics.read_text() == "".join(rows[:5])


def test_the_checkpoint_folder_is_flushed_after_its_renames(tmp_path, monkeypatch):
    """Item 16: a power loss right after a save must find the new meta.json: the folder holding the renamed file is
    fsynced after the rename, and the run folder after the checkpoint folder is created."""
    from esd_gs.training.checkpoint import save_checkpoint

    flushed: list[Path] = []
    real_fsync = os.fsync

    def fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            flushed.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    folder = tmp_path / "run" / "checkpoint"
    save_checkpoint(folder, {"scene.means": torch.zeros(2, 3)}, {"step": 1})
    assert folder.resolve() in flushed and folder.parent.resolve() in flushed
