#!/usr/bin/env bash
# The browser of the viewer tests: Debian's Chromium at /usr/bin/chromium (driven by Playwright's Python client, which
# the test extra installs without its own browser download). Installs it when missing and apt-get can (as root);
# otherwise says why, and the browser tests skip with that reason.
set -uo pipefail
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
