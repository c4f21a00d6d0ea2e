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


def _verdict(ground_truth: dict) -> str:
    """A ground truth's verdict (``JanusMetrics.one_face``) in words; "-" for an eval.json written before it."""
    return {True: "one face", False: "missed"}.get(ground_truth.get("one_face"), "-")


def summary_lines(result: dict) -> list[str]:
    """The metrics of one eval.json as short lines (figure captions, terminal)."""
    lines = [entry.summary(result[entry.key]) for entry in METRICS.values() if entry.key in result]
    if "ground_truth" in result:
        gt = result["ground_truth"]
        lines.append(
            f"ground truth: {_verdict(gt)}, aligned PSNR {gt['aligned_psnr']:.2f} dB, "
            f"excess faces {gt['excess_faces']}, true back {gt.get('true_back_share', float('nan')):.2f}, "
            f"share gap {gt['frontal_share_gap']:+.2f}, side accuracy {gt['side_accuracy']:.2f}"
        )
    return lines


THUMBNAIL_INCHES = 1.6
"""Side of each view's picture in eval.png and compare.png, in inches: 160 px at their 100 dpi, so that a person can
judge it (at least 128 px)."""
STRIP_COLUMNS = 6
"""Views per row of eval.png's strip (its ``STRIP_VIEWS`` in two rows)."""
DPI = 100


def eval_figure(result: dict, views: Tensor):
    """The figure of eval.png (a matplotlib ``Figure``): a strip of views (``STRIP_VIEWS``, ``STRIP_COLUMNS`` a row)
    with each one's side; a chart over the whole turntable, of the CLIP similarity with the sides as a band under it,
    or of the sides alone when CLIP was not measured (``--metrics janus``), none when neither was; and the metrics.
    Every panel holds something."""
    plt = _pyplot()
    picks = strip_indices(views.shape[0])
    sides = result.get("janus", {}).get("sides")
    clip = result.get("per_view", {}).get("clip_similarity")
    lines = summary_lines(result)
    columns = min(STRIP_COLUMNS, len(picks))
    rows = -(-len(picks) // columns)
    chart = clip is not None or bool(sides)
    text_inches = 0.2 * len(lines) + 0.3
    heights = [THUMBNAIL_INCHES + 0.7] * rows + ([1.7] if chart else []) + [text_inches]
    width, height = columns * (THUMBNAIL_INCHES + 0.2) + 1.1, sum(heights) + 2.0
    fig = plt.figure(figsize=(width, height), dpi=DPI)
    grid = fig.add_gridspec(
        len(heights),
        columns,
        height_ratios=heights,
        hspace=0.3,
        wspace=0.12,
        left=0.8 / width,
        right=1 - 0.3 / width,
        top=1 - 0.6 / height,
        bottom=0.15 / height,
    )
    for position, index in enumerate(picks):
        ax = fig.add_subplot(grid[position // columns, position % columns])
        ax.imshow(_picture(views[index]))
        ax.set_xticks([])
        ax.set_yticks([])
        azimuth = index * 360.0 / views.shape[0]
        ax.set_title(
            f"{azimuth:.0f}°" + (f", {sides[index]}" if sides else ""),
            fontsize=9,
            color=SIDE_COLOURS.get(sides[index], "black") if sides else "black",
        )
        if sides:
            for spine in ax.spines.values():
                spine.set_color(SIDE_COLOURS[sides[index]])
                spine.set_linewidth(2.5)
    if chart:
        ax = fig.add_subplot(grid[rows, :])
        azimuths = np.arange(views.shape[0]) * 360.0 / views.shape[0]
        if clip is not None:
            ax.plot(azimuths, clip, color="black", lw=1.2, label="CLIP similarity")
            ax.set_ylabel("CLIP similarity")
        if sides:
            step = 360.0 / len(sides)
            if clip is not None:  # a band under the curve
                low, high = ax.get_ylim()
                for azimuth, side in zip(azimuths, sides):
                    ax.axvspan(azimuth, azimuth + step, ymin=0, ymax=0.08, color=SIDE_COLOURS[side], lw=0)
                ax.set_ylim(low, high)
            else:  # the sides alone: each view's side as a bar of its colour at its level
                level = {"front": 2, "side": 1, "back": 0}
                for azimuth, side in zip(azimuths, sides):
                    ax.bar(azimuth, level[side] + 1, width=step, align="edge", color=SIDE_COLOURS[side], lw=0)
                ax.set_yticks([1, 2, 3], ["back", "side", "front"])
                ax.set_ylim(0, 3.2)
                ax.set_ylabel("side")
            handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in SIDE_COLOURS.values()]
            ax.legend(
                handles, list(SIDE_COLOURS), loc="upper right", fontsize=8, ncol=3, title="side", title_fontsize=8
            )
        ax.set_xlim(0, 360)
        ax.set_xlabel("azimuth (degrees, 0 = front)")
    text = fig.add_subplot(grid[-1, :])
    text.axis("off")
    text.text(0.0, 0.0, "\n".join(lines), va="bottom", family="monospace", fontsize=9)
    fig.suptitle(f'{Path(result["scene"]).parent.name}/{Path(result["scene"]).name}: "{result["prompt"]}"')
    return fig


def write_eval_figure(result: dict, views: Tensor, path: Path) -> Path:
    """eval.png: ``eval_figure`` at ``DPI``, its blank margins trimmed."""
    plt = _pyplot()
    fig = eval_figure(result, views)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
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
            "| run | verdict | aligned PSNR (dB) | faces | excess faces | true back | frontal share | share gap "
            "| side accuracy |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {n} | {_verdict(g)} | {g['aligned_psnr']:.2f} "
            f"| {g['face_count']} | {g['excess_faces']} | {g.get('true_back_share', float('nan')):.2f} "
            f"| {g['frontal_fraction']:.2f} | {g['frontal_share_gap']:+.2f} | {g['side_accuracy']:.2f} |"
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


def compare_figure(names: list[str], results: list[dict], strips: list[Tensor]):
    """The figure of compare.png: one turntable strip per run (each view ``THUMBNAIL_INCHES`` wide), its metrics
    beside it."""
    plt = _pyplot()
    columns, text_units = max(s.shape[0] for s in strips), 3.0
    width = (columns + text_units) * (THUMBNAIL_INCHES + 0.1) / 0.96
    fig = plt.figure(figsize=(width, (THUMBNAIL_INCHES + 0.35) * len(strips) + 0.4), dpi=DPI)
    grid = fig.add_gridspec(
        len(strips),
        columns + 1,
        width_ratios=[1.0] * columns + [text_units],
        wspace=0.05,
        hspace=0.3,
        left=0.02,
        right=0.98,
    )
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
    return fig


def write_compare_figure(names: list[str], results: list[dict], strips: list[Tensor], path: Path) -> Path:
    """compare.png: ``compare_figure`` at ``DPI``."""
    plt = _pyplot()
    fig = compare_figure(names, results, strips)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _significant(value) -> str:
    return "-" if value is None else f"{value:.4g}"
