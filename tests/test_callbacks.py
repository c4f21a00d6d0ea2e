"""The Trainer's callbacks (``training.callbacks``): each called at its point, every step once, in the given order,
also across an interruption and a resume; a key a callback adds reaches metrics.jsonl; ``build_trainer`` gives a run
the callbacks its config asks for; each part of a checkpoint is filed under its prefix; and training imports nothing
from evaluation/ or viewer/."""

import json
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from small_runs import small_synthetic_config

from esd_gs.monitors.live_view import LiveViewCallback
from esd_gs.monitors.psi_error import PsiDiagnosticCallback
from esd_gs.pipeline.build import build_parts, build_trainer
from esd_gs.training.callbacks import CheckpointWriter, MetricsWriter, PreviewWriter, TrainingCallback, every
from esd_gs.training.checkpoint import load_checkpoint
from esd_gs.training.trainer import Interrupted, Trainer

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


class Recorder(TrainingCallback):
    """Writes down every call: (point, steps done[, the row's step | run.json's status])."""

    def __init__(self):
        self.log = []

    def on_start(self, trainer):
        self.log.append(("start", trainer.step))

    def before_step(self, trainer):
        self.log.append(("before", trainer.step))

    def after_step(self, trainer, row):
        self.log.append(("after", trainer.step, row["step"]))

    def on_finish(self, trainer):
        self.log.append(("finish", trainer.step, trainer.files.read_status()))

    def on_close(self, trainer):
        self.log.append(("close", trainer.step))


def test_a_bare_loop_calls_each_point_once_per_step_and_writes_no_rows(tmp_path):
    recorder = Recorder()
    config = small_synthetic_config(3)
    trainer = Trainer(config, tmp_path, CPU, build_parts(config, CPU), callbacks=[recorder])
    trainer.run()
    steps = [entry for step in range(3) for entry in (("before", step), ("after", step + 1, step + 1))]
    # on_finish after the final save and export, before run.json says finished
    assert recorder.log == [("start", 0), *steps, ("finish", 3, "running"), ("close", 3)]
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "finished"
    assert (tmp_path / "scene.ply").is_file() and (tmp_path / "checkpoint" / "meta.json").is_file()
    assert not (tmp_path / "metrics.jsonl").exists() and not (tmp_path / "previews").exists()


class Stopper(TrainingCallback):
    """SIGINT as the run's ``at``-th step ends (the handler the run installed takes it)."""

    def __init__(self, at):
        self.at = at

    def after_step(self, trainer, row):
        if trainer.step == self.at:
            trainer._on_signal(signal.SIGINT, None)


def test_an_interrupted_and_resumed_run_shows_each_step_to_the_callbacks_once(tmp_path):
    config = small_synthetic_config(5)
    first, stopper = Recorder(), Stopper(2)
    trainer = build_trainer(config, tmp_path, CPU)
    trainer.callbacks += [first, stopper]
    with pytest.raises(Interrupted):
        trainer.run()
    assert [e for e in first.log if e[0] in ("after", "finish", "close")] == [
        ("after", 1, 1),
        ("after", 2, 2),
        ("close", 2),
    ]
    second = Recorder()
    resumed = build_trainer(config, tmp_path, CPU)
    resumed.callbacks.append(second)
    resumed.restore()
    resumed.run()
    assert [e[1] for e in second.log if e[0] == "after"] == [3, 4, 5]
    assert second.log[0] == ("start", 2) and second.log[-2:] == [("finish", 5, "running"), ("close", 5)]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3, 4, 5]


class Marker(TrainingCallback):
    def after_step(self, trainer, row):
        row["marker"] = trainer.step * 10


class Reader(TrainingCallback):
    def __init__(self):
        self.rows = []

    def after_step(self, trainer, row):
        self.rows.append(dict(row))


