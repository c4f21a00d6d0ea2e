"""A user's finished work is never lost: --overwrite keeps the old run until the new one finishes; a full disk or a
signal on a full disk ends in one line, a truthful run.json and the documented exit code."""

import json
import signal
import time

from small_disk import small_disk
from test_generate import esd_gs, start

QUICK = [
    "--preset",
    "synthetic",
    "--prior.num-images",
    "16",
    "--output.turntable-views",
    "4",
    "--output.turntable-size",
    "32",
    "--output.preview-every",
    "0",
    "--init.num-points",
    "300",
]


def status(run):
    return json.loads((run / "run.json").read_text())["status"]


def lines(path):
    return len(path.read_text().splitlines()) if path.exists() else 0


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("esd-gs: error:")]


def test_overwrite_keeps_the_old_run_until_the_new_one_finishes(tmp_path):
    run = tmp_path / "run"
    first = esd_gs("generate", "a head", *QUICK, "--steps", "5", "--seed", "1", "--out", run)
    assert first.returncode == 0, first.stderr[-2000:]
    old_scene = (run / "scene.ply").read_bytes()

    # A replacing run interrupted midway: the finished run is still there, whole, and the user is told where.
    proc = start("generate", "a head", *QUICK, "--steps", "400", "--seed", "2", "--out", run, "--overwrite")
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # the old run's metrics are set aside first
        if (run / "replaced-run" / "metrics.jsonl").exists() and lines(run / "metrics.jsonl") >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert f"the run this one replaces is kept in {run / 'replaced-run'}" in " ".join(stderr.split())
    assert (run / "replaced-run" / "scene.ply").read_bytes() == old_scene
    assert json.loads((run / "replaced-run" / "run.json").read_text())["status"] == "finished"

    # Without --overwrite nothing may be reused; a second --overwrite keeps the finished run, not the interrupted one.
    refused = esd_gs("generate", "a head", *QUICK, "--steps", "5", "--out", run)
    assert refused.returncode == 2
    final = esd_gs("generate", "a head", *QUICK, "--steps", "5", "--seed", "3", "--out", run, "--overwrite")
    assert final.returncode == 0, final.stderr[-2000:]
    assert not (run / "replaced-run").exists()  # removed once the new run finished
    assert status(run) == "finished" and (run / "scene.ply").read_bytes() != old_scene


def test_a_full_disk_during_a_run_is_one_line_exit_1_and_status_failed(tmp_path):
    with small_disk(tmp_path / "disk", 200) as disk:  # config, status and metrics fit; a checkpoint does not
        run = disk / "run"
        result = esd_gs("generate", "a head", *QUICK, "--steps", "20", "--output.checkpoint-every", "0.5", "--out", run)
        assert result.returncode == 1, result.stderr[-3000:]
        assert "Traceback" not in result.stderr
        lines = error_lines(result.stderr)
        assert len(lines) == 1 and "No space left on device" in lines[0], result.stderr[-3000:]
        assert status(run) == "failed"


def test_sigterm_on_a_full_disk_still_exits_143_with_a_truthful_status(tmp_path):
    with small_disk(tmp_path / "disk", 200) as disk:
        run = disk / "run"
        proc = start("generate", "a head", *QUICK, "--steps", "2000", "--output.checkpoint-every", "0", "--out", run)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if lines(run / "metrics.jsonl") >= 3:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 143, stderr[-3000:]
        assert "Traceback" not in stderr
        assert "could not save a checkpoint: No space left on device" in " ".join(stderr.split())
        assert status(run) == "failed"  # no complete checkpoint exists, so it does not claim to be resumable
        assert "resume with --resume" not in stderr and "nothing was saved that --resume could continue" in stderr


def test_a_full_disk_at_the_final_save_is_one_line_naming_the_file(tmp_path):
    with small_disk(tmp_path / "disk", 200) as disk:
        run = disk / "run"
        result = esd_gs("generate", "a head", *QUICK, "--steps", "6", "--output.checkpoint-every", "0", "--out", run)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
        (line,) = error_lines(result.stderr)
        assert "No space left on device" in line and str(run / "checkpoint") in line
        assert status(run) == "failed"


def test_sigterm_during_the_final_turntable_saves_and_says_so(tmp_path):
    run = tmp_path / "run"
    proc = start(
        "generate",
        "a head",
        *QUICK,
        "--steps",
        "4",
        "--output.checkpoint-every",
        "0",
        "--output.turntable-views",
        "1200",
        "--output.turntable-size",
        "32",
        "--out",
        run,
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # the final checkpoint is written just before the turntable
        if (run / "checkpoint" / "meta.json").exists():
            break
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-3000:]
    assert "SIGTERM: saving a checkpoint and the scene at step 4" in " ".join(stderr.split())
    assert status(run) == "interrupted" and (run / "scene.ply").is_file()
    resumed = esd_gs("generate", "--resume", run)
    assert resumed.returncode == 0 and status(run) == "finished", resumed.stderr[-2000:]


def test_a_signal_during_the_set_aside_waits_until_it_is_done():
    """signals_held: a Ctrl-C inside the block is delivered only after it, so the renames are never cut in half."""
    import os

    import pytest

    from esd_gs.training.run_dir import signals_held

    reached_end = False
    # Python's own Ctrl-C handler, whatever this process inherited (a background job of a shell starts with SIGINT
    # ignored).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    with pytest.raises(KeyboardInterrupt):
        with signals_held():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)  # an unheld SIGINT would have raised by now
            reached_end = True
    signal.signal(signal.SIGINT, previous)
    assert reached_end
