"""What a user sees in the terminal (issue 30): a progress line that fits 80 columns with a readable ETA (in a real
pseudo-terminal of that width), plain periodic lines without control sequences in a log, a rate per run where a task
is a run, batch's last line, the numbers generate shows (``grad``, ``psi``) and the start-up stages, first of them
before torch is imported."""

import fcntl
import io
import math
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import textwrap
from pathlib import Path

import pytest
import torch
from rich.console import Console

from esd_gs.progress import LineProgress, console, format_duration, format_rate, stage, stage_log, task_line

ROOT = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Clock:
    """A clock the test moves by hand: rates and ETAs without timing anything."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run_in_pty(argv: list[str], columns: int, env: dict | None = None, timeout: float = 120) -> list[tuple[int, str]]:
    """Run ``argv`` in a pseudo-terminal ``columns`` wide; returns what it wrote, as (index of the chunk, text)."""
    # the terminal's own size, not one inherited from the environment (COLUMNS and LINES override it for rich)
    env = {k: v for k, v in (env or os.environ).items() if k not in ("COLUMNS", "LINES")}
    pid, fd = pty.fork()
    if pid == 0:  # the child: its stdin, stdout and stderr are the terminal, sized before the program starts
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        os.chdir(ROOT)
        os.execve(argv[0], argv, env)
    chunks = []
    while True:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            os.kill(pid, 9)
            raise AssertionError(f"no output for {timeout} s from {argv}")
        try:
            data = os.read(fd, 65536)
        except OSError:  # the child ended
            break
        if not data:
            break
        chunks.append((len(chunks), data.decode("utf-8", "replace")))
    os.waitpid(pid, 0)
    os.close(fd)
    return chunks


def frames(output: str) -> list[str]:
    """What a terminal showed on the progress line, one text per redraw (control sequences removed)."""
    return [ANSI.sub("", part).strip() for part in re.split(r"\r|\x1b\[2K", output) if ANSI.sub("", part).strip()]


GENERATE_LIKE = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from esd_gs.progress import LineProgress
    from esd_gs.training.trainer import PROGRESS_FIELDS
    now = [0.0]
    with LineProgress(*PROGRESS_FIELDS, get_time=lambda: now[0]) as progress:
        task = progress.add_task("generating", total=2500, unit="step", gaussians=1500)
        for step in range(1, 301):
            now[0] += 0.8  # 1.25 steps a second: the ETA is 2,200 steps / 1.25 = 29:20 at step 300
            progress.update(task, completed=step, grad=0.0829, psi=0.123, skipped=None, gaussians=24000 + step)
            progress.refresh()
    """
)


def test_the_progress_line_fits_an_80_column_terminal_with_a_readable_eta():
    """The issue's case: at 80 columns rich's table wrapped ``it/s`` onto a second line and cut the ETA to
    ``0:00:…``. In a real 80-column pseudo-terminal every redraw is one line (the display never moves the cursor up),
    at most 80 wide, and ends with the ETA in full."""
    script = GENERATE_LIKE.format(root=str(ROOT))
    output = "".join(text for _, text in run_in_pty([sys.executable, "-c", script], columns=80))
    assert "\x1b[1A" not in output  # a live display of two lines moves the cursor up before each redraw
    shown = frames(output)
    assert shown and all(len(line) <= 80 for line in shown), max(shown, key=len)
    last = shown[-1]
    assert re.search(r"generating ━+  300/2500  1\.25 step/s( \d:\d\d)? ETA 29:2\d grad 0\.0829 psi 0\.123", last), last
    assert "…" not in last


def test_a_narrower_terminal_keeps_the_eta_and_drops_the_bar_then_the_fields():
    clock = Clock()
    progress = LineProgress("grad", "psi", "gaussians", output=Console(file=io.StringIO(), width=80), get_time=clock)
    task_id = progress.add_task("evaluating a-very-long-run-name: clip", total=120, grad=0.5, psi=0.01, gaussians=9)
    for _ in range(60):
        clock.now += 2.0
        progress.advance(task_id)
    task = progress.tasks[0]
    for width in (80, 60, 40):
        line = task_line(task, width, progress.fields).plain
        assert len(line) <= width and "ETA 2:00" in line, (width, line)
    assert "━" in task_line(task, 100, progress.fields).plain
    assert "━" not in task_line(task, 40, progress.fields).plain


