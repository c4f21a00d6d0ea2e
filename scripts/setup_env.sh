#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install esd-gs into it.
#
# - Reuses .venv when it already holds an install of the current pyproject.toml.
# - If the system Python already has a torch (for example a CUDA build on a GPU machine), the venv
#   sees it (--system-site-packages) and keeps it: nothing replaces that torch.
# - Otherwise it installs the CPU build torch==2.13.0 first, so that no CUDA wheels are downloaded.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
VENV=.venv
STAMP="$VENV/.esd-gs-installed"
want=$(cat pyproject.toml scripts/setup_env.sh | sha256sum | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    exit 0
fi
echo "[esd-gs] setting up $VENV (one time) ..." >&2
if "$PY" -c "import torch" >/dev/null 2>&1; then
    echo "[esd-gs] keeping the system's torch $("$PY" -c 'import torch; print(torch.__version__)')" >&2
    "$PY" -m venv --system-site-packages "$VENV"
else
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q "torch==2.13.0"
fi
"$VENV/bin/python" -m pip install -q -e ".[test]"
echo "$want" > "$STAMP"
