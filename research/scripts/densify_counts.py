"""How many Gaussians does densification make over a run, and why? (issue 31: growth relative to the gradients)

Runs the real generate loop (``build_trainer``) with densification on and records every step's Gaussian count and,
at each refinement, what gsplat's strategy saw and did: the mean screen-space gradients it thresholds (their median
over the Gaussians seen since the previous refinement, the share above 2x that median and the share above the old
absolute threshold), the threshold it used, and how many Gaussians it cloned, split, pruned and the cap removed.
It only wraps gsplat's ops and the densifier, so it runs on the code before issue 31 too (absolute threshold
``GRAD_THRESHOLD``: 0.1 for VSD/ESD, 1.0 for SDS) for a before / after comparison: run it from that checkout with
``PYTHONPATH`` set to it.

``--scale-2d-grads F`` multiplies every means2d gradient by F before the densifier sees it (the parameters'
gradients are untouched): with the relative threshold the counts must not move.

    # the synthetic prior's defaults with densification on (1,200 steps, refinements every 48 steps):
    .venv/bin/python research/scripts/densify_counts.py --prior synthetic --out counts.json
    # a full-size SD 2.1-base-shaped folder (random weights: esd_gs.testing.tiny_sd.build_full_size_stable_diffusion),
    # a short run at 512 px refining every 2nd step:
    .venv/bin/python research/scripts/densify_counts.py --model DIR --method esd --steps 12 \\
        --set resolution_start=None densify.start=0 densify.stop=1 densify.every=0.167 --out counts.json

Every other ``esd-gs generate`` option can follow as ``--set KEY=VALUE`` pairs. ``--table FILE.json ...`` prints
recorded runs as Markdown tables (start -> peak -> end, then one row per refinement) instead of running.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import gsplat.strategy.default as gsplat_default
import torch

from esd_gs.cli.main import parse_args
from esd_gs.pipeline.build import build_trainer

OLD_THRESHOLD = {"vsd": 0.1, "esd": 0.1, "sds": 1.0}
"""The absolute thresholds before issue 31 (``densify.GRAD_THRESHOLD`` then), for the counterfactual share."""


def table(paths: list[Path]) -> str:
    """Markdown tables of recorded runs: one summary row each, then each run's refinements."""
    records = [(path.stem, json.loads(path.read_text())) for path in paths]
    lines = [
        "| run | rule | 2D gradients x | start | peak (step) | end | s/step |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in records:
        lines.append(
            f"| {name} | {r['rule']} | {r['scale_2d_grads']:g} | {r['start']:,} | {r['peak']:,} ({r['peak_step']}) | "
            f"{r['end']:,} | {r['seconds_per_step']:.2f} |"
        )
    for name, r in records:
        lines += [
            "",
            f"{name}: per refinement",
            "",
            "| step | before | seen | median grad | threshold | > 2x median | > old threshold | cloned | split "
            "| pruned | capped | after |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for x in r["refinements"]:
            lines.append(
                f"| {x['step']} | {x['before']:,} | {x['seen']:,} | {x['median_grad']:.3g} | {x['threshold']:.3g} | "
                f"{x['share_above_2x_median']:.1%} | {x['share_above_old_threshold']:.1%} | {x['cloned']:,} | "
                f"{x['split']:,} | {x['pruned']:,} | {x['capped']:,} | {x['after']:,} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", nargs="+", type=Path, default=None, help="print these records as tables")
    parser.add_argument("--prior", choices=["sd", "synthetic"], default="sd", help="the 2D prior")
    parser.add_argument("--model", default=None, help="Stable Diffusion folder or id (with --prior sd)")
    parser.add_argument("--method", choices=["sds", "vsd", "esd"], default="esd", help="update rule")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    parser.add_argument("--scale-2d-grads", type=float, default=1.0, help="multiply every means2d gradient by this")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra generate options")
    parser.add_argument("--out", type=Path, default=None, help="write the record as JSON here")
    args = parser.parse_args()
    if args.table:
        print(table(args.table))
        return

    synthetic = args.prior == "synthetic"  # the synthetic prior shows the object its prompt names: the head
    argv = ["generate", "a head" if synthetic else "densify-counts", "--preset", "synthetic" if synthetic else "esd"]
    argv += ["--method", args.method, "--densify.enabled"]
    if args.steps is not None:
        argv += ["--steps", str(args.steps)]
    if args.model:
        argv += ["--prior.model", args.model]
    for pair in args.set:
        key, value = pair.split("=", 1)
        argv += [f"--{key.replace('_', '-')}", value]
    config = parse_args(argv)
    old_threshold = OLD_THRESHOLD[args.method]

    refinements: list[dict] = []
    counts: list[int] = []
    times: list[float] = []
    current: dict = {}

    def spy(name: str):
        original = getattr(gsplat_default, name)

        def recorded(*a, mask, **k):
            current[name] = current.get(name, 0) + int(mask.sum())
            return original(*a, mask=mask, **k)

        return recorded

    for name in ("duplicate", "split", "remove"):
        setattr(gsplat_default, name, spy(name))

    with tempfile.TemporaryDirectory() as run_dir:
        trainer = build_trainer(config, Path(run_dir), torch.device(args.device))
        densifier = trainer.densifier
        strategy = densifier.strategy
        original_grow = strategy._grow_gs
        original_post = densifier.post_backward

        def grow(params, optimizers, state, step):
            grads = state["grad2d"] / state["count"].clamp_min(1)
            live = grads[(state["count"] > 0) & (grads > 0)]
            median = float(live.median()) if live.numel() else float("nan")
            current.update(
                step=step,
                before=int(grads.numel()),
                seen=int(live.numel()),
                median_grad=median,
                p90_grad=float(live.quantile(0.9)) if live.numel() else float("nan"),
                share_above_2x_median=float((live > 2 * median).float().mean()) if live.numel() else 0.0,
                share_above_old_threshold=float((live > old_threshold).float().mean()) if live.numel() else 0.0,
            )
            result = original_grow(params, optimizers, state, step)
            current["threshold"] = float(strategy.grow_grad2d)
            return result

        def post_backward(params, optimizers, step, info):
            if args.scale_2d_grads != 1.0 and info["means2d"].grad is not None:
                info["means2d"].grad.mul_(args.scale_2d_grads)
            current.clear()
            original_post(params, optimizers, step, info)
            if "step" in current:
                grown = current.pop("duplicate", 0), current.pop("split", 0)
                removed = current.pop("remove", 0)
                after_prune = current["before"] + grown[0] + grown[1] - removed
                refinements.append(
                    {
                        **current,
                        "cloned": grown[0],
                        "split": grown[1],
                        "pruned": removed,
                        "capped": after_prune - params["means"].shape[0],
                        "after": params["means"].shape[0],
                    }
                )

        strategy._grow_gs = grow
        densifier.post_backward = post_backward
        counts.append(trainer.scene.num_gaussians)
        while trainer.step < config.steps:
            start = time.perf_counter()
            row = trainer.train_step()
            times.append(time.perf_counter() - start)
            counts.append(row["gaussians"])
            if trainer.step % max(1, config.steps // 20) == 0 or trainer.step == config.steps:
                print(f"step {trainer.step}/{config.steps}: {row['gaussians']} Gaussians", flush=True)

    record = {
        "prior": args.prior,
        "model": args.model,
        "method": args.method,
        "steps": config.steps,
        "resolution": config.resolution,
        "resolution_start": config.resolution_start,
        "batch_size": config.batch_size,
        "densify": {k: v for k, v in vars(config.densify).items()},
        "rule": "relative" if hasattr(config.densify, "grow_ratio") else f"absolute {old_threshold:g}",
        "scale_2d_grads": args.scale_2d_grads,
        "old_threshold": old_threshold,
        "seconds_per_step": sorted(times)[len(times) // 2],
        "start": counts[0],
        "peak": max(counts),
        "peak_step": counts.index(max(counts)),
        "end": counts[-1],
        "refinements": refinements,
        "counts": counts,
    }
    text = json.dumps(record, indent=1)
    print(json.dumps({k: v for k, v in record.items() if k not in ("counts",)}, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