def test_keys_added_before_the_metrics_writer_are_written_and_later_callbacks_see_the_whole_row(tmp_path):
    reader = Reader()
    config = small_synthetic_config(2)
    Trainer(config, tmp_path, CPU, build_parts(config, CPU), callbacks=[Marker(), MetricsWriter(), reader]).run()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["marker"] for row in rows] == [10, 20]
    assert list(rows[0]) == [
        "step",
        "loss",
        "grad_rms",
        "t",
        "gaussians",
        "resolution",
        "psi_loss",
        "psi_scaler_skipped",
        "skipped",
        "renderer",
        "marker",
        "it_s",
    ]
    assert reader.rows == rows
    # the renderer that drew the run, in every row and in run.json; the learned psi's fp32 network skipped no step
    assert {row["renderer"] for row in rows} == {"torch"} and {row["psi_scaler_skipped"] for row in rows} == {0}
    assert json.loads((tmp_path / "run.json").read_text())["renderer"] == "torch"


def test_previews_and_checkpoints_on_schedule(tmp_path):
    config = small_synthetic_config(6)
    config = replace(config, output=replace(config.output, preview_every=0.3, checkpoint_every=0.5))
    saved = []

    class Saves(TrainingCallback):
        def after_step(self, trainer, row):
            saved.append(
                load_checkpoint(trainer.files.checkpoint)[1]["step"] if trainer.files.checkpoint.is_dir() else None
            )

    callbacks = [PreviewWriter(config), CheckpointWriter(config), Saves()]
    Trainer(config, tmp_path, CPU, build_parts(config, CPU), callbacks=callbacks).run()
    assert every(0.3, 6) == 2 and every(0.0, 6) == 0 and every(0.01, 6) == 1
    assert sorted(p.name for p in (tmp_path / "previews").iterdir()) == [f"step_{s:06d}.png" for s in (2, 4, 6)]
    assert saved == [None, None, 3, 3, 3, 3]  # every 3 steps, not at the last (the run's own final save)


def test_build_trainer_gives_a_run_the_callbacks_its_config_asks_for(tmp_path):
    config = small_synthetic_config(2)
    both = replace(config, viewer=True, diagnose=replace(config.diagnose, enabled=True))
    kinds = [type(c) for c in build_trainer(both, tmp_path / "a", CPU).callbacks]
    assert kinds == [PsiDiagnosticCallback, MetricsWriter, PreviewWriter, LiveViewCallback, CheckpointWriter]
    plain = build_trainer(config, tmp_path / "b", CPU)
    assert [type(c) for c in plain.callbacks] == [MetricsWriter, PreviewWriter, CheckpointWriter]
    assert Trainer(config, tmp_path / "c", CPU, build_parts(config, CPU, plain.prior)).callbacks == []
    # a learned psi is compared with a particle baseline of --diagnose.baseline-bank renders
    learned = small_synthetic_config(2, psi={"name": "residual"})
    learned = replace(learned, diagnose=replace(learned.diagnose, enabled=True, baseline_bank=5))
    (diagnosing, *_) = build_trainer(learned, tmp_path / "d", CPU, prior=plain.prior).callbacks
    assert isinstance(diagnosing, PsiDiagnosticCallback) and diagnosing.diagnostic.particle.bank_size == 5


def test_each_part_of_the_checkpoint_is_filed_under_its_prefix(tmp_path):
    config = small_synthetic_config(3)
    trainer = Trainer(config, tmp_path, CPU, build_parts(config, CPU))
    trainer.train_step()
    trainer.save()
    tensors, meta = load_checkpoint(tmp_path / "checkpoint")
    assert list(meta) == ["step", "skipped", "bad_in_a_row", "optimizers", "psi", "device", "tensors"]
    parts = {
        "": trainer.theta.checkpoint_state(),
        "densify.": trainer.densifier.checkpoint_state(),
        "psi.": trainer.psi.checkpoint_state(),
        "rng.": trainer.random.checkpoint_state(),
    }
    assert sorted(tensors) == sorted(prefix + name for prefix, (state, _) in parts.items() for name in state)
    settings = json.loads(json.dumps({"optimizers": parts[""][1], "psi": parts["psi."][1], "device": "cpu"}))
    assert {key: meta[key] for key in settings} == settings
    assert all(name.startswith(("scene.", "optim.")) for name in parts[""][0])
