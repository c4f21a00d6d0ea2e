"""Score saved scenes with this version's Janus metrics (``evaluation/janus.py``) against the built-in head, at the
benchmark's defaults (prior, turntable, 32 px): for results made before a metric existed.

    .venv/bin/python benchmarks/rescore_janus.py benchmarks/results/janus-p0.5-after-renovation/scenes/*.ply
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from esd_gs.bench.janus import TURNTABLE_ELEVATION, TURNTABLE_VIEWS, bench_base_config
from esd_gs.cameras import turntable
from esd_gs.evaluation.janus import janus_metrics
from esd_gs.example import builtin_head
from esd_gs.io import read_ply
from esd_gs.priors import SyntheticPrior
from esd_gs.render.views import render_images


def main() -> None:
    base = bench_base_config()
    prior = SyntheticPrior.from_config(base, torch.device("cpu"))
    cams = turntable(TURNTABLE_VIEWS, elevation=TURNTABLE_ELEVATION)
    reference = render_images(builtin_head(), cams, base.resolution)
    scores = {}
    for path in map(Path, sys.argv[1:]):
        views = render_images(read_ply(path), cams, base.resolution)
        scores[path.stem] = janus_metrics(views, reference, prior.reference_images(0).cpu(), prior.azimuths).as_dict()
    print(json.dumps(scores, indent=1))


if __name__ == "__main__":
    main()
