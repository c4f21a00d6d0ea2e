"""The Janus benchmark: SDS, VSD and ESD against mode collapse, on the synthetic prior with a known answer.

Every method runs with the same budget and the same hyperparameters (the synthetic defaults of ``generate``)
except the method itself; each run's 120 turntable views (float images, no 8-bit rounding) are scored by
``evaluation/janus.py`` against the reference object's. Writes results.json, results.md, janus.png and one run
directory per configuration and seed.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import statistics
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from rich.table import Table

from ..atomic import atomic_path
from ..cameras import turntable
from ..configs.generate import GenerateConfig
from ..configs.presets import preset
from ..configs.yaml_io import config_from_dict, run_config_text, run_settings
from ..distillation import Method
from ..errors import UserError
from ..estimators import ParticlePsiConfig
from ..evaluation.janus import (
    SHARE_TOLERANCE,
    TURNTABLE_ELEVATION,
    TURNTABLE_VIEWS,
    JanusMetrics,
    frontal_flags,
    janus_metrics,
    nearest_prior_distances,
)
from ..io import read_ply
from ..pipeline.build import build_trainer
from ..priors import SyntheticUNetConfig, SyntheticUNetPrior, synthetic_images
from ..priors.synthetic_objects import load_object, twin_of
from ..progress import console, make_progress, stage
from ..render.views import render_images
from ..training.run_dir import RunDir
from ..video import write_png

PRIOR_NAMES = {"synthetic": "the exact-score prior", "synthetic-unet": "the fitted synthetic UNet"}
RUN_RECORD = "janus.json"
"""Written into a run's directory once it is scored: its settings and metrics (what lets a re-run skip it)."""
RESULTS = "results.json"
"""Written last: a folder with it holds a finished benchmark (results.md, janus.png and runs/ beside it)."""


@dataclass(frozen=True)
class BenchRun:
    """One configuration of the benchmark (run once per seed)."""

    method: Method
    """One of ``distillation.METHODS``."""
    lambda_entropy: float = 0.0
    """ESD's lambda (0 for SDS and VSD)."""
    estimator: str = "-"
    """psi: learned or particle ("-" for SDS, which has none)."""

    @property
    def label(self) -> str:
        if self.method == "sds":
            return "SDS"
        if self.method == "vsd":
            return "VSD"
        return f"ESD l={self.lambda_entropy:g} ({self.estimator})"

    def name(self, seed: int) -> str:
        return f"{self.method}-l{self.lambda_entropy:g}-{self.estimator}-s{seed}"

    def key(self) -> tuple:
        return self.method, self.lambda_entropy, self.estimator


def bench_base_config(
    steps: int | None = None,
    reference: Path | None = None,
    p_front: float | None = None,
    diagnose: bool = False,
    prior: str = "synthetic",
    timesteps: str | None = None,
    psi_loss_weighting: str | None = None,
    psi_lr: float | None = None,
    psi_steps: int | None = None,
    psi_t_window: int | None = None,
    psi_steps_until: float | None = None,
    unet_steps: int | None = None,
) -> GenerateConfig:
    """generate's synthetic defaults for every run: no previews or checkpoints, mp4 only; ``steps``, ``reference``,
    ``p_front``, the timestep schedule's name (``timesteps``: uniform, linear or dreamtime) and the learned psi's
    loss weighting (``psi_loss_weighting``: prediction or x0, eq. 3's omega(t)), learning rate (``psi_lr``), updates
    per 3D step (``psi_steps``) and the share of the run that has them (``psi_steps_until``), and training
    timesteps' window (``psi_t_window``) when given; with ``diagnose``, psi measured against the exact scores;
    ``prior`` synthetic (exact) or synthetic-unet (fitted). Its psi is the prior's learned one (``psi_config`` gives
    each run's); ``unet_steps``: the fitted UNet's optimiser steps (synthetic-unet only)."""
    chosen = preset(prior)
    base = chosen.with_psi(chosen.config.prior.learned_estimator)
    if timesteps is not None:
        base = replace(base, timesteps=replace(base.timesteps, name=timesteps))
    changes = {
        "loss_weighting": psi_loss_weighting,
        "lr": psi_lr,
        "train_steps_per_iter": psi_steps,
        "timestep_window": psi_t_window,
        "train_steps_until": psi_steps_until,
    }
    base = replace(base, psi=replace(base.psi, **{k: v for k, v in changes.items() if v is not None}))
    images = synthetic_images(base.prior)
    if reference is not None:
        images = replace(images, reference=(reference,))
    if p_front is not None:
        images = replace(images, p_front=p_front)
    prior_config = replace(base.prior, images=images) if hasattr(base.prior, "images") else images
    if unet_steps is not None:  # the fitted UNet's optimiser steps (a fit of its own, cached under its settings)
        if not isinstance(prior_config, SyntheticUNetConfig):
            raise ValueError("--unet-steps sets the fit of --prior synthetic-unet, and the prior is the exact one")
        prior_config = replace(prior_config, steps=unet_steps)
    return replace(
        base,
        prompt="a head",
        steps=base.steps if steps is None else steps,
        prior=prior_config,
        # The benchmark's runs keep their small turntable (120 views of 96 px): nobody watches them one by one.
        output=replace(
            base.output,
            preview_every=0.0,
            checkpoint_every=0.0,
            video_formats=("mp4",),
            turntable_views=120,
            turntable_size=96,
        ),
        diagnose=replace(base.diagnose, enabled=diagnose),
    )


