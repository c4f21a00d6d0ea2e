#!/usr/bin/env bash
# Run the checks: set up .venv (first time only), then ruff and pytest, offline (no Hugging Face Hub).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup_env.sh
bash scripts/install_browser.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# Lint (pyflakes, pycodestyle, bugbear), import order and formatting, as configured in pyproject.toml.
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Two test processes (pytest-xdist), a test file each at a time, one torch thread each: the tests' tiny models
# keep one core busy, not two, and two torch threads per process on 2 cores oversubscribe them (BENCHMARKS.md, "Test
# suite"). Subprocesses of the CLI inherit the thread count. --durations: the slowest tests, to keep the suite inside
# its 10 minutes. Extra arguments go to pytest (`-n 0`: one process).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
exec .venv/bin/python -m pytest -q -n 2 --dist loadfile --durations=15 "$@"
