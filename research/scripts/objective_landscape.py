"""Which scene does ESD's objective prefer? Theorem 1's KL terms, with exact densities, for a reference object, its
two-faced twin and any other scenes (e.g. where runs ended), under the synthetic prior at several biases.

    .venv/bin/python research/scripts/objective_landscape.py --reference assets/references/house.ply --p-front 0.5 0.0 \
        --scenes /tmp/scenes/esd-learned-p0.5.ply --json objective_house.json

Each scene's J(theta, 1) (the marginal KL, bracketed by its lower and upper estimates) and J(theta, 0) (SDS's
per-view KL) are averaged over an even grid of t with w(t) = sigma_t^2 (``esd_gs.monitors.objective``). With
``--azimuth-only`` the cameras (of the objective and of the prior) keep one elevation (15 deg) and field of view
(50 deg): a one-dimensional family of views that a bank of 1,024 renders covers densely, so the bracket is tight.

It also prints the distinct-image limit (small t, every azimuth's image far from every other's), where the
marginal KL is the KL between azimuth densities: of a one-faced object (uniform), of a two-faced one (every view
folded onto the front half) and of the prior's own (0 by definition).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from esd_gs.bench.janus import bench_base_config
from esd_gs.example import builtin_head
from esd_gs.io import read_ply
from esd_gs.monitors.objective import AZIMUTH_ONLY, scene_objective
from esd_gs.reference_objects import TWIN_PLANES, two_faced


def azimuth_limit(p_front: float, front_std: float) -> dict:
    """KL(q || p) of azimuth densities on a fine grid: q uniform (one face) or folded onto |a| < 90 (two faces)."""
    az = np.linspace(-180.0, 180.0, 360_000, endpoint=False)
    step = az[1] - az[0]
    gauss = np.exp(-0.5 * (az / front_std) ** 2) / (math.sqrt(2 * math.pi) * front_std)
    p = p_front * gauss + (1.0 - p_front) / 360.0
    one = np.full_like(az, 1.0 / 360.0)
    two = np.where(np.abs(az) < 90.0, 2.0 / 360.0, 0.0)

    def kl(q: np.ndarray) -> float:
        keep = q > 0
        return float(np.sum(q[keep] * np.log(q[keep] / p[keep])) * step)

    return {"one_faced": kl(one), "two_faced": kl(two), "prior": kl(p)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, default=None, help="reference .ply (default: the built-in head)")
    parser.add_argument("--p-front", type=float, nargs="+", default=[0.5, 0.0])
    parser.add_argument("--scenes", type=Path, nargs="*", default=[], help="more scenes (.ply) to score")
    parser.add_argument("--num-renders", type=int, default=1024)
    parser.add_argument("--azimuth-only", action="store_true", help="cameras at one elevation and field of view")
    parser.add_argument("--seed", type=int, default=0, help="seed of the cameras and noise (every scene the same)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--twin-plane", type=float, default=None,
                        help="x where the reference's front meets its back, the two-faced twin's mirror plane "
                        "(default: reference_objects.TWIN_PLANES by the file's name, else 0)")  # fmt: skip
    args = parser.parse_args()
    for path in [args.reference, *args.scenes]:
        if path is not None and not path.is_file():
            parser.error(f"{path} does not exist")
    if args.num_renders < 2 or not all(0.0 <= p <= 1.0 for p in args.p_front):
        parser.error("--num-renders must be at least 2 and --p-front values in [0, 1]")
    truth = read_ply(args.reference) if args.reference is not None else builtin_head()
    names = [path.stem for path in args.scenes]
    if len(set(names)) != len(names) or {"reference", "two-faced twin"} & set(names):
        parser.error("--scenes need distinct file names, other than reference.ply")
    plane = args.twin_plane
    if plane is None:
        plane = TWIN_PLANES.get(args.reference.stem, 0.0) if args.reference is not None else 0.0
    scenes = {"reference": truth, "two-faced twin": two_faced(truth, plane)}
    scenes.update({path.stem: read_ply(path) for path in args.scenes})
    rows = []
    for p_front in args.p_front:
        base = bench_base_config(reference=args.reference, p_front=p_front)
        if args.azimuth_only:
            base = replace(base, cameras=AZIMUTH_ONLY)
        prior = base.prior.build(torch.device("cpu"), base.run_context)
        limit = azimuth_limit(p_front, base.prior.front_std)
        print(
            f"p_front {p_front}: distinct-image limit KL one-faced {limit['one_faced']:.3f}, "
            f"two-faced {limit['two_faced']:.3f}, the prior's own {limit['prior']:.3f}",
            flush=True,
        )
        for name, scene in scenes.items():
            start = time.perf_counter()
            curve = scene_objective(
                scene,
                prior.images,
                prior.alphas_cumprod,
                base.cameras,
                base.resolution,
                num_renders=args.num_renders,
                seed=args.seed,
            )
            record = {"p_front": p_front, "scene": name, "azimuth_only": args.azimuth_only, "seed": args.seed}
            record.update(curve.to_dict())
            record["limit"] = limit
            rows.append(record)
            lo, hi = record["J_lambda1"]
            print(
                f"  {name:>24}: J(lambda 1) in [{lo:.3f}, {hi:.3f}], J(lambda 0) {record['J_lambda0']:.3f} "
                f"({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
            if args.json is not None:  # after every scene: a stopped study keeps what it measured
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps({"reference": str(args.reference), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
