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
# --durations: the slowest tests, to keep the suite inside its 10 minutes.
exec .venv/bin/python -m pytest -q --durations=15 "$@"
