"""Plot the frontal share over the runs of ``fixed_point.py`` (one panel per object and prior bias), beside the
reference object's own share and the share of the prior's images that look at the front (what ESD with lambda = 1
matches when it matches the marginal q = p).

    .venv/bin/python research/scripts/plot_fixed_point.py research/results/finding12/fixed_point_*.json \
        --out research/results/finding12/fixed_point.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from esd_gs.bench.janus import bench_base_config  # noqa: E402
from esd_gs.evaluation.janus import is_frontal  # noqa: E402

COLOURS = {"sds": "tab:red", "esd-particle": "tab:blue", "esd-learned": "tab:green"}


def prior_frontal_share(p_front: float) -> float:
    """The share of the synthetic prior's images whose camera looks at the front (|azimuth| < 45 deg); it depends
    on the prior's cameras only, so the built-in head's prior gives it for every object (for files written before
    fixed_point.py recorded it)."""
    base = bench_base_config(p_front=p_front)
    prior = base.prior.build(torch.device("cpu"), base.run_context)
    return float(is_frontal(prior.azimuths).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="fixed_point.py --json files, one per object")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    tables = [(path.stem.removeprefix("fixed_point_"), json.loads(path.read_text())) for path in args.results]
    biases = sorted({row["p_front"] for _, table in tables for row in table["rows"]}, reverse=True)
    recorded = {
        row["p_front"]: row["prior_frontal_share"]
        for _, t in tables
        for row in t["rows"]
        if "prior_frontal_share" in row
    }
    shares = {p: recorded[p] if p in recorded else prior_frontal_share(p) for p in biases}
    figure, axes = plt.subplots(
        len(biases), len(tables), figsize=(3.2 * len(tables), 2.6 * len(biases)), squeeze=False, sharey=True
    )
    for column, (name, table) in enumerate(tables):
        for row, p_front in enumerate(biases):
            ax = axes[row][column]
            runs = [r for r in table["rows"] if r["p_front"] == p_front]
            if not runs:  # this file has no run at this bias
                ax.set_axis_off()
                continue
            for run in runs:
                steps = [point["step"] for point in run["trace"]]
                ax.plot(steps, [p["frontal_fraction"] for p in run["trace"]], "o-", ms=3, label=run["method"],
                        color=COLOURS.get(run["method"]))  # fmt: skip
            truth = runs[0]["trace"][0]["frontal_fraction"]  # step 0 is the reference object itself
            ax.axhline(truth, color="black", ls="--", lw=1, label="the object's own")
            ax.axhline(shares[p_front], color="grey", ls=":", lw=1.5, label="the prior's images")
            ax.set_title(f"{name}, p_front {p_front:g}", fontsize=9)
            ax.set_ylim(-0.02, 1.02)
            if row == len(biases) - 1:
                ax.set_xlabel("step")
            if column == 0:
                ax.set_ylabel("frontal share")
    axes[0][0].legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    figure.savefig(args.out, dpi=110)
    print(json.dumps({"prior_frontal_share": shares}))


if __name__ == "__main__":
    main()
