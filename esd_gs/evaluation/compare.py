"""``esd-gs compare``: evaluate (or reuse the evaluations of) several runs and write them side by side."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from ..atomic import atomic_path
from ..errors import UserError
from ..progress import make_progress
from .evaluate import EVAL_FILE, EvalConfig, EvalTarget, evaluate, render_turntable, saved_evaluation, write_evaluation
from .models import EvalModels
from .report import compare_markdown, strip_indices, write_compare_figure

STRIP = 8
"""Views per run in compare.png."""


def compare(
    targets: list[EvalTarget], config: EvalConfig, models: EvalModels, out: Path, backend: str, overwrite: bool
) -> Path:
    """Write compare.md, compare.png and compare.json into ``out``; returns compare.md."""
    from ..io import read_ply

    for target in targets:  # before any work: never replace an evaluation of other settings unasked
        if (target.out / EVAL_FILE).exists() and saved_evaluation(target, config) is None and not overwrite:
            raise UserError(
                f"{target.out / EVAL_FILE} was measured with other settings or another scene: pass --overwrite "
                "to re-evaluate it, or the same options as then"
            )
    names = _unique([t.name for t in targets])
    results, strips = [], []
    with make_progress(speed_window=24 * 3600) as progress:  # one advance per run (minutes): the whole average
        task = progress.add_task("comparing", total=len(targets), unit="run")
        for target in targets:
            result = saved_evaluation(target, config)
            if result is None:
                result, views = evaluate(target, config, models, backend, progress)
                write_evaluation(target, result, views)
                strip = views[strip_indices(views.shape[0], STRIP)]
            else:
                progress.console.print(f"{target.name}: evaluated earlier with the same settings, reused")
                up = target.run_config.output.up if target.run_config is not None else "-y"
                scene = read_ply(target.scene, up=up).to(models.device)
                strip = render_turntable(scene, replace(config, views=STRIP), backend=backend)
            results.append(result)
            strips.append(strip)
            progress.advance(task)
    with atomic_path(out / "compare.json") as tmp:
        tmp.write_text(json.dumps({"runs": [{"name": n, **r} for n, r in zip(names, results)]}, indent=1))
    write_compare_figure(names, results, strips, out / "compare.png")
    with atomic_path(out / "compare.md") as tmp:
        tmp.write_text(compare_markdown(names, results))
    from ..progress import console

    console.print(f"wrote {out / 'compare.md'}, {out / 'compare.png'}, {out / 'compare.json'}")
    return out / "compare.md"


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return unique