def psi_config(base: GenerateConfig, estimator: str):
    """A run's psi: the base's learned psi ("learned", and SDS's "-", which reads none) or the particle one."""
    return ParticlePsiConfig() if estimator == "particle" else base.psi


def _saved_settings(plain) -> dict | None:
    """A saved run's settings, with the options added since it was made at their defaults (which it ran with)."""
    try:
        return run_settings(config_from_dict(plain))
    except (UserError, ValueError, TypeError, AttributeError):  # not a config of this version: another run
        return None


def finished_run(run_dir: Path, config: GenerateConfig) -> dict | None:
    """The saved record file (``RUN_RECORD``, as a dict) of a finished run in ``run_dir`` made with ``config``'s
    settings, scored or not; None when there is none or the run is unfinished. A run of other settings is refused in
    one line (it is never reused or removed)."""
    try:
        saved = json.loads((run_dir / RUN_RECORD).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict):
        return None
    if saved.get("config") is not None and _saved_settings(saved["config"]) != run_settings(config):
        raise UserError(f"{run_dir} holds a run of other settings: pass --overwrite or choose another --out")
    if not (run_dir / "scene.ply").is_file() or RunDir(run_dir).read_status() != "finished":
        return None
    return saved


def scored_record(saved: dict | None) -> dict | None:
    """The metrics of a saved record file when this version scored it (every one of ``METRICS``), else None."""
    record = None if saved is None else saved.get("record")
    return record if isinstance(record, dict) and set(METRICS) <= set(record) else None


def finished_record(run_dir: Path, config: GenerateConfig) -> dict | None:
    """The metrics of a finished run in ``run_dir`` made with ``config``'s settings and scored by this version; None
    when the run is unfinished or unscored (``finished_run``'s refusal of other settings included)."""
    return scored_record(finished_run(run_dir, config))