def test_plain_lines_in_a_log_at_each_tenth_without_control_sequences():
    """Redirected to a file, rich's display wrote nothing until the end (then its last state, wrapped); now: a plain
    line at each tenth, rate and ETA readable, not one escape character."""
    log = io.StringIO()
    clock = Clock()
    with LineProgress("grad", output=Console(file=log), get_time=clock, min_gap_s=5.0) as progress:
        task = progress.add_task("generating", total=100, unit="step")
        for step in range(1, 101):
            clock.now += 2.0
            progress.update(task, completed=step, grad=0.25)
    text = log.getvalue()
    assert "\x1b" not in text and "━" not in text
    lines = text.splitlines()
    assert lines[0].startswith("generating 1/100 1% ")  # the task's first line says it started
    assert "generating 50/100 50% 2.0 s/step elapsed 1:40 ETA 1:40 grad 0.25" in lines
    assert lines[-1] == "generating 100/100 100% 2.0 s/step elapsed 3:20 ETA 0:00 grad 0.25"
    assert len(lines) == 11  # the start, then each tenth


def test_a_task_of_runs_shows_seconds_per_run_and_its_stages_no_rate():
    """compare showed 2.44 s/it while a run took 25 s: the rate shown was the stages' of one evaluation. Now the
    ``comparing`` task counts runs (``unit="run"``, ``evaluation/compare.py``) and an evaluation's stages
    (``rate=False``, ``evaluation/evaluate.py``) show none. Runs of 75 s, longer than the display's 30 s window (in
    which rich then holds under two samples), still get a rate."""
    clock = Clock()
    progress = LineProgress(output=Console(file=io.StringIO(), width=100), get_time=clock)
    runs = progress.add_task("comparing", total=3, unit="run")
    for _ in range(2):
        stages = progress.add_task("evaluating esd", total=10, rate=False)
        for _ in range(10):
            clock.now += 7.5
            progress.advance(stages)
        progress.remove_task(stages)
        progress.advance(runs)
    stages = progress.add_task("evaluating vsd", total=10, rate=False)
    progress.advance(stages)
    comparing, evaluating = (task_line(task, 100).plain for task in progress.tasks)
    assert re.search(r" 7\d\.\d s/run ", comparing) and re.search(r"ETA 1:\d\d", comparing), comparing
    assert "/s" not in evaluating and "ETA" not in evaluating and "1/10" in evaluating, evaluating


def test_a_slow_task_counts_the_wait_for_its_first_item():
    """batch's first job took 13 s and its second 2 s: 7.5 s a job, not the 2 s between the two (rich's estimate
    starts at the first item done)."""
    clock = Clock()
    progress = LineProgress(output=Console(file=io.StringIO(), width=100), speed_window=24 * 3600, get_time=clock)
    jobs = progress.add_task("batch", total=4, unit="job")
    for seconds in (13.0, 2.0):
        clock.now += seconds
        progress.advance(jobs)
    line = task_line(progress.tasks[0], 100, window=24 * 3600).plain
    assert " 7.5 s/job 0:15 ETA 0:15" in line, line  # 15 s so far, 2 jobs to go


def test_rates_and_durations_read_the_same_at_any_speed():
    assert format_rate(9.534, "step") == " 9.53 step/s"
    assert format_rate(0.04, "run") == " 25.0 s/run"
    assert format_rate(None) == "-- it/s"
    assert [format_duration(s) for s in (None, 5, 65, 3600 + 62)] == ["--", "0:05", "1:05", "1:01:02"]


def test_a_stage_is_one_plain_line_in_a_log_before_the_next_line_and_none_when_it_failed(capsys):
    with stage("a library's stage, outside a command: no line"):
        pass
    with stage_log(), stage("phi: loading Stable Diffusion"):
        pass
    with stage("esd-gs generate: loading torch", terminal_only=True):
        pass
    with stage_log():
        with pytest.raises(ValueError), stage("psi: building the lora estimator"):
            raise ValueError("a failure: its own line is the only one")
        with stage("phi: loading Stable Diffusion"):
            pass
        assert capsys.readouterr().err == ""  # nothing yet: an error now would be the only line
        console.print("resuming runs/x at step 3 of 6")
    err = capsys.readouterr().err
    assert re.fullmatch(r"phi: loading Stable Diffusion: 0\.\d s\nresuming runs/x at step 3 of 6\n", err), err


