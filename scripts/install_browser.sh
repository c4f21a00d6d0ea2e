#!/usr/bin/env bash
# The browser of the viewer tests: Debian's Chromium at /usr/bin/chromium (driven by Playwright's Python client, which
# the test extra installs without its own browser download). Installs it when missing and apt-get can (as root);
# otherwise says why, and the browser tests skip with that reason. Also installs three.js from npm (tests/web) for
# the mesh test's glTF viewer, into .cache/web, when npm is there.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if command -v npm >/dev/null 2>&1 && [ ! -f .cache/web/node_modules/three/build/three.module.js ]; then
    mkdir -p .cache/web && cp tests/web/package.json .cache/web/
    (cd .cache/web && npm install --no-audit --no-fund --silent >/dev/null 2>&1) \
        || echo "[esd-gs] could not install three.js from npm: the mesh browser test will be skipped" >&2
fi
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "[esd-gs] no /usr/bin/chromium and no root apt-get to install it: the browser tests will be skipped" >&2
    exit 0
fi
echo "[esd-gs] installing Debian's chromium for the browser tests (one time) ..." >&2
if ! (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)); then
    echo "[esd-gs] could not install chromium: the browser tests will be skipped" >&2
fi
exit 0