def run_janus_benchmark(
    runs: list[BenchRun], seeds: int, base: GenerateConfig, out: Path, device: torch.device
) -> Path:
    """Run every configuration of ``runs`` for seeds 0 .. seeds-1 from ``base`` (``bench_base_config``), score
    them, and write results.json, results.md and janus.png into ``out`` (a writable directory)."""
    base.validate()
    images = synthetic_images(base.prior)
    reference = images.reference[0] if images.reference else None
    if reference is not None and not Path(reference).is_file():
        raise UserError(f"reference {reference} does not exist")
    with stage("phi: rendering the synthetic prior's images"):
        prior = images.build(device, base.run_context)  # the exact prior: the oracle every run is scored against
    phi = prior  # one phi, shared by every run: the exact prior, or the UNet fitted to its images
    if isinstance(base.prior, SyntheticUNetConfig):
        with stage("phi: the synthetic UNet (its cached fit, or fitting it: minutes)"):
            phi = SyntheticUNetPrior.from_oracle(prior, base.resolution, base.prior, device)
    source = images.references(base.prompt)[1][0]
    reference_scene = load_object(source).to(device)
    cams = turntable(TURNTABLE_VIEWS, elevation=TURNTABLE_ELEVATION)
    size = base.resolution

    def views_of(scene) -> torch.Tensor:
        return render_images(scene, cams, size, background=1.0)

    reference_views = views_of(reference_scene)
    twin_views = views_of(twin_of(reference_scene, source))  # a second front on the back: what true_back_share sees
    prior_images = prior.reference_images(0).cpu()

    def metrics_of(views: torch.Tensor) -> JanusMetrics:
        return janus_metrics(views, reference_views, prior_images, prior.azimuths, twin_views)

    reference_metrics = metrics_of(reference_views)
    if not reference_metrics.true_back_share == 1.0:  # NaN: its twin looks the same from behind
        console.print(
            "warning: the twin test cannot tell this reference's back from its front (its front must face +X): "
            "no run can get the verdict one face"
        )
    records, strips = [], {}
    frontal = {"reference": frontal_flags(nearest_prior_distances(reference_views, prior_images), prior.azimuths)}
    jobs = [(seed, run) for seed in range(seeds) for run in runs]
    with make_progress(speed_window=24 * 3600) as progress:  # one advance per run: estimate from the whole benchmark
        overall = progress.add_task("benchmark", total=len(jobs), unit="run")
        for seed, run in jobs:
            run_dir = out / "runs" / run.name(seed)
            distill = replace(base.distill, method=run.method, lambda_entropy=run.lambda_entropy)
            config = replace(
                base,
                distill=distill,
                seed=seed,
                out=run_dir,
                psi=psi_config(base, run.estimator),
            )
            saved = finished_run(run_dir, config)
            record = scored_record(saved)
            if saved is not None:  # a finished run of the same settings (an interrupted benchmark, re-run)
                views = views_of(read_ply(run_dir / "scene.ply", up=config.output.up).to(device))
                kept = "kept" if record is not None else "kept, scored again by this version"
                console.print(f"[bold]{run.label}[/bold], seed {seed}: finished earlier, {kept}")
            else:
                console.print(f"[bold]{run.label}[/bold], seed {seed}")
                if run_dir.is_dir():  # unfinished, other settings, or --overwrite: start the run afresh
                    shutil.rmtree(run_dir)
                run_dir.mkdir(parents=True)
                RunDir(run_dir).write_config(run_config_text(config))  # as generate does: evaluate and --resume read it
                trainer = build_trainer(config, run_dir, device, prior=phi)
                trainer.find_front = None  # the benchmark scores the views itself; its outputs stay small
                try:
                    trainer.run()
                finally:
                    phi.restore()  # a shared-UNet LoRA psi leaves phi's UNet as it found it for the next run
                views = views_of(trainer.scene)
            if record is None:
                record = {
                    "method": run.method,
                    "lambda_entropy": run.lambda_entropy,
                    "estimator": run.estimator,
                    "seed": seed,
                    **metrics_of(views).as_dict(),
                    "steps": config.steps,
                    "p_front": images.p_front,
                    "prior": base.prior.name,
                    "timesteps": base.timesteps.name,
                    "psi_loss_weighting": base.psi.loss_weighting,
                    "psi_lr": base.psi.lr,
                    "psi_steps": base.psi.train_steps_per_iter,
                    "psi_t_window": base.psi.timestep_window,
                    "psi_steps_until": base.psi.train_steps_until,
                }
                if isinstance(base.prior, SyntheticUNetConfig):
                    record["unet_steps"] = base.prior.steps
                with atomic_path(run_dir / RUN_RECORD) as tmp:
                    tmp.write_text(json.dumps({"config": run_settings(config), "record": record}, indent=1))
            records.append(record)
            if seed == 0:
                strips[run.label] = (views, run_metrics(record))
                frontal[run.label] = frontal_flags(nearest_prior_distances(views, prior_images), prior.azimuths)
            progress.advance(overall)
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(results_markdown(records, runs, reference_metrics))
    write_png(janus_figure(reference_views, strips, frontal), out / "janus.png")
    with atomic_path(out / RESULTS) as tmp:  # last: its presence says the benchmark is finished
        tmp.write_text(json.dumps({"reference": reference_metrics.as_dict(), "runs": records}, indent=1))
    console.print(results_table(records, runs, reference_metrics))
    for line in target_lines(records, runs):
        console.print(line)
    console.print(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'janus.png'}")
    return out


