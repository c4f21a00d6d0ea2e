"""GPU acceptance run: everything a first real run on a CUDA machine needs, checked and measured in one command.

    python benchmarks/gpu_acceptance.py --out runs/acceptance           # CUDA: full size, 512 px, 300 steps a run
    .venv/bin/python benchmarks/gpu_acceptance.py --out runs/acceptance # no CUDA: tiny sizes on CPU (a few minutes)

What it does, writing ``OUT/acceptance.md`` (a table) and ``OUT/acceptance.json``:
1. Probes gsplat's CUDA kernels (building them the first time, timed).
2. Compares gsplat with esd-gs's PyTorch renderer on the same random scenes on the GPU: images, alpha, depth, every
   parameter gradient, which Gaussians are visible (radii) and the means2d gradients that drive densification.
3. Builds a Stable Diffusion 2.1-base-shaped model with random weights (full size on CUDA: 865M-parameter UNet, VAE,
   23-layer text encoder; the tiny model on CPU), saved as a diffusers folder, and runs ``esd-gs generate`` on it
   through the CLI, densification on, for each configuration: SDS; VSD and ESD with psi sharing phi's UNet; ESD with a
   separate psi UNet; in fp16 and bf16 (fp32 and bf16 on CPU).
4. Reads each run's metrics.jsonl and checkpoint: median it/s (after 3 warm-up steps), peak GPU memory, final
   Gaussian count, NaN steps skipped, and whether psi's LoRA moved away from zero (it must, for VSD and ESD).
Targets to report against (not asserted): ESD >= 8 it/s at 512 px with batch 1 on an H100, peak <= 16 GB.
Random weights give real shapes, memory and time, not meaningful pictures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from esd_gs.cameras import OrbitSampler
from esd_gs.render import gsplat_backend, render
from esd_gs.scene import GaussianScene
from esd_gs.testing.scenes import random_scene
from esd_gs.testing.tiny_sd import build_full_size_stable_diffusion, build_tiny_stable_diffusion
from esd_gs.training.checkpoint import checkpoint_tensor_file

CONFIGS = {
    # name: (method, shared psi UNet, precision on CUDA)
    "sds-fp16": ("sds", True, "fp16"),
    "vsd-shared-fp16": ("vsd", True, "fp16"),
    "esd-shared-fp16": ("esd", True, "fp16"),
    "esd-separate-fp16": ("esd", False, "fp16"),
    "esd-shared-bf16": ("esd", True, "bf16"),
    "esd-separate-bf16": ("esd", False, "bf16"),
}
WARMUP_STEPS = 3


def compare_renderers(
    device: torch.device,
    seeds=(0, 1, 2),
    n: int = 4000,
    size: int = 128,
    backends: tuple[str, str] = ("torch", "gsplat"),
) -> list[dict]:
    """The PyTorch renderer vs gsplat (``backends``: ours, the reference) on the same scenes and cameras, both on
    ``device``. Per scene: max abs differences of rgb/alpha/depth, the share of Gaussians whose visibility agrees,
    and relative L2 errors of the means2d gradient (on Gaussians both see) and of every parameter's gradient."""
    rows = []
    for seed in seeds:
        scene = random_scene(n, 3, seed)
        cams = OrbitSampler().sample(2, generator=torch.Generator().manual_seed(100 + seed))
        weights = torch.randn(2, 5, size, size, generator=torch.Generator().manual_seed(200 + seed)).to(device)
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
        }
        row.update({f"grad_rel_{k}": rel(ours["grads"][k], theirs["grads"][k]) for k in ours["grads"]})
        rows.append(row)
    return rows


def read_run(run_dir: Path) -> dict:
    """it/s, peak memory, Gaussians, skipped steps and LoRA motion of one finished run directory."""
    from safetensors import safe_open

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rates = [r["it_s"] for r in rows[WARMUP_STEPS:]] or [r["it_s"] for r in rows]
    lora_max = None
    checkpoint = checkpoint_tensor_file(run_dir / "checkpoint")
    if checkpoint is not None:
        with safe_open(str(checkpoint), framework="pt") as f:
            values = [
                float(f.get_tensor(k).abs().max()) for k in f.keys() if k.startswith("psi.lora.") and "lora_B" in k
            ]
        lora_max = max(values) if values else None
    return {
        "it_s": statistics.median(rates),
        "peak_gib": max((r.get("gpu_mem_gb") or 0.0) for r in rows) or None,
        "gaussians_start": rows[0]["gaussians"],
        "gaussians_end": rows[-1]["gaussians"],
        "skipped_steps": rows[-1]["skipped"],
        "lora_b_max": lora_max,
    }


