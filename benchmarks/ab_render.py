"""A/B timing of the training render (forward + backward, ``bench_render.time_step``) of two checkouts of esd-gs,
for changes that must not slow the renderer. Run it once per checkout, alternating, in both orders:

    git archive <old-commit> | tar -x -C /tmp/old-tree
    for i in 1 2 3; do for r in /tmp/old-tree .; do .venv/bin/python -P benchmarks/ab_render.py $r; done; done
"""

import importlib
import os
import sys


def main() -> None:
    root = os.path.abspath(sys.argv[1])
    sys.path[:0] = [root, os.path.join(root, "benchmarks")]  # this checkout's esd_gs and bench_render
    esd_gs = importlib.import_module("esd_gs")
    assert esd_gs.__file__.startswith(root), esd_gs.__file__
    bench = importlib.import_module("bench_render")
    torch = importlib.import_module("torch")
    torch.set_num_threads(2)
    cells = []
    for size, n in ((64, 4096), (128, 65536), (256, 16384)):
        ms = 1000 * bench.time_step(bench.make_scene(n), size, "torch", 5)
        cells.append(f"{size}/{n}: {ms:.1f} ms")
    print(os.path.basename(root), " ".join(cells))


if __name__ == "__main__":
    main()
