"""What people look at: the one-page figure of an evaluation (eval.png) and the comparison of several (compare.md,
compare.png). Drawn with matplotlib (``pip install 'esd-gs[eval]'``), off screen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor

from ..atomic import atomic_path
from ..errors import UserError
from .metrics import METRICS

SIDE_COLOURS = {"front": "#d62728", "side": "#7f7f7f", "back": "#1f77b4"}
STRIP_VIEWS = 12


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("esd-gs evaluate draws its figures with matplotlib: pip install 'esd-gs[eval]'") from None
    return plt


def strip_indices(num_views: int, count: int = STRIP_VIEWS) -> list[int]:
    """``count`` evenly spaced view indices of a turntable (the first is the front)."""
    return sorted({round(i * num_views / count) % num_views for i in range(min(count, num_views))})


def _picture(view: Tensor) -> np.ndarray:
    return view.clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def summary_lines(result: dict) -> list[str]:
    """The metrics of one eval.json as short lines (figure captions, terminal)."""
    lines = [entry.summary(result[entry.key]) for entry in METRICS.values() if entry.key in result]
    if "ground_truth" in result:
        gt = result["ground_truth"]
        lines.append(
            f"ground truth: aligned PSNR {gt['aligned_psnr']:.2f} dB, excess faces {gt['excess_faces']}, "
            f"share gap {gt['frontal_share_gap']:+.2f}, side accuracy {gt['side_accuracy']:.2f}"
        )
    return lines


def write_eval_figure(result: dict, views: Tensor, path: Path) -> Path:
    """eval.png: a strip of views with each one's side, CLIP similarity and side over the whole turntable, and the
    metrics."""
    plt = _pyplot()
    picks = strip_indices(views.shape[0])
    sides = result.get("janus", {}).get("sides")
    fig = plt.figure(figsize=(12, 6.2))
    grid = fig.add_gridspec(3, len(picks), height_ratios=[1.0, 1.1, 0.7], hspace=0.45)
    for column, index in enumerate(picks):
        ax = fig.add_subplot(grid[0, column])
        ax.imshow(_picture(views[index]))
        ax.set_xticks([])
        ax.set_yticks([])
        azimuth = index * 360.0 / views.shape[0]
        ax.set_title(
            f"{azimuth:.0f}°" + (f"\n{sides[index]}" if sides else ""),
            fontsize=8,
            color=SIDE_COLOURS.get(sides[index], "black") if sides else "black",
        )
        if sides:
            for spine in ax.spines.values():
                spine.set_color(SIDE_COLOURS[sides[index]])
                spine.set_linewidth(2.5)
    ax = fig.add_subplot(grid[1, :])
    azimuths = np.arange(views.shape[0]) * 360.0 / views.shape[0]
    if "clip_similarity" in result.get("per_view", {}):
        ax.plot(azimuths, result["per_view"]["clip_similarity"], color="black", lw=1.2, label="CLIP similarity")
        ax.set_ylabel("CLIP similarity")
    if sides:
        low, high = ax.get_ylim() if ax.lines else (0.0, 1.0)
        for azimuth, side in zip(azimuths, sides):
            ax.axvspan(azimuth, azimuth + 360.0 / len(sides), ymin=0, ymax=0.08, color=SIDE_COLOURS[side], lw=0)
        ax.set_ylim(low, high)
        handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in SIDE_COLOURS.values()]
        ax.legend(handles, list(SIDE_COLOURS), loc="upper right", fontsize=8, ncol=3, title="side", title_fontsize=8)
    ax.set_xlim(0, 360)
    ax.set_xlabel("azimuth (degrees, 0 = front)")
    text = fig.add_subplot(grid[2, :])
    text.axis("off")
    text.text(0.0, 1.0, "\n".join(summary_lines(result)), va="top", family="monospace", fontsize=9)
    fig.suptitle(f'{Path(result["scene"]).parent.name}/{Path(result["scene"]).name}: "{result["prompt"]}"')
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


TABLE_COLUMNS = (
    "run",
    "method",
    "CLIP sim ↑",
    "CLIP dist ↓",
    "FID ↓",
    "IQ ↓",
    "IV ↑",
    "frontal share",
    "frontal arcs",
    "verdict",
)


def _number(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def method_label(result: dict) -> str:
    run = result.get("run")
    if run is None:
        return "-"
    if run["method"] == "esd":
        return f"ESD l={run['lambda_entropy']:g} ({run['estimator']})"
    return run["method"].upper()


def _mean_std(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
    return f"{mean:.4g} ± {std:.2g}"


def method_summary(results: list[dict]) -> list[str]:
    """Markdown rows: each method's mean ± std over its runs (seeds) and how many of its runs each verdict got."""
    groups: dict[str, list[dict]] = {}
    for result in results:
        groups.setdefault(method_label(result), []).append(result)
    lines = [
        "| method | runs | CLIP sim | FID | IQ | IV | frontal share | Janus runs | face-everywhere runs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, members in groups.items():
        janus = [r["janus"] for r in members if "janus" in r]
        lines.append(
            f"| {label} | {len(members)} | {_mean_std([r.get('clip', {}).get('similarity') for r in members])} "
            f"| {_mean_std([r.get('fid', {}).get('value') for r in members])} "
            f"| {_mean_std([r.get('iq_iv', {}).get('iq') for r in members])} "
            f"| {_mean_std([r.get('iq_iv', {}).get('iv') for r in members])} "
            f"| {_mean_std([j['frontal_share'] for j in janus])} "
            f"| {sum(j['janus'] for j in janus)}/{len(janus)} | {sum(j['collapsed'] for j in janus)}/{len(janus)} |"
        )
    return lines


def table_row(name: str, result: dict) -> list[str]:
    method = method_label(result)
    janus = result.get("janus")
    return [
        name,
        method,
        _number(result.get("clip", {}).get("similarity")),
        _number(result.get("clip", {}).get("distance")),
        _significant(result.get("fid", {}).get("value")),
        _number(result.get("iq_iv", {}).get("iq")),
        _number(result.get("iq_iv", {}).get("iv")),
        _number(janus["frontal_share"], 2) if janus else "-",
        str(janus["frontal_arcs"]) if janus else "-",
        janus["verdict"] if janus else "-",
    ]


def compare_markdown(names: list[str], results: list[dict]) -> str:
    """compare.md: one row per run (and the ground truth of synthetic runs below it)."""
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + " --- |" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(table_row(n, r)) + " |" for n, r in zip(names, results)]
    labels = [method_label(r) for r in results]
    if len(set(labels)) < len(labels):  # several runs (seeds) of one method: their mean, and the Janus rate
        lines += ["", "Per method: mean ± std over its runs, and how many runs got each Janus verdict.", ""]
        lines += method_summary(results)
    truths = [(n, r["ground_truth"]) for n, r in zip(names, results) if "ground_truth" in r]
    if truths:
        lines += [
            "",
            "Ground truth (synthetic prior): the Janus benchmark's metrics against the reference object.",
            "",
            "| run | aligned PSNR (dB) | faces | excess faces | frontal share | share gap | side accuracy |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {n} | {g['aligned_psnr']:.2f} | {g['face_count']} | {g['excess_faces']} | {g['frontal_fraction']:.2f} "
            f"| {g['frontal_share_gap']:+.2f} | {g['side_accuracy']:.2f} |"
            for n, g in truths
        ]
    prompts = sorted({r["prompt"] for r in results})
    settings = results[0]["settings"]
    header = (
        f"Runs: {len(results)}; prompt(s): {', '.join(repr(p) for p in prompts)}. {settings['views']} turntable views "
        f"at {settings['elevation']:g}° elevation, {settings['size']} px; CLIP {settings['clip_model']}, classifier "
        f"{settings['classifier']}."
    )
    fids = sorted(
        {
            f"{r['fid']['features']} against {r['fid']['samples']} samples of the {r['fid']['source']}"
            for r in results
            if "fid" in r
        }
    )
    if fids:
        header += " FID: " + "; ".join(fids) + "."
    return header + "\n\n" + "\n".join(lines) + "\n"


def write_compare_figure(names: list[str], results: list[dict], strips: list[Tensor], path: Path) -> Path:
    """compare.png: one turntable strip per run, its metrics beside it."""
    plt = _pyplot()
    columns = max(s.shape[0] for s in strips)
    fig = plt.figure(figsize=(1.25 * columns + 4.8, 1.45 * len(strips) + 0.4))
    grid = fig.add_gridspec(len(strips), columns + 1, width_ratios=[1.0] * columns + [3.8], wspace=0.05, hspace=0.3)
    for row, (name, result, strip) in enumerate(zip(names, results, strips)):
        for column in range(strip.shape[0]):
            ax = fig.add_subplot(grid[row, column])
            ax.imshow(_picture(strip[column]))
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"{column * 360.0 / strip.shape[0]:.0f}°", fontsize=8)
            if column == 0:
                ax.set_ylabel(name, fontsize=8)
        text = fig.add_subplot(grid[row, columns])
        text.axis("off")
        text.text(0.03, 0.5, "\n".join(summary_lines(result)), va="center", fontsize=7, family="monospace")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def _significant(value) -> str:
    return "-" if value is None else f"{value:.4g}"
