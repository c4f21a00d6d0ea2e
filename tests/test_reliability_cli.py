"""Issue 33 (reliability, round two), the command line's share: FIFOs where a config or job file is read, Ray
addresses that cannot answer, deeply nested YAML / JSON, values out of range, a --cache-dir that is a file, Ray's
banner before a batch's error, signals during start-up and hidden temporary names in errors. Each bad input ends as
one stderr line and exit 2 before anything is written; a signal during start-up as one line and 128 + signal.

What could hang (a FIFO, an address) or concerns what reaches the terminal (Ray's banner, a signal, a file name), and
one case of each other kind, runs the real command in a subprocess with a timeout; the variants call ``main``
in-process, as tests/test_bad_input.py does, to stay fast. One test starts a local Ray (SIGTERM during its start)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
import yaml
from cli_process import run_cli, start_cli

from esd_gs.cli.main import main
from esd_gs.testing.small_jobs import SMALL_SYNTHETIC

ROOT = Path(__file__).resolve().parents[1]
HEAD = ROOT / "assets" / "head.ply"
DEEP = 3000
"""Nesting of the deep files (the issue's: far past Python's recursion limit)."""
ENV = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="150", RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1")


def cli(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    return run_cli(*args, env=ENV, timeout=timeout)


def one_line(stderr: str, expected: str, start: str = "esd-gs: error: ") -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(start) and expected in lines[0], stderr[-3000:]
    return lines[0]


def refused_by_cli(done: subprocess.CompletedProcess, expected: str) -> str:
    assert done.returncode == 2, done.stderr[-3000:]
    return one_line(done.stderr, expected)


def refused(argv, capsys, expected) -> str:
    """In-process ``main``: exit 2 and one stderr line holding ``expected``."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    return one_line(err, expected)


def jobs_file(path: Path, **extra) -> Path:
    path.write_text(yaml.safe_dump([{"prompt": "a head", **SMALL_SYNTHETIC, **extra}]))
    return path


SYNTHETIC = [
    "--preset",
    "synthetic",
    "--prior.num-images",
    "8",
    "--steps",
    "2",
    "--output.turntable-views",
    "2",
    "--output.turntable-size",
    "32",
    "--output.preview-every",
    "0",
]
"""A run that takes seconds, should a value be accepted."""
SMALL_PRESET = (
    "prior: {name: synthetic, num_images: 8}\nresolution: 32\nresolution_start: null\nsteps: 2\n"
    "output: {turntable_views: 2, turntable_size: 32, preview_every: 0}\n"
)
"""The same as a config file (--config)."""


# ---------------------------------------------------------------------------------------------- 2: FIFOs
@pytest.mark.parametrize(
    "command",
    [
        ["doctor", "--preset", "synthetic", "--config", "{fifo}"],
        ["batch", "{fifo}", "--out", "{out}"],
        ["batch", "{jobs}", "--config", "{fifo}", "--out", "{out}"],
        ["generate", "a head", "--config", "{fifo}", "--out", "{out}"],
    ],
    ids=["doctor-config", "batch-job-file", "batch-config", "generate-config"],
)
def test_a_fifo_for_a_config_or_job_file_is_refused_at_once(tmp_path, command):
    fifo = tmp_path / "f.yaml"
    os.mkfifo(fifo)
    names = {"fifo": fifo, "out": tmp_path / "out", "jobs": jobs_file(tmp_path / "jobs.yaml")}
    line = refused_by_cli(cli(*[a.format(**names) for a in command], timeout=60), "is not a regular file")
    assert str(fifo) in line and "does not exist" not in line
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------- 3: Ray addresses
def test_batch_addresses_that_cannot_answer_are_refused_at_once(tmp_path):
    jobs = jobs_file(tmp_path / "jobs.yaml")
    with socket.socket() as closed:  # bound, never listening: connections to it are refused (no other host touched)
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        for address, expected in (
            ("256.0.0.1:6379", "--address 256.0.0.1:6379"),
            ("127.0.0.1:70000", "the port must be a number in 1..65535"),
            (f"127.0.0.1:{port}", f"127.0.0.1:{port}"),
        ):
            start = time.monotonic()
            done = cli("batch", jobs, "--out", tmp_path / "out", "--address", address, timeout=90)
            refused_by_cli(done, expected)
            assert time.monotonic() - start < 60
            assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "address, ok",
    [
        ("auto", True),
        ("local", True),
        ("127.0.0.1:6379", True),
        ("localhost:6379", True),
        ("ray://127.0.0.1:10001", True),
        ("[::1]:6379", True),
        ("256.0.0.1:6379", False),
        ("1.2.3:6379", False),
        ("127.0.0.1", False),
        ("127.0.0.1:0", False),
        ("127.0.0.1:http", False),
        (":6379", False),
        ("http://127.0.0.1:6379", False),
        ("ray://", False),
        ("host name:6379", False),
    ],
)
def test_address_forms(address, ok):
    from esd_gs.batch.runner import check_address
    from esd_gs.errors import UserError

    if ok:
        check_address(address, resolve=False)
    else:
        with pytest.raises(UserError, match="--address"):
            check_address(address, resolve=False)


