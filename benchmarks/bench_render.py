"""Renderer benchmark: forward + backward time of g(theta, c) on CPU.

    .venv/bin/python benchmarks/bench_render.py            # full table (a few minutes)
    .venv/bin/python benchmarks/bench_render.py --quick    # 64x64 only

Scenes are random balls (radius 0.6) of N Gaussians with nearest-neighbour scales, opacity 0.5 and random colours,
one camera on the training orbit (radius 2.5, fovy 50). Each configuration is timed ``--reps`` times after a
warm-up; the median is reported. The dense baseline (every Gaussian at every pixel) runs in the same process where
its N*H*W tensors fit (N*H*W <= 64M), so speed-ups are side-by-side ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from esd_gs.cameras import orbit_cameras
from esd_gs.initial import BallInit
from esd_gs.render import render
from esd_gs.scene import GaussianScene


def make_scene(n: int) -> GaussianScene:
    g = torch.Generator().manual_seed(0)
    scene = BallInit(num_points=n, radius=0.6, opacity=0.5).scene(generator=g)
    with torch.no_grad():
        scene.params["sh0"].copy_(torch.randn(n, 1, 3, generator=g))
    return scene


def time_step(scene: GaussianScene, size: int, backend: str, reps: int) -> float:
    cams = orbit_cameras(torch.tensor([30.0]), torch.tensor([15.0]), torch.tensor([2.5]), torch.tensor([50.0]))
    times = []
    for i in range(reps + 1):
        scene.zero_grad(set_to_none=True)
        start = time.perf_counter()
        out = render(scene, cams, size, size, background=1.0, backend=backend)
        (out.rgb.square().mean() + out.alpha.mean()).backward()
        if i > 0:  # first call is the warm-up
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only 64x64")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--json", type=str, default="", help="also write the rows to this JSON file")
    args = parser.parse_args()
    sizes = [64] if args.quick else [64, 128, 256]
    counts = [1024, 4096, 16384, 65536]
    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'size':>5} {'N':>6} {'sparse ms':>10} {'it/s':>7} {'dense ms':>10} {'speed-up':>9}")
    for size in sizes:
        for n in counts:
            scene = make_scene(n)
            sparse = time_step(scene, size, "torch", args.reps)
            dense = None
            if n * size * size <= 64 * 2**20 and not (args.quick and n > 4096):
                dense = time_step(scene, size, "dense", max(3, args.reps // 2))
            rows.append({"size": size, "n": n, "sparse_s": sparse, "dense_s": dense})
            dense_txt = f"{dense * 1e3:10.1f} {dense / sparse:8.1f}x" if dense else f"{'-':>10} {'-':>9}"
            print(f"{size:>5} {n:>6} {sparse * 1e3:10.1f} {1 / sparse:7.1f} {dense_txt}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
