"""``esd-gs bench janus``: SDS, VSD and ESD against mode collapse, on the synthetic prior with a known answer.

Every method runs with the same budget and the same hyperparameters (the synthetic defaults of ``generate``)
except the method itself; each run's 120 turntable views are scored by ``synthetic/janus.py``.
"""

from __future__ import annotations

import json
import shutil
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import tyro
from rich.table import Table

from ..atomic import atomic_path
from ..cameras import turntable
from ..configs.generate import synthetic_defaults
from ..errors import UserError
from ..example import builtin_head
from ..io import read_ply
from ..progress import console
from ..render.views import render_views
from ..synthetic.janus import janus_metrics
from ..synthetic.prior import SyntheticPrior
from ..trainer import Trainer
from ..video import write_png
from .common import ensure_writable_dir, pick_device

TURNTABLE_VIEWS = 120
TURNTABLE_ELEVATION = 15.0


@dataclass
class BenchArgs:
    """Measure the Janus problem: SDS vs VSD vs ESD on the offline synthetic prior (known ground truth)."""

    which: tyro.conf.Positional[Literal["janus"]]
    """The benchmark to run (janus)."""
    methods: tuple[str, ...] = ("sds", "vsd", "esd")
    """Methods to compare (space- or comma-separated): sds, vsd, esd."""
    lambdas: tuple[str, ...] = ("0.5", "1.0")
    """ESD lambda values to run (space- or comma-separated, each in [0, 1])."""
    estimators: tuple[str, ...] = ("learned", "particle")
    """psi estimators for ESD (VSD always uses the learned one): learned, particle."""
    seeds: int = 3
    """Number of seeds (0 .. seeds-1) per configuration."""
    steps: int | None = None
    """Steps per run (default: generate's synthetic default)."""
    reference: Path | None = None
    """Reference 3DGS .ply (-Y up); default the built-in head."""
    p_front: float | None = None
    """Share of frontal images in the prior (default: generate's synthetic default, 0.5)."""
    out: Path = Path("runs/bench-janus")
    """Output directory: results.json, results.md, janus.png and one run directory per configuration and seed."""
    device: str = "auto"
    """auto, cpu or cuda."""
    overwrite: bool = False
    """Replace the results and runs of an earlier benchmark in --out."""


def _split(values: tuple[str, ...]) -> list[str]:
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def bench_configs(args: BenchArgs) -> list[tuple[str, float, str]]:
    """(method, lambda, estimator) triples in display order."""
    methods, estimators = _split(args.methods), _split(args.estimators)
    if not methods:
        raise UserError("--methods is empty: name at least one of sds, vsd, esd")
    if "esd" in methods and (not estimators or not _split(args.lambdas)):
        raise UserError("ESD needs at least one --estimators value and one --lambdas value")
    for m in methods:
        if m not in ("sds", "vsd", "esd"):
            raise UserError(f"unknown method '{m}' in --methods: use sds, vsd, esd")
    for e in estimators:
        if e not in ("learned", "particle"):
            raise UserError(f"unknown estimator '{e}' in --estimators: use learned, particle")
    lambdas = []
    for text in _split(args.lambdas):
        try:
            lam = float(text)
        except ValueError:
            raise UserError(f"--lambdas values must be numbers, got '{text}'") from None
        if not 0.0 <= lam <= 1.0:
            raise UserError(f"--lambdas values must be in [0, 1], got {lam}")
        lambdas.append(lam)
    configs = []
    for method in methods:
        if method == "sds":
            configs.append(("sds", 0.0, "-"))
        elif method == "vsd":
            configs.append(("vsd", 0.0, "learned"))
        else:
            configs += [("esd", lam, est) for est in estimators for lam in lambdas]
    return configs


def label(method: str, lam: float, estimator: str) -> str:
    if method == "sds":
        return "SDS"
    if method == "vsd":
        return "VSD"
    return f"ESD l={lam:g} ({estimator})"


def run_bench(args: BenchArgs) -> Path:
    if args.seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {args.seeds}")
    configs = bench_configs(args)
    device = pick_device(args.device)
    earlier = [name for name in ("results.json", "results.md", "janus.png", "runs") if (args.out / name).exists()]
    if earlier and not args.overwrite:
        raise UserError(f"{args.out} already holds a benchmark ({', '.join(earlier)}): pass --overwrite or choose another --out")
    base = synthetic_defaults()
    base = replace(base, prompt="a head", output=replace(base.output, preview_every=0.0, checkpoint_every=0.0,
                                                         video_formats=("mp4",)))
    synthetic = base.synthetic
    if args.reference is not None:
        if not args.reference.is_file():
            raise UserError(f"reference {args.reference} does not exist")
        synthetic = replace(synthetic, reference=(args.reference,))
    if args.p_front is not None:
        synthetic = replace(synthetic, p_front=args.p_front)
    base = replace(base, synthetic=synthetic, steps=base.steps if args.steps is None else args.steps)
    base.validate()
    ensure_writable_dir(args.out)

    prior = SyntheticPrior.build(base.synthetic, base.prompt, base.resolution, base.cameras, device)
    reference_scene = (read_ply(args.reference) if args.reference is not None else builtin_head()).to(device)
    cams = turntable(TURNTABLE_VIEWS, elevation=TURNTABLE_ELEVATION)
    size = base.resolution

    def views_of(scene) -> torch.Tensor:
        frames = render_views(scene, cams, size, background=1.0)
        return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0

    reference_views = views_of(reference_scene)
    prior_images = prior.reference_images(0).cpu()
    reference_metrics = janus_metrics(reference_views, reference_views, prior_images, prior.azimuths)
    records, strips = [], {}
    for seed in range(args.seeds):
        for method, lam, estimator in configs:
            name = f"{method}-l{lam:g}-{estimator}-s{seed}"
            config = replace(base, method=method, lambda_entropy=lam, seed=seed, out=args.out / "runs" / name,
                             psi=replace(base.psi, estimator="learned" if estimator == "-" else estimator))
            console.print(f"[bold]{label(method, lam, estimator)}[/bold], seed {seed}")
            run_dir = args.out / "runs" / name
            if run_dir.is_dir():  # only with --overwrite (checked above): start the run afresh
                shutil.rmtree(run_dir)
            ensure_writable_dir(run_dir)
            trainer = Trainer(config, run_dir, device, prior=prior)  # one prior shared by every run
            trainer.run()
            views = views_of(trainer.scene)
            metrics = janus_metrics(views, reference_views, prior_images, prior.azimuths)
            records.append({"method": method, "lambda_entropy": lam, "estimator": estimator, "seed": seed,
                            **metrics.as_dict(), "steps": config.steps, "p_front": base.synthetic.p_front})
            if seed == 0:
                strips[label(method, lam, estimator)] = (views, metrics)
    with atomic_path(args.out / "results.json") as tmp:
        tmp.write_text(json.dumps({"reference": reference_metrics.as_dict(), "runs": records}, indent=1))
    table_md = results_markdown(records, configs, reference_metrics)
    with atomic_path(args.out / "results.md") as tmp:
        tmp.write_text(table_md)
    write_png(janus_figure(reference_views, strips), args.out / "janus.png")
    console.print(results_table(records, configs, reference_metrics))
    console.print(f"wrote {args.out / 'results.json'}, {args.out / 'results.md'}, {args.out / 'janus.png'}")
    return args.out


