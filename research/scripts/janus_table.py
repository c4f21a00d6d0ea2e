"""One table of the Janus benchmark over objects: the development and the held-out objects (Finding 16 on), each
seed's verdict, from finished ``bench janus`` folders.

Each folder holds one object's benchmark (``results.json``); the object is named by the folder's name. A folder
given with ``--more`` adds seeds of the same object's ESD configurations (a benchmark with ``--seeds 6`` over the
first one's ESD runs). For every configuration other than SDS the table gives the seeds with one face (the verdict:
no excess face, a true back over one half, the frontal share within 0.1 of the reference's), the per-seed mean
aligned PSNR and its gain over the same object's SDS runs, and whether the target (every seed one face, +2 dB) is met.

    .venv/bin/python research/scripts/janus_table.py runs/finding16/{head,house,mug,chair,car,penguin,cat,bus,radio} \
        --more runs/finding16-6seeds/chair --out research/results/finding16/table.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from esd_gs.bench.janus import TARGET_GAIN_DB, run_metrics
from esd_gs.priors.synthetic_objects import DEVELOPMENT, HELD_OUT

SETTINGS = (
    "steps",
    "p_front",
    "prior",
    "timesteps",
    "psi_loss_weighting",
    "psi_lr",
    "psi_steps",
    "psi_t_window",
    "psi_steps_until",
)
"""What the runs of one object's folders must share (a ``--more`` folder adds seeds, not settings)."""


def records(folder: Path, lambda_entropy: float) -> list[dict]:
    """The folder's SDS runs and its ESD runs at ``lambda_entropy``."""
    runs = json.loads((folder / "results.json").read_text())["runs"]
    return [r for r in runs if r["method"] == "sds" or (r["method"] == "esd" and r["lambda_entropy"] == lambda_entropy)]


def cell(rows: list[dict], sds_psnr: float) -> str:
    """'k/n one face, +x.x dB: met|missed' over the rows (one per seed)."""
    one_face = sum(run_metrics(r).one_face for r in rows)
    gain = statistics.mean(r["aligned_psnr"] for r in rows) - sds_psnr
    met = one_face == len(rows) and gain >= TARGET_GAIN_DB
    text = f"{one_face}/{len(rows)}, {gain:+.1f} dB"
    return f"**{text}**" if met else text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+", help="one finished bench janus folder per object")
    parser.add_argument("--more", type=Path, nargs="*", default=[], help="folders with more seeds of ESD runs")
    parser.add_argument("--out", type=Path, default=None, help="write the table (markdown) here too")
    parser.add_argument("--lambda-entropy", type=float, default=1.0, help="the ESD runs' lambda (default 1)")
    args = parser.parse_args()
    for folder in [*args.folders, *args.more]:
        if not (folder / "results.json").is_file():
            sys.exit(f"janus_table.py: error: {folder} holds no finished benchmark (results.json)")
    more = {folder.name: records(folder, args.lambda_entropy) for folder in args.more}
    names = {folder.name for folder in args.folders}
    for name, extra in more.items():
        first = records(next(f for f in args.folders if f.name == name), args.lambda_entropy) if name in names else []
        if not first:
            sys.exit(f"janus_table.py: error: --more folder {name} names no object of the positional folders")
        shared = {tuple(r.get(k) for k in SETTINGS) for r in first + extra if r["method"] == "esd"}
        if len(shared) != 1:
            sys.exit(f"janus_table.py: error: the runs of {name} differ in their settings ({', '.join(SETTINGS)})")
    lines = [
        "| set | object | SDS: aligned PSNR (dB), one face | ESD, learned psi: one face, gain over SDS | "
        "ESD, particle psi: one face, gain over SDS |",
        "| --- | --- | --- | --- | --- |",
    ]
    for folder in args.folders:
        name = folder.name
        runs = records(folder, args.lambda_entropy)
        extra = more.get(name, [])
        sds = [r for r in runs if r["method"] == "sds"]
        sds_psnr = statistics.mean(r["aligned_psnr"] for r in sds)
        cells = []
        for estimator in ("learned", "particle"):
            rows = {(r["seed"]): r for r in runs if r["method"] == "esd" and r["estimator"] == estimator}
            rows |= {r["seed"]: r for r in extra if r["method"] == "esd" and r["estimator"] == estimator}
            cells.append(cell([rows[s] for s in sorted(rows)], sds_psnr) if rows else "not run")
        group = "development" if name in DEVELOPMENT else "held out" if name in HELD_OUT else "other"
        sds_one = sum(run_metrics(r).one_face for r in sds)
        lines.append(f"| {group} | {name} | {sds_psnr:.2f}, {sds_one}/{len(sds)} | {cells[0]} | {cells[1]} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