def run_generate(
    name: str, model: Path, out: Path, method: str, shared: bool, precision: str, args, cuda: bool
) -> dict:
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
        method,
        "--prior.precision",
        precision,
        "--steps",
        str(args.steps),
        "--out",
        str(run_dir),
        "--overwrite",
        "--seed",
        "0",
        "--psi.shared-unet" if shared else "--psi.no-shared-unet",
        "--output.turntable-views",
        "8",
        "--output.preview-every",
        "0",
        "--output.checkpoint-every",
        "0",
    ]
    if method == "sds":
        cmd += ["--guidance-scale", "100"]  # and SDS's own default growth threshold
    if not cuda:  # the tiny model: 64 px native
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
    wall = time.perf_counter() - start
    row = {
        "name": name,
        "method": method,
        "psi": "-" if method == "sds" else ("shared" if shared else "separate"),
        "precision": precision,
        "wall_s": wall,
        "ok": proc.returncode == 0,
    }
    if proc.returncode != 0:
        row["error"] = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return row
    row.update(read_run(run_dir))
    return row


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        "# esd-gs GPU acceptance run",
        "",
        f"- machine: {env['device_name']}, torch {env['torch']}, CUDA {env['cuda']}",
        f"- gsplat: {env['gsplat']}"
        + (f" (kernels built in {env['gsplat_build_s']:.0f} s)" if env.get("gsplat_build_s") else ""),
        f"- model: {report['model_kind']}, {report['steps']} steps a run, renders {report['resolution']}",
        "",
    ]
    if report["renderers"]:
        lines += [
            "## gsplat vs the PyTorch renderer",
            "",
            "| seed | rgb max abs | alpha max abs | depth max abs | visible agree | means2d grad rel | worst param grad rel |",  # noqa: E501 (a markdown table row)
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in report["renderers"]:
            worst = max((v, k) for k, v in r.items() if k.startswith("grad_rel_"))
            lines.append(
                f"| {r['seed']} | {r['rgb_max_abs']:.2e} | {r['alpha_max_abs']:.2e} | {r['depth_max_abs']:.2e} | "
                f"{r['visible_agreement']:.4f} | {r['means2d_grad_rel']:.2e} | {worst[0]:.2e} ({worst[1][9:]}) |"
            )
        lines.append("")
    else:
        lines += [f"Renderer comparison skipped: {report['renderers_skipped']}.", ""]
    lines += [
        "## esd-gs generate through the CLI",
        "",
        "| run | method | psi | precision | it/s (median) | peak GiB | Gaussians start -> end | NaN steps | psi LoRA max abs B | wall s |",  # noqa: E501 (a markdown table row)
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["runs"]:
        if not r["ok"]:
            lines.append(
                f"| {r['name']} | {r['method']} | {r['psi']} | {r['precision']} | failed: {r['error']} | | | | | {r['wall_s']:.0f} |"  # noqa: E501 (a markdown table row)
            )
            continue
        peak = f"{r['peak_gib']:.2f}" if r["peak_gib"] else "-"
        lora = f"{r['lora_b_max']:.2e}" if r["lora_b_max"] is not None else "-"
        lines.append(
            f"| {r['name']} | {r['method']} | {r['psi']} | {r['precision']} | {r['it_s']:.2f} | {peak} | "
            f"{r['gaussians_start']:,} -> {r['gaussians_end']:,} | {r['skipped_steps']} | {lora} | {r['wall_s']:.0f} |"
        )
    lines += ["", "Targets (H100, 512 px, batch 1): ESD >= 8 it/s, peak <= 16 GB."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="output folder (model, runs, acceptance.md/json)")
    parser.add_argument(
        "--steps", type=int, default=None, help="steps per generate run (default 300 on CUDA, 6 on CPU)"
    )
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated subset of: {', '.join(CONFIGS)}")
    parser.add_argument("--tiny", action="store_true", help="use the tiny model even on CUDA")
    args = parser.parse_args()
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration(s) {', '.join(unknown)}: choose from {', '.join(CONFIGS)}")
    cuda = torch.cuda.is_available()
    full = cuda and not args.tiny
    args.steps = args.steps or (300 if full else 6)
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
    renderers, skipped = [], None
    if cuda and probe.ok:
        renderers = compare_renderers(torch.device("cuda"))
        print(f"[2/3] renderers compared on {len(renderers)} scenes", flush=True)
    else:
        skipped = "no CUDA device" if not cuda else "gsplat's kernels do not load"
        print(f"[2/3] renderer comparison skipped: {skipped}", flush=True)

    model = args.out / ("model-sd21-base-random" if full else "model-tiny")
    if not (model / "model_index.json").is_file():
        print(f"building {'full-size' if full else 'tiny'} random-weight SD 2.1-base folder in {model} ...", flush=True)
        (build_full_size_stable_diffusion if full else build_tiny_stable_diffusion)(model)
    runs = []
    for i, name in enumerate(names, 1):
        method, shared, precision = CONFIGS[name]
        if not cuda and precision == "fp16":
            precision, name = "fp32", name.replace("fp16", "fp32")  # fp16 is GPU-only
        row = run_generate(name, model, args.out, method, shared, precision, args, cuda)
        runs.append(row)
        status = f"{row['it_s']:.2f} it/s" if row["ok"] else f"FAILED: {row['error']}"
        print(f"[3/3] run {i}/{len(names)} {name} ({precision}): {status}", flush=True)
    report = {
        "environment": environment,
        "renderers": renderers,
        "renderers_skipped": skipped,
        "runs": runs,
        "steps": args.steps,
        "model_kind": "full-size SD 2.1-base, random weights" if full else "tiny SD, random weights",
        "resolution": "256 -> 512 px" if full else "32 -> 64 px",
    }
    (args.out / "acceptance.json").write_text(json.dumps(report, indent=1))
    text = markdown(report)
    (args.out / "acceptance.md").write_text(text)
    print(text)
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
