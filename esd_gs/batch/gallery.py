"""index.md and index.html of a batch: one entry per job with its picture (contact sheet), its state, its numbers
(final loss and Gaussians from metrics.jsonl; CLIP, FID and the Janus measure from eval.json when the run was
evaluated) and a link to its scene.ply. Paths are relative, so the folder can be moved or served as is."""

from __future__ import annotations

import html
import json
from pathlib import Path

from ..atomic import atomic_path
from ..errors import UserError
from ..files import read_json_or_none, read_text_file
from ..video import SHEET_COLUMNS
from .jobs import Job

THUMBNAIL_PX = 136
"""Width at which index.html shows each view of a job's contact sheet (at least 128 px, so that a person can judge
it): a card is as wide as ``SHEET_COLUMNS`` of them."""
CARD_PX = SHEET_COLUMNS * THUMBNAIL_PX


def _last_metrics(run: Path) -> dict:
    try:
        lines = read_text_file(run / "metrics.jsonl", "metrics").strip().splitlines()
        return json.loads(lines[-1]) if lines else {}
    except (UserError, ValueError, RecursionError):
        return {}


def _evaluation(run: Path) -> dict:
    saved = read_json_or_none(run / "eval.json")
    return saved if isinstance(saved, dict) else {}


def job_rows(out: Path, jobs: list[Job], state: dict) -> list[dict]:
    rows = []
    for job in jobs:
        run = out / job.name
        info, metrics, evaluation = state.get(job.name, {}), _last_metrics(run), _evaluation(run)
        rows.append(
            {
                "name": job.name,
                "prompt": job.config.prompt,
                "method": job.config.distill.method,
                "seed": job.config.seed,
                "status": info.get("status", "pending"),
                "reason": info.get("reason", ""),
                "grad": metrics.get("grad_rms"),  # the last step's (README: why not "loss")
                "gaussians": metrics.get("gaussians"),
                "picture": f"{job.name}/contact_sheet.png" if (run / "contact_sheet.png").is_file() else None,
                "scene": f"{job.name}/scene.ply" if (run / "scene.ply").is_file() else None,
                "clip": evaluation.get("clip", {}).get("similarity"),
                "fid": evaluation.get("fid", {}).get("value"),
                "janus": evaluation.get("janus"),
            }
        )
    return rows


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _janus(row: dict) -> str:
    janus = row["janus"]
    if not janus:
        return "-"
    return f"{janus.get('verdict', '')}: {janus['frontal_arcs']} arc(s), share {janus['frontal_share']:.2f}"


def write_gallery(out: Path, jobs: list[Job], state: dict) -> None:
    rows = job_rows(out, jobs, state)
    evaluated = any(r["clip"] is not None or r["janus"] for r in rows)
    head = ["job", "prompt", "method", "seed", "status", "grad (rms)", "Gaussians"]
    head += ["CLIP sim", "FID", "Janus"] if evaluated else []
    head += ["scene", "picture"]
    lines = [f"# Batch: {len(rows)} jobs", "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        status = r["status"] + (f": {r['reason']}" if r["reason"] else "")
        cells = [
            r["name"],
            r["prompt"].replace("|", "\\|"),
            r["method"],
            str(r["seed"]),
            status.replace("|", "\\|"),
            _fmt(r["grad"], ".3g"),
            _fmt(r["gaussians"], "d"),
        ]
        if evaluated:
            cells += [_fmt(r["clip"], ".3f"), _fmt(r["fid"], ".4g"), _janus(r)]
        cells += [
            f"[scene.ply]({r['scene']})" if r["scene"] else "-",
            f"![{r['name']}]({r['picture']})" if r["picture"] else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    with atomic_path(out / "index.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    cards = []
    for r in rows:
        picture = (
            f'<img src="{html.escape(r["picture"])}" alt="{html.escape(r["name"])}">'
            if r["picture"]
            else '<div class="none">no picture</div>'
        )
        scene = f'<a href="{html.escape(r["scene"])}">scene.ply</a>' if r["scene"] else ""
        numbers = [f"grad {_fmt(r['grad'], '.3g')}", f"{_fmt(r['gaussians'], 'd')} Gaussians"]
        if evaluated:
            numbers += [f"CLIP {_fmt(r['clip'], '.3f')}", f"FID {_fmt(r['fid'], '.4g')}", f"Janus {_janus(r)}"]
        reason = f'<p class="reason">{html.escape(r["reason"])}</p>' if r["reason"] else ""
        cards.append(
            f'<figure class="{html.escape(r["status"])}">{picture}<figcaption><b>{html.escape(r["name"])}</b><br>'
            f"{html.escape(r['prompt'])}<br>{html.escape(r['method'])}, seed {r['seed']}: {html.escape(r['status'])}"
            f"{reason}<br>{' · '.join(html.escape(n) for n in numbers)}<br>{scene}</figcaption></figure>"
        )
    page = (
        '<!doctype html><html><head><meta charset="utf-8"><title>esd-gs batch</title><style>'
        "body{font-family:sans-serif;margin:1.5em}main{display:flex;flex-wrap:wrap;gap:1em}"
        f"figure{{margin:0;width:{CARD_PX}px;border:1px solid #ccc;padding:.5em}}img{{width:100%}}"
        "figure.failed{border-color:#d62728}.reason{color:#d62728;margin:.2em 0}.none{height:4em;color:#888}"
        f"</style></head><body><h1>Batch: {len(rows)} jobs</h1><main>{''.join(cards)}</main></body></html>\n"
    )
    with atomic_path(out / "index.html") as tmp:
        tmp.write_text(page)
