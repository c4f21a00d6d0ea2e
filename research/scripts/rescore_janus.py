"""Score saved scenes with this version's Janus metrics (``evaluation/janus.py``) against the built-in head or
``--reference``, at the benchmark's defaults (prior, turntable, 32 px): for results made before a metric existed, and
for runs of ``generate``. Takes .ply files (keyed by file name, read with -Y up) or run folders (keyed by folder
name: their ``scene.ply``, read with the run's ``--output.up``); prints the scores as JSON. The reference is not read
from a run folder: pass the one it ran with.

    .venv/bin/python research/scripts/rescore_janus.py research/results/janus-p0.5-after-renovation/scenes/*.ply
    .venv/bin/python research/scripts/rescore_janus.py runs/car-s0 runs/car-s1 --reference assets/references/car.ply
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from esd_gs.bench.janus import TURNTABLE_ELEVATION, TURNTABLE_VIEWS, bench_base_config
from esd_gs.cameras import turntable
from esd_gs.configs.yaml_io import load_yaml_config
from esd_gs.evaluation.janus import janus_metrics
from esd_gs.example import builtin_head
from esd_gs.io import read_ply
from esd_gs.priors.synthetic_objects import twin_of
from esd_gs.render.views import render_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenes", nargs="+", type=Path, help=".ply files or run folders (their scene.ply)")
    parser.add_argument("--reference", type=Path, default=None, help="reference .ply (default: the built-in head)")
    args = parser.parse_args()
    base = bench_base_config(reference=args.reference)
    prior = base.prior.build(torch.device("cpu"), base.run_context)
    cams = turntable(TURNTABLE_VIEWS, elevation=TURNTABLE_ELEVATION)
    truth = read_ply(args.reference) if args.reference is not None else builtin_head()
    reference = render_images(truth, cams, base.resolution)
    twin = render_images(twin_of(truth, args.reference or "head"), cams, base.resolution)
    scores = {}
    for path in args.scenes:
        if path.is_dir():
            scene = read_ply(path / "scene.ply", up=load_yaml_config(path / "config.yaml").output.up)
            name = path.name
        else:
            scene, name = read_ply(path), path.stem
        views = render_images(scene, cams, base.resolution)
        metrics = janus_metrics(views, reference, prior.reference_images(0).cpu(), prior.azimuths, twin)
        scores[name] = metrics.as_dict()
    print(json.dumps(scores, indent=1))


if __name__ == "__main__":
    main()
