"""The headless browser of the browser tests and benchmarks: Debian's Chromium (installed by
scripts/install_browser.sh), driven by Playwright, WebGL on SwiftShader (no GPU), and no background traffic to the
machine's closed network."""

from __future__ import annotations

from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--ignore-gpu-blocklist",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