def _summary(records: list[dict], method: str, lam: float, estimator: str) -> dict:
    rows = [r for r in records if (r["method"], r["lambda_entropy"], r["estimator"]) == (method, lam, estimator)]

    def stat(key):
        values = [float(r[key]) for r in rows]
        return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)

    return {key: stat(key) for key in ("aligned_psnr", "face_count", "frontal_fraction", "iq", "iv")} | {"n": len(rows),
            "janus_runs": sum(r["face_count"] > 1 for r in rows)}


def results_table(records, configs, reference) -> Table:
    table = Table(title=f"Janus benchmark ({records[0]['steps']} steps, p_front {records[0]['p_front']})")
    for column in ("method", "aligned PSNR (dB)", "faces", "Janus runs", "frontal share", "IQ", "IV"):
        table.add_column(column, justify="right")
    table.add_row("reference", "-", str(reference.face_count), "-", f"{reference.frontal_fraction:.2f}",
                  f"{reference.iq:.2f}", f"{reference.iv:.2f}")
    for method, lam, estimator in configs:
        s = _summary(records, method, lam, estimator)
        table.add_row(label(method, lam, estimator), f"{s['aligned_psnr'][0]:.2f} ± {s['aligned_psnr'][1]:.2f}",
                      f"{s['face_count'][0]:.1f} ± {s['face_count'][1]:.1f}", f"{s['janus_runs']}/{s['n']}",
                      f"{s['frontal_fraction'][0]:.2f}", f"{s['iq'][0]:.2f}", f"{s['iv'][0]:.2f}")
    return table


def results_markdown(records, configs, reference) -> str:
    lines = [f"Janus benchmark: {records[0]['steps']} steps per run, prior frontal share p_front = "
             f"{records[0]['p_front']}, mean ± std over seeds.", "",
             "| method | aligned PSNR (dB) | face count | Janus runs | frontal share | IQ | IV |",
             "| --- | --- | --- | --- | --- | --- | --- |",
             f"| reference object | - | {reference.face_count} | - | {reference.frontal_fraction:.2f} | "
             f"{reference.iq:.2f} | {reference.iv:.2f} |"]
    for method, lam, estimator in configs:
        s = _summary(records, method, lam, estimator)
        lines.append(f"| {label(method, lam, estimator)} | {s['aligned_psnr'][0]:.2f} ± {s['aligned_psnr'][1]:.2f} | "
                     f"{s['face_count'][0]:.1f} ± {s['face_count'][1]:.1f} | {s['janus_runs']}/{s['n']} | "
                     f"{s['frontal_fraction'][0]:.2f} | {s['iq'][0]:.2f} | {s['iv'][0]:.2f} |")
    return "\n".join(lines) + "\n"


def janus_figure(reference_views: torch.Tensor, strips: dict, every: int = 10, scale: int = 3) -> np.ndarray:
    """One row per method (reference on top): every ``every``-th turntable view, with a caption line."""
    from PIL import Image, ImageDraw

    def strip(views: torch.Tensor) -> np.ndarray:
        picked = (views[::every].clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
        row = np.concatenate(list(picked), axis=1)
        return np.kron(row, np.ones((scale, scale, 1), dtype=np.uint8))

    rows = [("reference (ground truth)", strip(reference_views))]
    for name, (views, metrics) in strips.items():
        rows.append((f"{name}: faces {metrics.face_count}, aligned PSNR {metrics.aligned_psnr:.1f} dB", strip(views)))
    width = rows[0][1].shape[1]
    caption_h = 18
    canvas = Image.new("RGB", (width, sum(r.shape[0] + caption_h for _, r in rows)), "white")
    draw = ImageDraw.Draw(canvas)
    y = 0
    for caption, row in rows:
        draw.text((4, y + 3), caption, fill=(0, 0, 0))
        canvas.paste(Image.fromarray(row), (0, y + caption_h))
        y += row.shape[0] + caption_h
    return np.asarray(canvas)