# ---------------------------------------------------------------------------------------------- 4: deep nesting
def deep_yaml(depth: int = DEEP) -> str:
    return "steps: " + "[" * depth + "]" * depth + "\n"


def test_a_deeply_nested_preset_is_one_line_from_the_cli(tmp_path):
    preset = tmp_path / "deep.yaml"
    preset.write_text(deep_yaml())
    done = cli("generate", "a head", "--config", preset, "--out", tmp_path / "out")
    refused_by_cli(done, "is nested too deeply")
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize("depth", [DEEP, 200])
@pytest.mark.parametrize("where", ["generate-config", "doctor-config", "resume", "batch-yaml", "batch-json"])
def test_deeply_nested_yaml_and_json_are_one_line(tmp_path, capsys, where, depth):
    out = tmp_path / "out"
    if where == "batch-json":
        jobs = tmp_path / "jobs.json"
        jobs.write_text("[" * depth + "]" * depth)
        argv = ["batch", jobs, "--out", out]
    elif where == "batch-yaml":
        jobs = tmp_path / "jobs.yaml"
        jobs.write_text("- prompt: a head\n  " + deep_yaml(depth))
        argv = ["batch", jobs, "--out", out]
    else:
        preset = tmp_path / "config.yaml"
        preset.write_text(deep_yaml(depth))
        argv = {
            "generate-config": ["generate", "a head", "--config", preset, "--out", out],
            "doctor-config": ["doctor", "--preset", "synthetic", "--config", preset],
            "resume": ["generate", "--resume", tmp_path],  # tmp_path holds config.yaml, no run.json
        }[where]
    refused(argv, capsys, "is nested too deeply")
    assert not out.exists()


# ---------------------------------------------------------------------------------------------- 9: ranges
@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--timesteps.anneal-at", "-1"], "--timesteps.anneal-at must be"),
        (["--timesteps.anneal-at", "5"], "--timesteps.anneal-at must be"),
        (["--timesteps.anneal-at", "nan"], "--timesteps.anneal-at must be"),
        (["--timesteps.name", "dreamtime", "--timesteps.dreamtime-s1", "0"], "--timesteps.dreamtime-s1 must be"),
        (["--timesteps.name", "dreamtime", "--timesteps.dreamtime-m1", "nan"], "--timesteps.dreamtime-m1 must be"),
        (["--timesteps.dreamtime-m1", "400"], "--timesteps.dreamtime-m2"),  # m2 (500) above m1: no flat top
        (["--cameras.radius", "1", "inf"], "--cameras.radius must be"),
    ],
)
def test_values_out_of_range_are_refused(tmp_path, capsys, flags, expected):
    refused(["generate", "a head", *SYNTHETIC, "--out", tmp_path / "out", *flags], capsys, expected)
    assert not (tmp_path / "out").exists()


def test_a_preset_with_an_infinite_camera_radius(tmp_path, capsys):
    preset = tmp_path / "preset.yaml"
    preset.write_text(SMALL_PRESET + "cameras: {radius: [1, .inf]}\n")
    refused(["generate", "a head", "--config", preset, "--out", tmp_path / "out"], capsys, "--cameras.radius must be")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("seconds", ["nan", "-1", "0", "inf"])
def test_view_refuses_a_time_that_is_not_a_positive_number(capsys, seconds):
    with socket.socket() as probe:  # if it were accepted, the viewer would not take a port in use
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    refused(["view", HEAD, "--port", port, "--seconds", seconds], capsys, "--seconds must be")


# ---------------------------------------------------------------------------------------------- 11: --cache-dir
def test_evaluate_refuses_a_cache_dir_that_is_a_file_before_any_work(tmp_path):
    """The issue's case: with every model there (a tiny CLIP, a synthetic run whose prior needs no download), evaluate
    loaded CLIP and rendered its 120 views (progress bars) before finding that --cache-dir is a file."""
    from esd_gs.testing.tiny_eval import build_tiny_clip

    clip = build_tiny_clip(tmp_path / "clip")
    run = tmp_path / "run"
    shutil.copytree(ROOT / "tests" / "data" / "janus-runs" / "esd", run)
    cache = tmp_path / "cache"
    cache.write_text("a file")
    before = sorted(p.name for p in run.iterdir())
    done = cli(
        "evaluate", run, "--metrics", "fid", "--fid-features", "clip", "--clip-model", clip,
        "--cache-dir", cache / "sub", "--device", "cpu",
    )  # fmt: skip
    refused_by_cli(done, "--cache-dir")
    assert "━" not in done.stderr + done.stdout and "evaluating" not in done.stderr  # no progress ran (bar or log line)
    assert sorted(p.name for p in run.iterdir()) == before  # no eval.json / eval.png


