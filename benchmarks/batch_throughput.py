"""Throughput of `esd-gs batch` against a shell loop of `esd-gs generate`, on this machine, in one run.

The same N small synthetic-prior jobs (one prompt, seeds 0 .. N-1, as a benchmark's several seeds per prompt; the
test suite's small config: 200 Gaussians, 16 prior images, batch 2, 32 px) are run three ways, in alternating order
over ``--rounds``:

- loop: one `esd-gs generate --preset synthetic ...` process per job (the same settings, as flags), one after
  another (what a user's shell loop does);
- batch, 1 worker and 2 workers: `esd-gs batch` on a local Ray cluster started once beforehand (`ray start
  --head --num-cpus 2`), joined with --address auto.

Reports the wall time of each, jobs per minute, and the scheduling overhead per job of the batch: (its wall time -
the time its jobs took inside the workers) / N, with 1 worker.

    .venv/bin/python benchmarks/batch_throughput.py --jobs 6 --steps 200 --rounds 2 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from esd_gs.testing.small_jobs import SMALL_SYNTHETIC

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0")


def esd_gs(*args) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "esd_gs", *map(str, args)], capture_output=True, text=True, env=ENV, cwd=ROOT
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    ray = Path(sys.executable).with_name("ray")
    subprocess.run(
        [
            str(ray),
            "start",
            "--head",
            "--num-cpus=2",
            "--num-gpus=0",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        check=True,
        capture_output=True,
        env=ENV,
    )
    times: dict[str, list[float]] = {"loop": [], "batch-1": [], "batch-2": []}
    overhead = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            jobs = root / "jobs.yaml"
            jobs.write_text(yaml.safe_dump([{"prompt": "a head", **SMALL_SYNTHETIC, "steps": args.steps}]))
            flags = [
                "--preset",
                "synthetic",
                "--batch-size",
                2,
                "--init.num-points",
                200,
                "--prior.num-images",
                16,
                "--output.preview-every",
                0,
                "--output.checkpoint-every",
                0,
                "--output.turntable-views",
                4,
                "--output.turntable-size",
                16,
                "--output.video-formats",
                "gif",
                "--steps",
                args.steps,
            ]
            for round_ in range(args.rounds):
                order = ["loop", "batch-1", "batch-2"] if round_ % 2 == 0 else ["batch-2", "batch-1", "loop"]
                for way in order:
                    out = root / way
                    shutil.rmtree(out, ignore_errors=True)
                    if way == "loop":
                        total = 0.0
                        for seed in range(args.jobs):
                            total += esd_gs("generate", "a head", *flags, "--seed", seed, "--out", out / f"s{seed}")
                    else:
                        workers = way[-1]
                        total = esd_gs(
                            "batch", jobs, "--out", out, "--seeds", args.jobs, "--workers", workers, "--address", "auto"
                        )
                        if workers == "1":
                            state = json.loads((out / "batch.json").read_text())["jobs"]
                            inside = sum(s["seconds"] for s in state.values())
                            overhead.append((total - inside) / args.jobs)
                    times[way].append(total)
                    print(f"round {round_ + 1}: {way} {total:.1f} s")
    finally:
        subprocess.run([str(ray), "stop", "--force"], capture_output=True)
    medians = {k: statistics.median(v) for k, v in times.items()}
    summary = {
        "jobs": args.jobs,
        "steps": args.steps,
        "rounds": args.rounds,
        "seconds": times,
        "median_s": medians,
        "jobs_per_minute": {k: 60 * args.jobs / v for k, v in medians.items()},
        "speedup_vs_loop": {k: medians["loop"] / v for k, v in medians.items()},
        "batch_overhead_per_job_s": statistics.median(overhead),
    }
    print(json.dumps(summary, indent=1))
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
