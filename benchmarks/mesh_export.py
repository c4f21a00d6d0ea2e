"""Time and peak memory of `esd-gs export SCENE.ply --to out.glb` at 64k and 256k Gaussians: grid 128 and 256 with
vertex colours, and grid 128 with a 1024-pixel baked texture (``--texture 1024``).

The scenes are the procedural head (``make_head_scene``) built with that many Gaussians, so the surface is a real
one. Each export runs in its own process, whose peak resident memory (ru_maxrss) is reported; medians over
``--repeats``.

    .venv/bin/python benchmarks/mesh_export.py --repeats 2 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import resource, sys, time
from esd_gs.io import read_ply
from esd_gs.mesh.extract import MeshConfig, write_mesh
scene = read_ply(sys.argv[1])
start = time.perf_counter()
faces = len(write_mesh(scene, sys.argv[2], MeshConfig(resolution=int(sys.argv[3]), texture=int(sys.argv[4]))).faces)
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, faces)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    from esd_gs.example import make_head_scene
    from esd_gs.io import write_ply

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in (64_000, 256_000):
            ply = Path(tmp) / f"head-{count}.ply"
            write_ply(make_head_scene(num_gaussians=count), ply)
            for resolution, texture in ((128, 0), (256, 0), (128, 1024)):
                seconds, memory = [], []
                for _ in range(args.repeats):
                    out = subprocess.run(
                        [sys.executable, "-c", CHILD, ply, Path(tmp) / "out.glb", str(resolution), str(texture)],
                        capture_output=True,
                        text=True,
                        check=True,
                    ).stdout.split()
                    seconds.append(float(out[0]))
                    memory.append(float(out[1]))
                    faces = int(out[2])
                row = {
                    "gaussians": count,
                    "resolution": resolution,
                    "texture": texture,
                    "seconds": statistics.median(seconds),
                    "peak_mb": statistics.median(memory),
                    "faces": faces,
                }
                rows.append(row)
                print(row)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
