"""Does a run show the reference's back, or a second front? A known-answer check where the Janus metrics are blind.

For each turntable view within 45 degrees of the back (azimuth 135 to 225, after the run's aligned offset), compare
the run's render with the reference's view there and with its two-faced twin's (``reference_objects.two_faced``: the
front mirrored onto the back). A run whose back views are closer to the reference's than to the twin's has no second
front there. Used for the car, whose back looks frontal to the benchmark's 32 px classifier (research/janus.md,
Finding 15). Since Finding 16, ``bench janus`` measures this in every run (its "true back" column,
``evaluation.janus.true_back_share``: the same views, the same test) and its verdict uses it; this script stays to
re-check saved run folders.

    .venv/bin/python research/scripts/twin_check.py --reference assets/references/car.ply RUN_DIR [RUN_DIR ...]
"""

import argparse
import json
import sys
from pathlib import Path

import torch

from esd_gs.bench.janus import TURNTABLE_ELEVATION, TURNTABLE_VIEWS
from esd_gs.cameras import turntable
from esd_gs.io import read_ply
from esd_gs.reference_objects import TWIN_PLANES, two_faced
from esd_gs.render.views import render_images

SIZE = 32

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True)
    parser.add_argument("runs", type=Path, nargs="+", help="run folders holding scene.ply and janus.json")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    for path in [args.reference, *(r / "scene.ply" for r in args.runs)]:
        if not path.is_file():
            sys.exit(f"twin_check.py: error: {path} does not exist")
    cams = turntable(TURNTABLE_VIEWS, elevation=TURNTABLE_ELEVATION)
    truth = read_ply(args.reference)
    own = render_images(truth, cams, SIZE, background=1.0)
    twin = render_images(two_faced(truth, TWIN_PLANES.get(args.reference.stem, 0.0)), cams, SIZE, background=1.0)
    azimuth = torch.arange(TURNTABLE_VIEWS) * 360.0 / TURNTABLE_VIEWS
    back = (azimuth >= 135) & (azimuth <= 225)
    rows = []
    for run in args.runs:
        views = render_images(read_ply(run / "scene.ply"), cams, SIZE, background=1.0)
        offset = json.loads((run / "janus.json").read_text())["record"]["best_offset_deg"]
        views = torch.roll(views, round(offset * TURNTABLE_VIEWS / 360.0), dims=0)  # undo the run's aligned offset
        d_own = (views - own).square().flatten(1).mean(1)[back]
        d_twin = (views - twin).square().flatten(1).mean(1)[back]
        row = {"run": str(run), "back_views": int(back.sum()), "closer_to_reference": int((d_own < d_twin).sum()),
               "mse_reference": float(d_own.mean()), "mse_twin": float(d_twin.mean())}  # fmt: skip
        rows.append(row)
        print(f"{run}: {row['closer_to_reference']}/{row['back_views']} back views closer to the reference than to "
              f"its twin (MSE {row['mse_reference']:.4f} vs {row['mse_twin']:.4f})")  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps({"reference": str(args.reference), "rows": rows}, indent=1))
