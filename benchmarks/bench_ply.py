"""Reading a large 3DGS .ply: esd-gs's read_ply against plyfile's row-by-row parse that it used before.

    .venv/bin/python benchmarks/bench_ply.py            # 1M Gaussians, SH degree 3 (248 MB), 3 repeats

Reports the median wall time of: plyfile with mmap=False (the old read path's parse), plyfile with mmap=True, and
the whole read_ply (header checks, mapped parse, column copies, finiteness check, up-axis rotation).
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import plyfile
import torch

from esd_gs.io import read_ply, write_ply
from esd_gs.scene import GaussianScene


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gaussians", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.ply"
        g = torch.Generator().manual_seed(0)
        n = args.gaussians
        scene = GaussianScene(
            {
                "means": torch.randn(n, 3, generator=g) * 0.5,
                "scales": torch.full((n, 3), -4.0),
                "quats": torch.randn(n, 4, generator=g),
                "opacities": torch.zeros(n),
                "sh0": torch.rand(n, 1, 3, generator=g),
                "shN": torch.randn(n, 15, 3, generator=g) * 0.1,
            }
        )
        write_ply(scene, path)
        size_mb = path.stat().st_size / 2**20
        rows = {
            "plyfile mmap=False (old parse)": timed(
                lambda: plyfile.PlyData.read(str(path), mmap=False)["vertex"].data, 1
            ),
            "plyfile mmap=True": timed(lambda: plyfile.PlyData.read(str(path), mmap=True)["vertex"].data, args.repeats),
            "read_ply (all of it)": timed(lambda: read_ply(path), args.repeats),
        }
    print(f"{args.gaussians:,} Gaussians, SH degree 3, {size_mb:.0f} MB")
    for name, seconds in rows.items():
        print(f"{name:>32}: {seconds:8.2f} s")


if __name__ == "__main__":
    main()
