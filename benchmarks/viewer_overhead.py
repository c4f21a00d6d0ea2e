"""What does `generate --viewer` cost the training loop? Side by side, in one run, alternating order.

The same small synthetic-prior run (``--steps``, 200 Gaussians, 16 prior images, 32 px) three ways: without the
viewer, with it and nobody watching, and with it while a headless Chromium shows the live page (Debian's
/usr/bin/chromium driven by Playwright). Reports the wall time of the training loop (from the process start to its
end, so the viewer's start and every refresh count) and its ratio to the run without the viewer. The browser draws
on the same two cores (SwiftShader, no GPU), so the last way also measures that competition.

    .venv/bin/python benchmarks/viewer_overhead.py --steps 600 --rounds 2 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from esd_gs.testing.browser import CHROMIUM, CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, HF_HUB_OFFLINE="1")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run(steps: int, out: Path, viewer: bool, watch: bool) -> float:
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "esd_gs",
        "generate",
        "a head",
        "--preset",
        "synthetic",
        "--steps",
        str(steps),
        "--out",
        str(out),
        "--init.num-points",
        "200",
        "--prior.num-images",
        "16",
        "--output.preview-every",
        "0.1",
        "--output.checkpoint-every",
        "0",
        "--output.turntable-views",
        "4",
        "--output.turntable-size",
        "16",
    ]
    if viewer:
        args += ["--viewer", "--viewer-port", str(port)]
    start = time.perf_counter()
    proc = subprocess.Popen(args, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    browser = None
    if watch:
        from playwright.sync_api import sync_playwright

        playwright = sync_playwright().start()
        while proc.poll() is None:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        browser.new_page().goto(f"http://127.0.0.1:{port}")
    proc.wait()
    wall = time.perf_counter() - start  # the run goes on while the browser starts: nothing to subtract
    if browser is not None:
        browser.close()
        playwright.stop()
    if proc.returncode != 0:
        raise SystemExit(proc.stderr.read()[-2000:])
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    ways = {"off": (False, False), "viewer": (True, False), "viewer+browser": (True, True)}
    seconds: dict[str, list[float]] = {k: [] for k in ways}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            order = list(ways) if round_ % 2 == 0 else list(reversed(ways))
            for name in order:
                value = run(args.steps, Path(tmp) / f"{name}-{round_}", *ways[name])
                seconds[name].append(value)
                print(f"round {round_ + 1}: {name} {value:.1f} s")
    medians = {k: statistics.median(v) for k, v in seconds.items()}
    summary = {
        "steps": args.steps,
        "rounds": args.rounds,
        "median_wall_s": medians,
        "ratio_to_off": {k: v / medians["off"] for k, v in medians.items()},
        "all_s": seconds,
    }
    print(json.dumps(summary, indent=1))
    summary["refresh_ms"] = refresh_costs()
    print(json.dumps(summary["refresh_ms"]))
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=1))


def refresh_costs(repeats: int = 5) -> dict[str, float]:
    """Median milliseconds of one live-view refresh (copy to the CPU, send), nobody watching, by Gaussian count."""
    import torch

    from esd_gs.example import builtin_head
    from esd_gs.scene import GaussianScene
    from esd_gs.viewer.server import LiveView

    view = LiveView("127.0.0.1", free_port(), 0.0, "benchmark")
    out = {}
    try:
        for count in (3000, 100_000):
            if count == 3000:
                scene = builtin_head()
            else:
                scene = GaussianScene.from_activated(
                    means=torch.rand(count, 3) - 0.5,
                    scales=torch.full((count, 3), 0.01),
                    quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(count, 1),
                    opacities=torch.full((count,), 0.5),
                    colors=torch.rand(count, 3),
                    sh_degree=0,
                )
            times = []
            for step in range(repeats):
                start = time.perf_counter()
                view.update(scene, step, repeats, 1.0, force=True)
                times.append(time.perf_counter() - start)
            out[str(count)] = 1000 * statistics.median(times)
    finally:
        view.close()
    return out


if __name__ == "__main__":
    main()