METRICS = tuple(f.name for f in dataclasses.fields(JanusMetrics) if f.name != "best_offset_deg")
"""What a scored run records, and the summary tables average."""
COLUMNS = (
    "method",
    "aligned PSNR (dB)",
    "faces",
    "excess faces",
    "true back",
    "second front",
    "frontal share",
    "share gap",
    "one face",
    "side accuracy",
    "IQ",
    "IV",
)
TARGET_GAIN_DB = 2.0
"""The target's margin: a configuration's mean aligned PSNR at least this much over SDS's."""


def run_metrics(record: dict) -> JanusMetrics:
    """A scored run's metrics from its record."""
    return JanusMetrics(**{k: record[k] for k in JanusMetrics.__dataclass_fields__})


def _summary(records: list[dict], run: BenchRun) -> dict:
    rows = [r for r in records if (r["method"], r["lambda_entropy"], r["estimator"]) == run.key()]

    def stat(key):
        values = [float(r[key]) for r in rows]
        return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)

    # A second front: more faces than the reference shows under the same classifier (an elongated object is not
    # penalised), or a back closer to the two-faced twin's; one face: neither, and the right frontal share.
    return {key: stat(key) for key in METRICS} | {
        "n": len(rows),
        "second_front": sum(run_metrics(r).second_front for r in rows),
        "one_face": sum(run_metrics(r).one_face for r in rows),
    }


def _table_rows(records: list[dict], runs: list[BenchRun], reference) -> list[list[str]]:
    """The reference's row, then one row per configuration (means ± std over seeds), as text in ``COLUMNS`` order."""
    rows = [
        [
            "reference object",
            "-",
            str(reference.face_count),
            "-",
            f"{reference.true_back_share:.2f}",
            "-",
            f"{reference.frontal_fraction:.2f}",
            "-",
            "-",
            "-",
            f"{reference.iq:.2f}",
            f"{reference.iv:.2f}",
        ]
    ]
    for run in runs:
        s = _summary(records, run)
        rows.append(
            [
                run.label,
                f"{s['aligned_psnr'][0]:.2f} ± {s['aligned_psnr'][1]:.2f}",
                f"{s['face_count'][0]:.1f} ± {s['face_count'][1]:.1f}",
                f"{s['excess_faces'][0]:.1f}",
                f"{s['true_back_share'][0]:.2f}",
                f"{s['second_front']}/{s['n']}",
                f"{s['frontal_fraction'][0]:.2f}",
                f"{s['frontal_share_gap'][0]:+.2f}",
                f"{s['one_face']}/{s['n']}",
                f"{s['side_accuracy'][0]:.2f}",
                f"{s['iq'][0]:.2f}",
                f"{s['iv'][0]:.2f}",
            ]
        )
    return rows


def target_lines(records: list[dict], runs: list[BenchRun]) -> list[str]:
    """Per configuration other than SDS, whether it meets the benchmark's target: one face (the verdict) in every
    seed and a mean aligned PSNR at least ``TARGET_GAIN_DB`` over SDS's (only when SDS ran)."""
    sds = next((run for run in runs if run.method == "sds"), None)
    if sds is None:
        return []
    floor = _summary(records, sds)["aligned_psnr"][0]
    lines = []
    for run in runs:
        if run is sds:
            continue
        s = _summary(records, run)
        gain = s["aligned_psnr"][0] - floor
        met = s["one_face"] == s["n"] and gain >= TARGET_GAIN_DB
        lines.append(
            f"- {run.label}: target {'met' if met else 'missed'}: one face in {s['one_face']}/{s['n']} seeds, "
            f"{gain:+.1f} dB over SDS"
        )
    return lines


def results_table(records: list[dict], runs: list[BenchRun], reference) -> Table:
    table = Table(title=f"Janus benchmark ({records[0]['steps']} steps, p_front {records[0]['p_front']})")
    for column in COLUMNS:
        table.add_column(column, justify="right")
    for row in _table_rows(records, runs, reference):
        table.add_row(*row)
    return table


