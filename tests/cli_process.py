"""Start the esd-gs CLI in the background, for tests that talk to it (or signal it) while it runs."""

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