def test_generate_shows_grad_and_psi_and_keeps_them_in_metrics(tmp_path):
    """The displayed "loss" rose over a good run; the line now shows the gradient's root mean square and psi's own
    loss, and metrics.jsonl keeps ``grad_rms`` beside ``loss`` (the target trick's 0.5 ||g||^2 / B: the same size,
    squared)."""
    from small_runs import small_synthetic_config

    from esd_gs.pipeline.build import build_trainer
    from esd_gs.training.trainer import progress_fields

    config = small_synthetic_config(3, psi={"name": "residual"})
    trainer = build_trainer(config, tmp_path / "run", torch.device("cpu"))
    grads, step = [], trainer.distill.step
    trainer.distill.step = lambda *args, **kwargs: _kept(step(*args, **kwargs), grads)
    rows = [trainer.train_step() for _ in range(3)]
    for row, grad in zip(rows, grads):
        assert row["grad_rms"] == pytest.approx(math.sqrt(float(grad.double().square().mean())), rel=1e-6)
        assert row["grad_rms"] > 0 and row["psi_loss"] is not None
        shown = progress_fields(row)
        assert shown["grad"] == row["grad_rms"] and shown["psi"] == row["psi_loss"] and shown["skipped"] is None


def _kept(output, grads: list):
    grads.append(output.grad)
    return output


def cli_env() -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


SMALL_RUN = [
    "generate", "a head", "--preset", "synthetic", "--steps", "4", "--prior.num-images", "16",
    "--init.num-points", "200", "--output.turntable-views", "4", "--output.turntable-size", "16",
    "--output.video-formats", "gif", "--output.preview-every", "0",
]  # fmt: skip


def test_generate_names_each_start_up_stage_in_a_log(tmp_path):
    """Piped (not a terminal): a plain line per stage, in order, and no control sequence anywhere."""
    done = subprocess.run(
        [sys.executable, "-m", "esd_gs", *SMALL_RUN, "--out", str(tmp_path / "run")],
        capture_output=True, text=True, cwd=ROOT, env=cli_env(), timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stderr.splitlines()
    expected = ["theta: random Gaussians in a ball", "phi: building the synthetic prior", "encoding the prompt"]
    expected += ["psi: building the residual estimator", "theta: the Gaussians' optimisers"]
    where = [next(i for i, line in enumerate(lines) if line.startswith(text)) for text in expected]
    assert where == sorted(where)
    assert any(line.startswith("generating 4/4 100%") for line in lines), lines
    assert "\x1b" not in done.stderr


def test_the_first_line_comes_before_torch_is_imported(tmp_path):
    """In a terminal, the spinner names the first stage before ``import torch`` (seconds): the process's first
    output is it, and the stages follow in order."""
    argv = [sys.executable, "-X", "importtime", "-m", "esd_gs", *SMALL_RUN, "--out", str(tmp_path / "run")]
    chunks = run_in_pty(argv, columns=100, env=cli_env(), timeout=300)
    text = "".join(text for _, text in chunks)
    first_stage = text.index("esd-gs generate: loading torch")
    torch_imported = re.search(r"\|\s*torch\r?\n", text)
    assert torch_imported and first_stage < torch_imported.start(), "the first line came after torch was imported"
    order = [text.index(s) for s in ("loading torch", "phi: building the synthetic prior", "generating")]
    assert order == sorted(order)


def test_generate_help_says_what_the_numbers_mean(capsys):
    from esd_gs.cli.main import main

    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Progress shows grad (the gradient's RMS: it grows as t falls) and psi's loss." in text


def test_a_stage_longer_than_the_terminal_stays_one_line():
    """A stage's spinner line wrapped at 80 columns (``phi: building the synthetic UNet prior ...``); now it is
    shortened to the terminal's width."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from esd_gs.progress import stage
        with stage("phi: " + "a long stage name " * 8):
            pass
        """
    )
    output = "".join(text for _, text in run_in_pty([sys.executable, "-c", script], columns=60))
    shown = [line for line in frames(output) if "phi:" in line]
    assert shown and all(len(line) <= 60 and line.endswith("…") for line in shown), shown
    assert all(len(ANSI.sub("", line)) <= 60 for line in output.split("\n"))  # no line longer: none wrapped
