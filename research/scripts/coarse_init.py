"""What starting from a coarse version of the right object does to ESD's Janus metrics (issue 34, item 5).

A 3D prior such as Shap-E gives a coarse, roughly right object; on the synthetic prior the right object is known, so
its coarse version can stand in for a 3D prior's output: ``--points`` of the reference's Gaussian centres drawn at
random, moved by Gaussian noise of ``--blur`` world units, each coloured as the mean of its ``--neighbours`` nearest
reference Gaussians. They go through the same growth and Gaussians as ``init:shap-e``'s mesh points
(``initial.points``: GaussianDreamer's noisy growth and colour perturbation) up to the ball's 1,500 Gaussians, are
written as a .ply, and each run starts from it with ``init:ply``. The benchmark (``bench janus``'s settings: SDS and ESD
with the learned psi, lambda 1, the synthetic preset's schedule and psi updates) runs once from the ball and once from
the coarse object, side by side, for seeds 0..2:

    OMP_NUM_THREADS=1 .venv/bin/python research/scripts/coarse_init.py --object head \
        --out research/results/finding21/head
    OMP_NUM_THREADS=1 .venv/bin/python research/scripts/coarse_init.py --object cat \
        --out research/results/finding21/cat
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch

from esd_gs.bench.janus import BenchRun, bench_base_config, run_janus_benchmark
from esd_gs.initial import PlyInit
from esd_gs.initial.points import gaussians_from_points, grow_points
from esd_gs.io import write_ply
from esd_gs.priors.synthetic_objects import load_object
from esd_gs.scene import SH_C0, GaussianScene

REFERENCES = Path(__file__).resolve().parents[2] / "assets" / "references"


def coarse_object(reference: GaussianScene, points: int, blur: float, neighbours: int, total: int, seed: int):
    """The reference's coarse version (module docstring), ``total`` Gaussians."""
    generator = torch.Generator().manual_seed(seed)
    means = reference.means.detach()
    colors = (0.5 + SH_C0 * reference.params["sh0"].detach()[:, 0]).clamp(0, 1)
    chosen = torch.randperm(means.shape[0], generator=generator)[:points]
    nearest = torch.cdist(means[chosen], means).topk(neighbours, largest=False).indices
    shades = colors[nearest].mean(dim=1)
    centres = means[chosen] + blur * torch.randn(points, 3, generator=generator)
    size = float((means.max(0).values - means.min(0).values).norm())
    grown, grown_colors = grow_points(centres, shades, total - points, 0.01 * size, 0.2, generator)
    return gaussians_from_points(grown, grown_colors, opacity=0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--object", default="head", help="head (built in) or a name in assets/references")
    parser.add_argument("--points", type=int, default=300)
    parser.add_argument("--blur", type=float, default=0.04)
    parser.add_argument("--neighbours", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    reference = None if args.object == "head" else REFERENCES / f"{args.object}.ply"
    base = bench_base_config(reference=reference)
    scene = load_object("head" if reference is None else reference)
    args.out.mkdir(parents=True, exist_ok=True)
    coarse = coarse_object(scene, args.points, args.blur, args.neighbours, base.init.num_points, seed=0)
    coarse_file = args.out / "coarse.ply"
    write_ply(coarse, coarse_file)
    runs = [BenchRun("sds"), BenchRun("esd", 1.0, "learned")]
    for name, init in (("ball", base.init), ("coarse", PlyInit(path=coarse_file))):
        start = time.time()
        run_janus_benchmark(runs, args.seeds, replace(base, init=init), args.out / name, torch.device("cpu"))
        print(f"{args.object} from {name}: {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
