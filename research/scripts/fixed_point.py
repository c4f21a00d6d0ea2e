"""Is the reference object itself a resting point of each method? (a known-answer check of the objective)

Starts a benchmark run (``bench janus``'s settings: prior, cameras, schedule, learning rates) at the reference object
instead of the random ball, trains it, and scores it with the Janus metrics every ``--every`` steps (``--scenes``
keeps the scene at each of those steps, for ``objective_landscape.py``). A run that grows a second face from the
truth is pulled away either by the objective (with lambda = 1, ESD minimises E_t KL(q_t || p_t) between the
rendered-image marginal q and the prior p, Theorem 1; its optimum is q = p, not the object when p_front > 0) or by
its estimator's error: ``objective_landscape.py`` tells which, by measuring that objective at the scenes the run
passed through (research/janus.md, Finding 13).

    .venv/bin/python research/scripts/fixed_point.py --reference assets/references/house.ply --p-front 0.5 0.0 \
        --methods sds esd-particle esd-learned --json fixed_point_house.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import torch

from esd_gs.bench.janus import TURNTABLE_ELEVATION, TURNTABLE_VIEWS, bench_base_config
from esd_gs.cameras import turntable
from esd_gs.estimators import ParticlePsiConfig
from esd_gs.evaluation.janus import is_frontal, janus_metrics
from esd_gs.example import builtin_head
from esd_gs.io import read_ply, write_ply
from esd_gs.monitors.objective import AZIMUTH_ONLY
from esd_gs.pipeline.build import build_trainer
from esd_gs.priors.synthetic_objects import twin_of
from esd_gs.render.views import render_images

METHODS = {  # name: (method, lambda, psi settings)
    "sds": ("sds", 0.0, {}),
    "esd-particle": ("esd", 1.0, {"name": "particle"}),
    "esd-learned": ("esd", 1.0, {"name": "learned"}),
    # the particle psi with the bank size of the diagnostic's exact reference (128), refreshed as the default's
    "esd-particle128": ("esd", 1.0, {"name": "particle", "bank_size": 128}),
    "esd0.5-particle": ("esd", 0.5, {"name": "particle"}),
    "esd0.5-learned": ("esd", 0.5, {"name": "learned"}),
}


def psi_config(base, settings: dict, overrides: dict):
    """psi of one method: the particle one (with its settings), the base's learned one (with the overrides), or the
    learned one for SDS (which reads none)."""
    settings = dict(settings)
    if settings.pop("name", "learned") == "particle":
        return ParticlePsiConfig(**settings)
    return replace(base.psi, **settings, **overrides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, default=None, help="reference .ply (default: the built-in head)")
    parser.add_argument("--p-front", type=float, nargs="+", default=[0.5])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--timesteps", default="uniform", choices=["uniform", "linear", "dreamtime"])
    parser.add_argument("--steps", type=int, default=None, help="default: the benchmark's 1,200")
    parser.add_argument("--every", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--p-null-camera", type=float, default=None, help="psi's camera dropout (default 0.1)")
    parser.add_argument("--adam-eps", type=float, default=None, help="the scene optimiser's eps (default 1e-15)")
    parser.add_argument("--psi-steps", type=int, default=None, help="psi updates per 3D step (default 1)")
    parser.add_argument(
        "--azimuth-only", action="store_true", help="train and build the prior with cameras at one elevation and fov"
    )
    parser.add_argument(
        "--scenes",
        type=Path,
        default=None,
        help="folder to write each run's final scene to (<method>-p<p_front>.ply) and its scene at every scoring step",
    )
    args = parser.parse_args()
    if args.reference is not None and not args.reference.is_file():
        parser.error(f"--reference {args.reference} does not exist")
    if args.every < 1 or (args.steps is not None and args.steps < 1):
        parser.error("--every and --steps must be at least 1")
    if not all(0.0 <= p <= 1.0 for p in args.p_front):
        parser.error("--p-front values must be in [0, 1]")
    if args.p_null_camera is not None and not 0.0 <= args.p_null_camera <= 1.0:
        parser.error("--p-null-camera must be in [0, 1]")
    if args.psi_steps is not None and args.psi_steps < 1:
        parser.error("--psi-steps must be at least 1")
    if args.adam_eps is not None and not (math.isfinite(args.adam_eps) and args.adam_eps > 0):
        parser.error("--adam-eps must be a number > 0")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
    if args.scenes is not None:
        args.scenes.mkdir(parents=True, exist_ok=True)
    psi_overrides = {}
    if args.p_null_camera is not None:
        psi_overrides["p_null_camera"] = args.p_null_camera
    if args.psi_steps is not None:
        psi_overrides["train_steps_per_iter"] = args.psi_steps
    truth = read_ply(args.reference) if args.reference is not None else builtin_head()
    cams = turntable(TURNTABLE_VIEWS, elevation=TURNTABLE_ELEVATION)
    rows = []
    for p_front in args.p_front:
        base = bench_base_config(args.steps, args.reference, p_front, timesteps=args.timesteps)
        if args.azimuth_only:
            base = replace(base, cameras=AZIMUTH_ONLY)
        prior = base.prior.build(torch.device("cpu"), base.run_context)
        size = base.resolution
        reference = render_images(truth, cams, size, background=1.0)
        twin = render_images(twin_of(truth, args.reference or "head"), cams, size, background=1.0)
        prior_images = prior.reference_images(0).cpu()
        prior_share = float(is_frontal(prior.azimuths).float().mean())

        def score(scene, reference=reference, prior=prior, prior_images=prior_images, size=size, twin=twin) -> dict:
            views = render_images(scene, cams, size, background=1.0)
            return janus_metrics(views, reference, prior_images, prior.azimuths, twin).as_dict()

        for name in args.methods:
            method, lambda_entropy, psi = METHODS[name]
            config = replace(
                base,
                distill=replace(base.distill, method=method, lambda_entropy=lambda_entropy),
                psi=psi_config(base, psi, psi_overrides),
                seed=args.seed,
            )
            trainer = build_trainer(config, Path("/tmp/esd-gs-fixed-point"), torch.device("cpu"), prior=prior)
            trainer.start_from(truth)  # a fresh copy of the object, and optimisers for it
            if args.adam_eps is not None:  # the scene's Adam (3DGS's eps 1e-15 by default)
                for optimizer in trainer.optimizers.values():
                    for group in optimizer.param_groups:
                        group["eps"] = args.adam_eps
            start = time.perf_counter()
            trace = [{"step": 0, **score(trainer.scene)}]
            while trainer.step < config.steps:
                trainer.train_step()
                if trainer.step % args.every == 0 or trainer.step == config.steps:
                    trace.append({"step": trainer.step, **score(trainer.scene)})
                    if args.scenes is not None and trainer.step < config.steps:
                        write_ply(trainer.scene, args.scenes / f"{name}-p{p_front:g}-step{trainer.step}.ply")
                    m = trace[-1]
                    print(
                        f"p_front {p_front} {name} step {trainer.step}: {m['aligned_psnr']:.2f} dB, excess "
                        f"{m['excess_faces']}, share {m['frontal_fraction']:.2f} (gap {m['frontal_share_gap']:+.2f}), "
                        f"side {m['side_accuracy']:.2f}",
                        flush=True,
                    )
            rows.append(
                {
                    "p_front": p_front,
                    "method": name,
                    "timesteps": config.timesteps.name,
                    "seed": args.seed,
                    "prior_frontal_share": prior_share,
                    "seconds": time.perf_counter() - start,
                    "trace": trace,
                }
            )
            if args.scenes is not None:
                write_ply(trainer.scene, args.scenes / f"{name}-p{p_front:g}.ply")
            if args.json is not None:  # after every run: a stopped study keeps what it measured
                args.json.write_text(json.dumps({"reference": str(args.reference), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
