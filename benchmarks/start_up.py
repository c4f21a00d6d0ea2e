"""How long a user looks at a blank terminal: run ``esd-gs generate`` in a pseudo-terminal 80 columns wide and report
when its first visible character came, when each start-up stage was first shown, and when the first progress line
came (issue 30). ``--checkout DIR`` times another checkout's code (for a before/after on one machine).

    .venv/bin/python benchmarks/start_up.py [--checkout DIR] [--runs 3]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import re
import select
import statistics
import struct
import sys
import tempfile
import termios
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\[\?25[lh]")
MARKS = {
    "first character": None,
    "loading torch": "loading torch",
    "reading the options": "reading the options",
    "phi": "phi: ",
    "theta's optimisers": "optimisers",  # after the start (theta: ...) and phi: the prior built
    "first progress line": "generating",
}


def timed_run(checkout: Path, out: Path, columns: int = 80) -> dict[str, float]:
    """Seconds from the start to each of ``MARKS`` (absent: never shown) of one small synthetic run."""
    argv = [sys.executable, "-m", "esd_gs", "generate", "a head", "--preset", "synthetic", "--steps", "2"]
    argv += ["--out", str(out), "--overwrite", "--output.turntable-views", "4", "--output.video-formats", "gif"]
    env = dict(os.environ, PYTHONPATH=str(checkout), OMP_NUM_THREADS="1")
    start = time.perf_counter()
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(checkout)
        os.execve(argv[0], argv, env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    seen: dict[str, float] = {}
    text = ""
    while select.select([fd], [], [], 600)[0]:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        now = time.perf_counter() - start
        text += ANSI.sub("", data.decode("utf-8", "replace"))
        for name, needle in MARKS.items():
            if name not in seen and (text.strip() if needle is None else needle in text):
                seen[name] = now
    os.waitpid(pid, 0)
    os.close(fd)
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the esd-gs checkout whose code is timed")
    parser.add_argument("--runs", type=int, default=3, help="runs; the median is reported")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        runs = [timed_run(args.checkout.resolve(), Path(folder) / f"run{i}") for i in range(args.runs)]
    print(f"{args.checkout}: seconds from the command, median of {args.runs} runs, 80-column terminal")
    for name in MARKS:
        times = [run[name] for run in runs if name in run]
        shown = f"{statistics.median(times):6.2f}" if len(times) == len(runs) else "   not shown"
        print(f"  {name:<20} {shown}")


if __name__ == "__main__":
    main()
