"""Plot ESD's objective along runs started at the reference object: KL(q_t || p_t) at each t against the training
step, the bracket (leave-one-out to contrastive estimate) as a band, one panel per run.

    .venv/bin/python research/scripts/plot_objective.py research/results/finding13/objective_mug_trace_learned.json \
        --labels "learned psi" --out /tmp/objective_trace.png

Reads ``objective_landscape.py``'s JSON for scenes named ``reference`` and ``*-step<k>`` (``fixed_point.py
--scenes``); the run's final scene (no step in its name) is placed at ``--steps`` (default 1,200).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from esd_gs.diffusion import sd_alphas_cumprod
from esd_gs.distillation.timesteps import TimestepSchedule, dreamtime_timestep


def trace(path: Path, final_step: int, p_front: float) -> tuple[list[int], list[dict]]:
    """(steps, rows) of one landscape JSON at ``p_front``, in step order; the reference is step 0, the two-faced twin
    left out."""
    points = []
    for row in json.loads(path.read_text())["rows"]:
        name = row["scene"]
        if name == "two-faced twin" or row["p_front"] != p_front:
            continue
        match = re.search(r"-step(\d+)$", name)
        step = 0 if name == "reference" else int(match.group(1)) if match else final_step
        points.append((step, row))
    points.sort(key=lambda item: item[0])
    return [step for step, _ in points], [row for _, row in points]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, nargs="+")
    parser.add_argument("--labels", nargs="*", default=None)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--timesteps", type=int, nargs="+", default=[450, 650, 850, 950])
    parser.add_argument("--p-front", type=float, default=0.5, help="the prior's bias whose rows are plotted")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        parser.error("plotting needs matplotlib: pip install 'esd-gs[plots]'")
    labels = args.labels or [path.stem for path in args.json]
    if len(labels) != len(args.json):
        parser.error("give one --labels entry per JSON file")
    traces = []
    for path in args.json:
        if not path.is_file():
            parser.error(f"{path} does not exist")
        steps, rows = trace(path, args.steps, args.p_front)
        if not rows or rows[0]["scene"] != "reference":
            parser.error(f"{path} has no reference row at p_front {args.p_front}")
        missing = sorted(set(args.timesteps) - set(rows[0]["timesteps"]))
        if missing:
            parser.error(f"{path} was not measured at t = {missing} (it has {rows[0]['timesteps']})")
        traces.append((steps, rows))
    fig, axes = plt.subplots(1, len(args.json), figsize=(5.2 * len(args.json), 4.0), squeeze=False, sharey=True)
    for ax, (steps, rows), label in zip(axes[0], traces, labels, strict=True):
        for colour, t in zip(
            plt.cm.viridis([i / max(len(args.timesteps) - 1, 1) for i in range(len(args.timesteps))]),
            args.timesteps,
            strict=True,
        ):
            index = rows[0]["timesteps"].index(t)
            lower = [row["terms"][index]["marginal_lower"] for row in rows]
            upper = [row["terms"][index]["marginal_upper"] for row in rows]
            ax.fill_between(steps, lower, upper, color=colour, alpha=0.35, linewidth=0)
            ax.plot(steps, [(lo + hi) / 2 for lo, hi in zip(lower, upper, strict=True)], color=colour, label=f"t = {t}")
            ax.axhline(upper[0], color=colour, linestyle=":", linewidth=1)
        ax.set_yscale("log")
        abar, schedule = sd_alphas_cumprod(), TimestepSchedule(name="dreamtime")
        ax.set_xticks(steps)
        ax.set_xticklabels(
            [
                "object"
                if s == 0
                else "end"
                if s == args.steps
                else f"{s}\n(t {dreamtime_timestep(s / args.steps, abar, schedule)})"
                for s in steps
            ]
        )
        ax.set_xlabel("training step (DreamTime's t at that step)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("KL(q_t || p_t), nats per image (band: bracket)")
    axes[0][-1].legend(loc="lower right", fontsize=8)
    fig.suptitle("ESD's objective (lambda 1) along runs started at the object\ndotted: the object's own upper value")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