# ---------------------------------------------------------------------------------------------- 10: Ray's banner
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_batch_refuses_cuda_jobs_without_a_gpu_before_starting_ray(tmp_path):
    jobs = jobs_file(tmp_path / "jobs.yaml", device="cuda")
    start = time.monotonic()
    done = cli("batch", jobs, "--out", tmp_path / "out", timeout=300)
    refused_by_cli(done, "--device cuda")
    assert time.monotonic() - start < 60 and not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------- 16: hidden names
def test_an_error_names_the_file_not_its_hidden_temporary(tmp_path):
    """A disk without a free inode: creating export's temporary file fails, and the line names the file asked for."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,nr_inodes=2", "tmpfs", str(disk)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        with contextlib.suppress(OSError):
            for index in range(4):  # every inode taken
                (disk / f"filler{index}").touch()
        done = cli("export", HEAD, "--to", disk / "out.splat")
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
    assert done.returncode == 1, done.stderr[-3000:]
    line = one_line(done.stderr, "No space left on device")
    assert line.endswith(f"({disk / 'out.splat'})") and ".tmp" not in line


def test_public_names_hide_every_temporary_name():
    from esd_gs.errors import public_names

    assert public_names("[Errno 28] No space left on device: '/r/.scene.0123456789ab.tmp.ply'") == (
        "[Errno 28] No space left on device: '/r/scene.ply'"
    )
    assert public_names("cannot write /r/.checkpoint.0123456789ab.tmp, /c/.f3.partial/a.bin") == (
        "cannot write /r/checkpoint, /c/f3/a.bin"
    )
    assert public_names("/r/.a.b.0123456789ab.tmp.json: x") == "/r/a.b.json: x"
    assert public_names("/r/.hidden.ply and .tmp.ply stay") == "/r/.hidden.ply and .tmp.ply stay"


# ---------------------------------------------------------------------------------------------- 13: signals
def _wait_for(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the command never reached the point to signal it at"
        time.sleep(0.005)


def _maps(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_the_console_entry_point_imports_nothing_heavy():
    code = "import sys, esd_gs.cli.main; print(sorted({'torch', 'tyro', 'ray'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc")
def test_sigint_while_generate_imports_torch_is_one_line(tmp_path):
    out = tmp_path / "out"
    proc = start_cli("generate", "a head", *SYNTHETIC, "--out", out, env=ENV)
    try:
        _wait_for(proc, lambda: "libtorch" in _maps(proc.pid))  # inside `import torch`
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGINT, stderr[-3000:]
    assert one_line(stderr, "", start="esd-gs: interrupted") == "esd-gs: interrupted"
    assert not out.exists()


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc")
def test_sigterm_while_batch_starts_ray_is_one_line(tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "out"
    jobs = jobs_file(tmp_path / "jobs.yaml")
    ray_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    env = dict(ENV, RAY_TMPDIR=ray_dir)
    proc = start_cli("batch", jobs, "--out", out, env=env)
    try:
        _wait_for(proc, lambda: bool(_children(proc.pid)))  # Ray's first process is up: ray.init is under way
        started = set(_children(proc.pid))
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
        shutil.rmtree(ray_dir, ignore_errors=True)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    one_line(stderr, "", start="esd-gs: interrupted")
    assert not out.exists()
    deadline = time.monotonic() + 30  # Ray's processes go with it
    while any(Path(f"/proc/{pid}").exists() and "Z" not in _state(pid) for pid in started):
        assert time.monotonic() < deadline, f"left running: {started}"
        time.sleep(0.2)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


def test_no_nan_in_a_yaml_number(tmp_path, capsys):
    """YAML's .nan reaches the component checks as a float; they refuse it (DreamTime's m1 from a preset)."""
    preset = tmp_path / "preset.yaml"
    preset.write_text(SMALL_PRESET + "timesteps: {dreamtime_m1: .nan}\n")
    refused(["generate", "a head", "--config", preset, "--out", tmp_path / "out"], capsys, "dreamtime-m1 must be")


def test_the_ray_hook_batch_relies_on_still_exists():
    """batch keeps Ray from installing its SIGTERM handler during ``ray.init`` through Ray's private
    ``ray._private.utils.set_sigterm_handler`` (runner._start_ray); without it a SIGTERM during the start would exit
    mid-start again. A Ray upgrade that renames it must fail here, not silently."""
    ray = pytest.importorskip("ray")
    import ray._private.utils as utils

    assert callable(getattr(utils, "set_sigterm_handler", None)), ray.__version__
