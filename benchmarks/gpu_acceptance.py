"""GPU acceptance run: what a first real run on a CUDA machine needs, checked and measured in one command, failing
loudly (exit 1, a reason per failure in the table and on stdout) when something is wrong.

    python benchmarks/gpu_acceptance.py --out runs/acceptance          # CUDA: full size, 512 px, 3 runs of 100 steps
    python benchmarks/gpu_acceptance.py --out runs/acceptance --full   # CUDA: all 7 configurations, 300 steps a run
    python benchmarks/gpu_acceptance.py --out runs/acceptance --configs esd-shared-fp16,esd-shared-fp16-compiled
                                                                       # CUDA: --compile beside eager, 100 steps
    .venv/bin/python benchmarks/gpu_acceptance.py --out runs/acc       # no CUDA: tiny sizes on CPU (about a minute)

What it does, writing ``OUT/acceptance.md`` (a table) and ``OUT/acceptance.json``:
1. Probes gsplat's CUDA kernels (building them the first time, timed). On CUDA, gsplat must load: the runs would
   otherwise time the PyTorch renderer; ``--accept-torch-renderer`` accepts that fallback (the runs then check that
   they used it).
2. Compares esd-gs's PyTorch renderer with gsplat on the same random scenes on the GPU (with the dense oracle where
   gsplat cannot run: on CPU, or an accepted fallback): images, alpha, depth and every parameter gradient, held to the
   tolerances of the project's own gsplat test (``esd_gs.render.agreement.GSPLAT_AGREEMENT``), plus the visibility
   (radii) and means2d gradients that drive densification (reported, not held to a bound).
3. Builds a Stable Diffusion 2.1-base-shaped model with random weights (full size on CUDA: 865M-parameter UNet, VAE,
   23-layer text encoder, fp16; the tiny model on CPU), saved as a diffusers folder, and runs ``esd-gs generate`` on it
   through the CLI, densification on, for each configuration of ``CONFIGS`` (fp16 runs in fp32 on CPU).
4. Checks each run, from its metrics.jsonl, run.json and checkpoint:
   - no step was non-finite (the loop's skipped steps, a NaN/Inf loss or psi loss in the metrics);
   - every step and run.json name the renderer expected (gsplat on CUDA, torch on CPU or an accepted fallback);
   - a learned psi learned: the share of its LoRA B entries that moved from their start (B starts at zero; an entry
     whose gradient underflows to exactly zero never moves) is at least ``PSI_MIN_B_MOVED``; its loss on a fixed probe
     (``probe_psi``: 16 renders of the final scene at the final size, one stratified timestep each, fixed noise) fell
     by at least ``PSI_MIN_LOSS_DROP`` (relative) from the psi the run started with (rebuilt from the run's seed) to
     the one it ended with; and its fp16 loss scaler skipped at most ``SCALER_MAX_SKIP_SHARE`` of its steps.
   and reports median it/s (after ``WARMUP_STEPS``) overall and at the final render size, peak GPU memory, Gaussians.
Targets to report against (not asserted): ESD >= 8 it/s eager and >= 12 it/s with ``--compile`` at 512 px with
batch 1 on an H100, peak <= 16 GB. A compiled run fails when its passes ran eager after all (``compile_fallback``).
Random weights give real shapes, memory and time, not meaningful pictures.

Why the probe's loss drop separates a psi that learns from one that does not: a psi whose update does nothing ends
with the very weights it started with, so its probe loss is the same bit for bit (a drop of exactly 0), while a
training psi takes AdamW steps down this same loss on renders of the same scene, so its loss on fresh samples of
that distribution falls. On the tiny CPU model (lr 1e-4) it falls by about 1e-4 a step (7e-4 after the 6 steps of
the CPU run, 2e-3 after 20; ESD with a shared fp32 and a separate bf16 psi, 4 seeds); ``tests/test_gpu_acceptance.py``
holds a clean run to 4x the bound and a no-op psi to fail. At full size more weights move by about lr a step
(rank-4 LoRA on every attention projection of the 865M UNet, the 1280-wide camera MLP), so 100 steps should drop it
by at least the tiny model's rate, ~1e-2 or 100x the bound; not yet measured on a GPU.

Time budget of the default run on one H100 (estimates: nothing has been measured on a GPU yet): gsplat's first JIT
build ~4 min (0 when cached); building and saving the random-weight model (2.6 GB fp16) ~40 s; the renderer
comparison ~5 s; each generate run ~30 s of process start, model load, turntable and export, plus its steps (30% at
256 px, then 512 px; SDS ~0.1 s a step, ESD ~0.2-0.3 s: phi's CFG pass, psi's camera and null passes, psi's training
step, the VAE encode and its backward); each learned psi's probe ~20 s (a second model load). Default: SDS fp16, ESD
shared fp16 and ESD separate bf16, 100 steps each: 40 + 5 + 3 x 30 + (10 + 2 x 30) + 2 x 20 s ~ 4 min, ~ 8 min with
the first gsplat build, inside 10. ``--full`` (six eager configurations, 300 steps each):
45 + (30 + 5 x 90) + 6 x 30 + 5 x 20 s ~ 13.5 min, ~ 17.5 min with the build, plus the compiled run. The compiled
run's first step compiles three UNet graphs and a backward with Triton (minutes; unmeasured), so its median it/s
(after ``WARMUP_STEPS``) excludes the compile, and its wall time shows it.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch

from esd_gs.cameras import OrbitSampler
from esd_gs.render import gsplat_backend, render
from esd_gs.render.agreement import GSPLAT_AGREEMENT, allclose_excess
from esd_gs.scene import GaussianScene
from esd_gs.testing.scenes import random_scene
from esd_gs.testing.tiny_sd import build_full_size_stable_diffusion, build_tiny_stable_diffusion


class Config(NamedTuple):
    """One generate run of the acceptance run."""

    method: str
    psi: str
    """"shared" or "separate" UNet for psi; "-" for SDS (no psi)."""
    precision: str
    """On CUDA; fp16 runs in fp32 on CPU."""
    default: bool
    """In the default set; the others run with --full."""
    args: tuple[str, ...] = ()
    """Extra arguments for ``esd-gs generate``."""
    cpu: bool = True
    """In the CPU run's sets too (the tiny model; ``--configs`` still names any). A compiled run is not: its compile
    costs minutes of C++ kernel builds on the 2-core CPU and gains nothing there (BENCHMARKS.md, "Compiled UNet
    passes")."""


CONFIGS: dict[str, Config] = {
    "sds-fp16": Config("sds", "-", "fp16", True),
    "vsd-shared-fp16": Config("vsd", "shared", "fp16", False),
    "esd-shared-fp16": Config("esd", "shared", "fp16", True),
    "esd-separate-fp16": Config("esd", "separate", "fp16", False),
    "esd-shared-bf16": Config("esd", "shared", "bf16", False),
    "esd-separate-bf16": Config("esd", "separate", "bf16", True),
    # --compile beside its eager twin: `--configs esd-shared-fp16,esd-shared-fp16-compiled` times both in one run.
    # Not in the default set: its compile (three UNet graphs and a backward, unmeasured on a GPU, minutes) would push
    # that set past 10 minutes with a first gsplat build.
    "esd-shared-fp16-compiled": Config("esd", "shared", "fp16", False, ("--compile",), cpu=False),
}
STEPS = {"default": 100, "full": 300, "cpu": 6}
"""Steps per generate run: the default set on CUDA, --full, and the tiny model on CPU."""
WARMUP_STEPS = 3
PSI_MIN_B_MOVED = 0.9
"""The least share of a learned psi's LoRA B entries that must have moved from their start."""
PSI_MIN_LOSS_DROP = 1e-4
"""The least relative drop of a learned psi's loss on the probe, start to end (the module docstring says why)."""
SCALER_MAX_SKIP_SHARE = 0.1
"""The largest share of psi's steps its fp16 loss scaler may skip: it starts at 2^16 and halves at each skip, so
finding its scale costs a few skips at the start of a run, far fewer than this."""
PROBE_VIEWS = 16


RENDERER_SCENES = ((10, 11, 12), (0, 100, 200), (1, 101, 201))
"""(scene, cameras, weights) seeds of the compared scenes; the first is the gsplat test's own case
(``tests/test_render.py::test_cpu_renderer_matches_gsplat``), on which ``GSPLAT_AGREEMENT`` was set."""


def compare_renderers(
    device: torch.device,
    seeds=RENDERER_SCENES,
    n: int = 2000,
    size: int = 64,
    backends: tuple[str, str] = ("torch", "gsplat"),
) -> list[dict]:
    """The PyTorch renderer vs a reference (``backends``: ours, the reference) on the same scenes and cameras, both on
    ``device``, at the size of the project's gsplat test by default (``esd_gs.render.agreement``). Per scene: max abs
    differences of rgb/alpha/depth, the share of Gaussians whose visibility agrees, relative L2 errors of the means2d
    gradient (on Gaussians both see) and of every parameter's gradient, and against ``GSPLAT_AGREEMENT``:
    ``image_excess`` and ``grad_excess_<param>`` (``allclose_excess``: at most 1 passes), and ``agree``."""
    rows = []
    for seed in seeds:
        seed, camera_seed, weight_seed = seed if isinstance(seed, tuple) else (seed, 100 + seed, 200 + seed)
        scene = random_scene(n, 3, seed)
        cams = OrbitSampler().sample(2, generator=torch.Generator().manual_seed(camera_seed))
        weights = torch.randn(2, 5, size, size, generator=torch.Generator().manual_seed(weight_seed)).to(device)
        results = {}
        for backend in backends:
            probe = GaussianScene(scene.raw()).to(device)
            out = render(probe, cams, size, size, background=(0.1, 0.2, 0.3), backend=backend)
            stacked = torch.cat([out.rgb, out.alpha, out.depth], dim=1)
            (stacked * weights).sum().backward()
            results[backend] = {
                "image": stacked.detach(),
                "grads": {k: v.grad.detach() for k, v in probe.params.items()},
                "visible": (out.info["radii"] > 0).all(dim=-1)
                if out.info["radii"].dim() == 3
                else out.info["radii"] > 0,
                "means2d": out.info["means2d"].grad.detach(),
            }
        ours, theirs = results[backends[0]], results[backends[1]]
        both = ours["visible"] & theirs["visible"]

        def rel(a, b):
            return float((a - b).norm() / b.norm().clamp_min(1e-12))

        row = {
            "seed": seed,
            "rgb_max_abs": float((ours["image"][:, :3] - theirs["image"][:, :3]).abs().max()),
            "alpha_max_abs": float((ours["image"][:, 3] - theirs["image"][:, 3]).abs().max()),
            "depth_max_abs": float((ours["image"][:, 4] - theirs["image"][:, 4]).abs().max()),
            "visible_agreement": float((ours["visible"] == theirs["visible"]).float().mean()),
            "means2d_grad_rel": rel(ours["means2d"][both], theirs["means2d"][both]),
            "image_excess": allclose_excess(ours["image"], theirs["image"], **GSPLAT_AGREEMENT["image"]),
        }
        row.update({f"grad_rel_{k}": rel(ours["grads"][k], theirs["grads"][k]) for k in ours["grads"]})
        row.update(
            {
                f"grad_excess_{k}": allclose_excess(ours["grads"][k], theirs["grads"][k], **GSPLAT_AGREEMENT["grad"])
                for k in ours["grads"]
            }
        )
        row["agree"] = worst_excess(row)[1] <= 1.0  # False for a NaN
        rows.append(row)
    return rows


def worst_excess(row: dict, grads_only: bool = False) -> tuple[str, float]:
    """(what, excess) of the comparison in ``row`` furthest from its tolerance: "image" or a parameter's name (its
    gradient); a NaN counts as furthest."""
    items = [(k[len("grad_excess_") :], v) for k, v in row.items() if k.startswith("grad_excess_")]
    items += [] if grads_only else [("image", row["image_excess"])]
    return max(items, key=lambda item: math.inf if math.isnan(item[1]) else item[1])


def renderer_failures(rows: list[dict], reference: str) -> list[str]:
    """One reason per compared scene whose renderers disagree beyond ``GSPLAT_AGREEMENT``."""
    failures = []
    for r in rows:
        if not r["agree"]:
            what, excess = worst_excess(r)
            what = what if what == "image" else f"{what} gradient"
            failures.append(
                f"renderers disagree on scene {r['seed']}: the PyTorch renderer's {what} is {excess:.3g} x the "
                f"tolerance away from {reference}'s"
            )
    return failures


def gsplat_failure(cuda: bool, probe: gsplat_backend.GsplatProbe, accept_torch: bool) -> str | None:
    """Why the run fails before any generate run: gsplat does not load on a CUDA machine, unless that fallback to the
    PyTorch renderer is accepted (``--accept-torch-renderer``)."""
    if cuda and not probe.ok and not accept_torch:
        return (
            f"gsplat does not load on CUDA ({probe.reason}): every run would time the PyTorch renderer "
            "(--accept-torch-renderer to accept that)"
        )
    return None


def expected_renderer(cuda: bool, probe: gsplat_backend.GsplatProbe) -> str:
    """The renderer every generate run must use: gsplat where its kernels load on CUDA, else the PyTorch one."""
    return "gsplat" if cuda and probe.ok else "torch"


def read_run(run_dir: Path) -> dict:
    """What one finished run's metrics.jsonl and run.json say: it/s (median after the warm-up, overall and at the final
    render size), peak memory, Gaussians, non-finite steps, the renderers named, psi's steps and its loss scaler's
    skips."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    timed = rows[WARMUP_STEPS:] or rows
    final_size = rows[-1]["resolution"]

    def nonfinite(row: dict) -> bool:  # a skipped step has no loss; psi's is None where psi did not train
        values = (row["loss"], row["psi_loss"])
        return row["loss"] is None or any(v is not None and not math.isfinite(v) for v in values)

    record = json.loads((run_dir / "run.json").read_text())
    return {
        "it_s": statistics.median(r["it_s"] for r in timed),
        "final_resolution": final_size,
        "it_s_final": statistics.median(r["it_s"] for r in timed if r["resolution"] == final_size),
        "peak_gib": max((r.get("gpu_mem_gb") or 0.0) for r in rows) or None,
        "gaussians_start": rows[0]["gaussians"],
        "gaussians_end": rows[-1]["gaussians"],
        "skipped_steps": rows[-1]["skipped"],
        "nonfinite_rows": sum(1 for r in rows if nonfinite(r)),
        "renderers": sorted({str(r.get("renderer")) for r in rows}),
        "run_json_renderer": record.get("renderer"),
        "psi_steps": sum(1 for r in rows if r["psi_loss"] is not None),
        "psi_scaler_skipped": rows[-1].get("psi_scaler_skipped"),
    }


def probe_psi(run_dir: Path, device: torch.device) -> dict:
    """How much a finished run's learned psi learned: its trainer is rebuilt from config.yaml (loading the model
    again), so psi starts where the run's psi started (the same seed), and then restored from the final checkpoint.
    ``lora_b_moved``: the share of LoRA B entries that differ from their start; ``psi_loss_start`` / ``_end``: psi's
    training loss (``OnlineEstimator.loss``) with its first and last weights on one fixed probe of ``PROBE_VIEWS``
    renders of the final scene at the final size, camera-conditioned, one stratified timestep each, fixed noise;
    ``psi_loss_drop``: 1 - end / start."""
    result = _probe_psi(run_dir, device)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()  # leave the GPU to the next generate run
    return result


def _probe_psi(run_dir: Path, device: torch.device) -> dict:
    from esd_gs.configs.yaml_io import load_yaml_config
    from esd_gs.pipeline.build import build_parts
    from esd_gs.training.trainer import Trainer

    config = dataclasses.replace(load_yaml_config(run_dir / "config.yaml"), compile=False)  # same weights, no compile
    parts = build_parts(config, device)
    trainer = Trainer(config, run_dir, device, parts)
    psi = trainer.psi
    start = {k: v.clone() for k, v in psi.state_dict().items()}  # a CPU float32 state can alias the live weights
    trainer.restore()
    end = {k: v.clone() for k, v in psi.state_dict().items()}
    keys = [k for k in start if "lora_B" in k]
    moved = sum(int((end[k] != start[k]).sum()) for k in keys) / max(sum(start[k].numel() for k in keys), 1)
    generator = torch.Generator().manual_seed(1234)
    latents, cameras = trainer.render_latents(PROBE_VIEWS, trainer.resolution(1.0), generator=generator)
    num_train = trainer.prior.num_train_timesteps
    timesteps = ((torch.arange(PROBE_VIEWS) + 0.5) * num_train / PROBE_VIEWS).long().to(latents.device)
    noise = torch.randn(latents.shape, generator=generator).to(latents.device)
    losses = []
    for state in (start, end):
        psi.load_state_dict(state)
        with torch.no_grad():  # 4 views at a time: equal chunks, so the mean of their means is the probe's mean
            batches = zip(*(tensor.split(4) for tensor in (latents, cameras, timesteps, noise)))
            chunks = [psi.loss(x, parts.text.plain, c, t, eps) for x, c, t, eps in batches]
        losses.append(float(torch.stack(chunks).mean()))
    return {
        "lora_b_moved": moved,
        "psi_loss_start": losses[0],
        "psi_loss_end": losses[1],
        "psi_loss_drop": 1.0 - losses[1] / losses[0],
    }


def compile_fallback(stderr: str) -> str | None:
    """The line of a ``--compile`` run that says its UNet passes ran eager after all (a compiler failure, or a torch
    that cannot compile them: ``pipeline.build.compile_unet_passes``), or None."""
    said = [line.strip() for line in stderr.splitlines() if line.strip().startswith("--compile:") and "eager" in line]
    return said[0] if said else None


def select_configs(names: str | None, full: bool, cuda: bool) -> list[str]:
    """The configurations to run: ``names`` (comma-separated) as given, else the default set (all with ``full``),
    without those that are for CUDA only when there is none (``Config.cpu``)."""
    if names is not None:
        return [n.strip() for n in names.split(",") if n.strip()]
    return [n for n, c in CONFIGS.items() if (full or c.default) and (c.cpu or cuda)]


def speedups(runs: list[dict]) -> list[str]:
    """'compiled / eager' it/s at the final size, for each compiled run whose eager twin (its name without
    "-compiled") ran beside it and both passed."""
    done = {r["name"]: r for r in runs if r["ok"] and not r["failures"]}
    return [
        f"{name}: {r['it_s_final'] / done[name[: -len('-compiled')]]['it_s_final']:.2f}x its eager twin's it/s at "
        f"the final size ({r['it_s_final']:.2f} against {done[name[: -len('-compiled')]]['it_s_final']:.2f})"
        for name, r in done.items()
        if name.endswith("-compiled") and name[: -len("-compiled")] in done
    ]


def run_failures(row: dict, renderer: str) -> list[str]:
    """Why a finished run fails acceptance (the module docstring's checks), one reason each."""
    failures = []
    if row.get("compiled") and row.get("compile_fallback"):
        failures.append(f"--compile ran eager, so its it/s are eager's: {row['compile_fallback']}")
    nonfinite = max(row["skipped_steps"], row["nonfinite_rows"])
    if nonfinite:
        failures.append(f"{nonfinite} non-finite step(s) (NaN/Inf loss or gradient)")
    named = set(row["renderers"]) | {str(row["run_json_renderer"])}
    if named != {renderer}:
        failures.append(f"rendered with {', '.join(sorted(named))}, expected {renderer}")
    if row["method"] == "sds":
        return failures
    steps = row["psi_steps"]
    if row["lora_b_moved"] < PSI_MIN_B_MOVED:
        failures.append(f"psi's LoRA B: only {row['lora_b_moved']:.1%} of its entries moved (< {PSI_MIN_B_MOVED:.0%})")
    if not row["psi_loss_drop"] >= PSI_MIN_LOSS_DROP:
        failures.append(
            f"psi's probe loss did not fall: {row['psi_loss_start']:.6g} -> {row['psi_loss_end']:.6g} "
            f"(drop {row['psi_loss_drop']:.2e} < {PSI_MIN_LOSS_DROP:.0e})"
        )
    skips = row["psi_scaler_skipped"]
    if skips is None:
        failures.append("psi's loss-scaler skips are not in the metrics")
    elif skips > SCALER_MAX_SKIP_SHARE * steps:
        failures.append(f"psi's fp16 loss scaler skipped {skips} of {steps} steps (> {SCALER_MAX_SKIP_SHARE:.0%})")
    return failures


def run_generate(name: str, config: Config, precision: str, model: Path, out: Path, steps: int, full: bool) -> dict:
    """One ``esd-gs generate`` run of ``config`` through the CLI, and its row (``read_run``; ``probe_psi`` for a
    learned psi); ``failures`` is left to the caller."""
    run_dir = out / "runs" / name
    cmd = [
        sys.executable,
        "-m",
        "esd_gs",
        "generate",
        "a plush dragon toy",
        "--prior.model",
        str(model),
        "--method",
        config.method,
        "--prior.precision",
        precision,
        "--steps",
        str(steps),
        "--out",
        str(run_dir),
        "--overwrite",
        "--seed",
        "0",
        "--psi.no-shared-unet" if config.psi == "separate" else "--psi.shared-unet",
        "--output.turntable-views",
        "8",
        "--output.preview-every",
        "0",
        "--output.checkpoint-every",
        "0",
        *config.args,
    ]
    if config.method == "sds":
        cmd += ["--guidance-scale", "100"]  # and SDS's own default growth threshold
    if not full:  # the tiny model (on CPU, or --tiny on CUDA): 64 px native
        cmd += [
            "--resolution",
            "64",
            "--resolution-start",
            "32",
            "--init.num-points",
            "1000",
            "--output.turntable-size",
            "48",
        ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, COLUMNS="160"))
    row = {
        "name": name,
        "method": config.method,
        "psi": config.psi,
        "precision": precision,
        "compiled": "--compile" in config.args,
        "compile_fallback": compile_fallback(proc.stderr),
        "wall_s": time.perf_counter() - start,
        "ok": proc.returncode == 0,
    }
    if proc.returncode != 0:
        row["error"] = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return row
    row.update(read_run(run_dir))
    if config.method != "sds":
        start = time.perf_counter()
        row.update(probe_psi(run_dir, torch.device("cuda" if torch.cuda.is_available() else "cpu")))
        row["probe_s"] = time.perf_counter() - start
    return row


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        "# esd-gs GPU acceptance run",
        "",
        f"- result: {'FAILED' if report['failures'] else 'passed'}, {report['wall_s']:.0f} s",
        f"- machine: {env['device_name']}, torch {env['torch']}, CUDA {env['cuda']}",
        f"- gsplat: {env['gsplat']}"
        + (f" (kernels built in {env['gsplat_build_s']:.0f} s)" if env.get("gsplat_build_s") else ""),
        f"- model: {report['model_kind']}"
        + (f" (built in {env['model_build_s']:.0f} s)" if env.get("model_build_s") else "")
        + f", {report['steps']} steps a run, renders {report['resolution']}, renderer expected: {report['renderer']}",
        "",
    ]
    lines += [f"- FAILED: {reason}" for reason in report["failures"]]
    lines += [""] if report["failures"] else []
    if report["renderers"]:
        tol = GSPLAT_AGREEMENT
        lines += [
            f"## The PyTorch renderer vs {report['reference_renderer']}",
            "",
            f"Tolerances (`esd_gs.render.agreement`): images atol {tol['image']['atol']:g}; gradients atol "
            f"{tol['grad']['atol']:g}, rtol {tol['grad']['rtol']:g}. 'x tol': the worst element's share of its "
            "tolerance (at most 1 passes).",
            "",
            "| seed | rgb max abs | alpha max abs | depth max abs | visible agree | means2d grad rel | image x tol | worst grad x tol | agree |",  # noqa: E501 (a markdown table row)
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for r in report["renderers"]:
            worst = worst_excess(r, grads_only=True)
            lines.append(
                f"| {r['seed']} | {r['rgb_max_abs']:.2e} | {r['alpha_max_abs']:.2e} | {r['depth_max_abs']:.2e} | "
                f"{r['visible_agreement']:.4f} | {r['means2d_grad_rel']:.2e} | {r['image_excess']:.3f} | "
                f"{worst[1]:.3f} ({worst[0]}) | {'yes' if r['agree'] else 'NO'} |"
            )
        lines.append("")
    else:
        lines += [f"Renderer comparison skipped: {report['renderers_skipped']}.", ""]
    lines += [
        "## esd-gs generate through the CLI",
        "",
        "| run | method | psi | precision | it/s (median) | it/s at final size | peak GiB | Gaussians start -> end | NaN steps | psi B moved | psi probe loss start -> end | scaler skips | wall s | result |",  # noqa: E501 (a markdown table row)
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in report["runs"]:
        head = f"| {r['name']} | {r['method']} | {r['psi']} | {r['precision']} |"
        if not r["ok"]:
            lines.append(f"{head} | | | | | | | | {r['wall_s']:.0f} | FAILED: {r['error']} |")
            continue
        peak = f"{r['peak_gib']:.2f}" if r["peak_gib"] else "-"
        learned = "lora_b_moved" in r
        moved = f"{r['lora_b_moved']:.1%}" if learned else "-"
        loss = f"{r['psi_loss_start']:.4f} -> {r['psi_loss_end']:.4f}" if learned else "-"
        skips = f"{r['psi_scaler_skipped']} / {r['psi_steps']}" if learned else "-"
        result = "ok" if not r["failures"] else "FAILED: " + "; ".join(r["failures"])
        lines.append(
            f"{head} {r['it_s']:.2f} | {r['it_s_final']:.2f} ({r['final_resolution']} px) | {peak} | "
            f"{r['gaussians_start']:,} -> {r['gaussians_end']:,} | {max(r['skipped_steps'], r['nonfinite_rows'])} | "
            f"{moved} | {loss} | {skips} | {r['wall_s']:.0f} | {result} |"
        )
    ratios = speedups(report["runs"])
    lines += ["", *[f"- --compile: {ratio}" for ratio in ratios]] if ratios else []
    lines += [
        "",
        "Targets (H100, 512 px, batch 1): ESD >= 8 it/s eager, >= 12 it/s with --compile; peak <= 16 GB.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="output folder (model, runs, acceptance.md/json)")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"steps per generate run (default {STEPS['default']} on CUDA, {STEPS['full']} with --full, "
        f"{STEPS['cpu']} on CPU)",
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="all configurations (the compiled one on CUDA only); default: the default set",
    )
    parser.add_argument("--configs", default=None, help=f"comma-separated subset of: {', '.join(CONFIGS)}")
    parser.add_argument("--tiny", action="store_true", help="use the tiny model even on CUDA")
    parser.add_argument(
        "--accept-torch-renderer",
        action="store_true",
        help="on CUDA, accept runs with the PyTorch renderer when gsplat does not load (else that fails the run)",
    )
    args = parser.parse_args()
    names = select_configs(args.configs, args.full, torch.cuda.is_available())
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration(s) {', '.join(unknown)}: choose from {', '.join(CONFIGS)}")
    cuda = torch.cuda.is_available()
    full = cuda and not args.tiny
    steps = args.steps or STEPS["cpu" if not full else "full" if args.full else "default"]
    args.out.mkdir(parents=True, exist_ok=True)

    probe = gsplat_backend.probe_gsplat(announce=lambda line: print(line, flush=True))
    environment = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device_name": torch.cuda.get_device_name(0) if cuda else "CPU",
        "gsplat": probe.reason if probe.ok else f"not usable: {probe.reason}",
        "gsplat_build_s": probe.build_seconds,
    }
    print(f"[1/3] gsplat: {environment['gsplat']}", flush=True)
    failures = []
    fatal = gsplat_failure(cuda, probe, args.accept_torch_renderer)
    renderer = expected_renderer(cuda, probe)
    reference = renderer if renderer == "gsplat" else "dense"
    renderers, skipped = [], None
    if fatal:
        failures.append(fatal)
        skipped = "gsplat does not load"
        print(f"FAILED: {fatal}", flush=True)
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        # The dense oracle holds every (pixel, Gaussian) pair: small scenes where it is the reference.
        sizes = {} if reference == "gsplat" else {"n": 300, "size": 32}
        renderers = compare_renderers(device, backends=("torch", reference), **sizes)
        failures += renderer_failures(renderers, reference)
        verdict = "agree" if all(r["agree"] for r in renderers) else "DISAGREE"
        print(f"[2/3] PyTorch renderer vs {reference} on {device}: {verdict} ({len(renderers)} scenes)", flush=True)

    runs = []
    if names and not fatal:
        model = args.out / ("model-sd21-base-random" if full else "model-tiny")
        if not (model / "model_index.json").is_file():
            kind = "full-size" if full else "tiny"
            print(f"building a {kind} random-weight SD 2.1-base folder in {model} ...", flush=True)
            start = time.perf_counter()
            (build_full_size_stable_diffusion if full else build_tiny_stable_diffusion)(model)
            environment["model_build_s"] = time.perf_counter() - start
        for i, name in enumerate(names, 1):
            config = CONFIGS[name]
            precision = config.precision
            if not cuda and precision == "fp16":
                precision, name = "fp32", name.replace("fp16", "fp32")  # fp16 is GPU-only
            row = run_generate(name, config, precision, model, args.out, steps, full)
            row["failures"] = run_failures(row, renderer) if row["ok"] else [f"generate failed: {row['error']}"]
            failures += [f"{name}: {reason}" for reason in row["failures"]]
            runs.append(row)
            status = f"{row['it_s']:.2f} it/s, " if row["ok"] else ""
            status += "ok" if not row["failures"] else "FAILED: " + "; ".join(row["failures"])
            print(f"[3/3] run {i}/{len(names)} {name} ({precision}): {status}", flush=True)
    report = {
        "environment": environment,
        "renderer": renderer,
        "reference_renderer": reference,
        "renderers": renderers,
        "renderers_skipped": skipped,
        "runs": runs,
        "steps": steps,
        "model_kind": "full-size SD 2.1-base, random weights" if full else "tiny SD, random weights",
        "resolution": "256 -> 512 px" if full else "32 -> 64 px",
        "failures": failures,
        "wall_s": time.perf_counter() - started,
    }
    (args.out / "acceptance.json").write_text(json.dumps(report, indent=1))
    text = markdown(report)
    (args.out / "acceptance.md").write_text(text)
    print(text)
    if failures:
        print(f"FAILED: {len(failures)} problem(s):", *failures, sep="\n- ", flush=True)
        return 1
    print("acceptance run passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
