"""Run the esd-gs CLI as a real process: to its end (``run_cli``), or in the background for tests that talk to it
(or signal it) while it runs (``start_cli``)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start_cli(*args, env: dict) -> subprocess.Popen:
    """``python -m esd_gs *args`` from the repository root, stdout and stderr captured as text."""
    return subprocess.Popen(
        [sys.executable, "-m", "esd_gs", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )


def run_cli(*args, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m esd_gs *args`` from the repository root, to its end; a command that hangs fails the test at
    ``timeout`` (and is killed)."""
    return subprocess.run(
        [sys.executable, "-m", "esd_gs", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=timeout,
    )