def results_markdown(records: list[dict], runs: list[BenchRun], reference) -> str:
    phi = PRIOR_NAMES[records[0].get("prior", "synthetic")]
    if "unet_steps" in records[0]:  # records made before --unet-steps: the default fit
        phi += f" ({records[0]['unet_steps']} fit steps)"
    learned = next((r for r in records if r.get("estimator") == "learned"), None)  # SDS and particle runs have no psi
    if learned is None:
        psi = "no learned psi"
    else:
        lr = f"{learned['psi_lr']:g}" if "psi_lr" in learned else "not recorded"
        weighting = learned.get("psi_loss_weighting", "prediction")
        updates = learned.get("psi_steps", 1)  # records made before --psi-steps ran with one
        psi = f"learned psi's loss weighting {weighting}, learning rate {lr} and {updates} update"
        psi += "s per 3D step" if updates != 1 else " per 3D step"
        if updates != 1 and learned.get("psi_steps_until", 1.0) < 1.0:  # records made before it: the whole run
            psi += f" for the first {learned['psi_steps_until']:g} of the run, one after"
        if learned.get("psi_t_window") is not None:  # records made before --psi-t-window drew t from [0, T)
            psi += f", trained at t within {learned['psi_t_window']} of each step's distillation t"
    lines = [
        f"Janus benchmark: {records[0]['steps']} steps per run, phi = {phi}, prior frontal share p_front = "
        f"{records[0]['p_front']}, {records[0].get('timesteps', 'uniform')} timestep schedule, "
        f"{psi}, mean ± std over seeds. "
        "Excess faces, share gap and side accuracy compare each run "
        "with the reference's own views under the same classifier; true back is the share of the back views "
        "closer to the reference's than to its two-faced twin's. A run has a second front when it has an excess "
        f"face or a true back of 0.5 or less, and one face (the verdict) when it has neither and a share gap "
        f"within {SHARE_TOLERANCE:g}. The target: one face in every seed and a mean aligned PSNR at least "
        f"{TARGET_GAIN_DB:g} dB over SDS.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "| " + " | ".join("---" for _ in COLUMNS) + " |",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in _table_rows(records, runs, reference)]
    targets = target_lines(records, runs)
    if targets:
        lines += ["", *targets]
    return "\n".join(lines) + "\n"


FACE_MARK = (220, 30, 30)
"""Colour of the bar under a view the classifier labels frontal (a face) in the benchmark's figure."""


def janus_figure(
    reference_views: torch.Tensor, strips: dict, frontal: dict, every: int = 10, scale: int = 3
) -> np.ndarray:
    """One row per method (reference on top): every ``every``-th turntable view, each run turned by its aligned
    offset so that the columns show the same side, with a caption line, and a red bar (``FACE_MARK``) under each view
    labelled frontal. ``strips``: label -> (views, metrics); ``frontal``: label (and
    "reference") -> [V] bool frontal labels of all views."""
    from PIL import Image, ImageDraw

    mark_h = 2 * scale

    def strip(views: torch.Tensor, flags: torch.Tensor) -> np.ndarray:
        picked = (views[::every].clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
        row = np.kron(np.concatenate(list(picked), axis=1), np.ones((scale, scale, 1), dtype=np.uint8))
        marks = np.full((mark_h, row.shape[1], 3), 255, dtype=np.uint8)
        size = picked.shape[2] * scale
        for k, flag in enumerate(flags[::every].tolist()):
            if flag:
                marks[:, k * size : (k + 1) * size] = FACE_MARK
        return np.concatenate([row, marks], axis=0)

    rows = [("reference (ground truth); red: views that look frontal", strip(reference_views, frontal["reference"]))]
    for name, (views, metrics) in strips.items():
        caption = (
            f"{name}: {'one face' if metrics.one_face else 'missed'}: faces {metrics.face_count} (excess "
            f"{metrics.excess_faces}), true back {metrics.true_back_share:.2f}, share gap "
            f"{metrics.frontal_share_gap:+.2f}, aligned PSNR {metrics.aligned_psnr:.1f} dB"
        )
        shift = round(
            metrics.best_offset_deg / 360.0 * views.shape[0]
        )  # turned as aligned: columns match the reference
        rows.append((caption, strip(torch.roll(views, shift, dims=0), torch.roll(frontal[name], shift, dims=0))))
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
