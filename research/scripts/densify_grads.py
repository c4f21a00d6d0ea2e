"""How large are the screen-space gradients that densification thresholds? (sets ``--densify.grad-threshold``)

gsplat's DefaultStrategy grows a Gaussian when the mean, over the steps it was visible, of the norm of its means2d
gradient (scaled to pixels of a [-1, 1] image: x width/2 and x height/2, times the number of cameras) exceeds
``grow_grad2d``. That norm depends on how the loss is reduced: 3DGS's 2e-4 belongs to a mean-reduced photometric
loss; our score-distillation loss is summed over latent entries (``distillation/rule.py``), like threestudio's. This
script runs the real generate loop (``build_trainer``) and records, every step, the per-Gaussian norms exactly as gsplat
accumulates them, then prints the quantiles of (a) every per-step, per-visible-Gaussian norm and (b) what gsplat
actually thresholds: each Gaussian's mean norm over the steps it was visible, with the share of Gaussians above
candidate thresholds (the share that one refinement would clone or split).

    # the synthetic prior (CPU, a minute):
    .venv/bin/python research/scripts/densify_grads.py --prior synthetic --steps 60
    # any diffusers Stable Diffusion folder, e.g. the full-size random-weight one gpu_acceptance.py builds:
    .venv/bin/python research/scripts/densify_grads.py --model DIR --method esd --steps 8 --out grads.json

Every other ``esd-gs generate`` option can follow as ``--set KEY=VALUE`` pairs (e.g. ``--set resolution=256``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from esd_gs.cli.main import parse_args
from esd_gs.pipeline.build import build_trainer

THRESHOLDS = (2e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.2, 0.3, 0.5, 1.0, 1.5, 2.0)
QUANTILES = (0.5, 0.9, 0.95, 0.99)


def scaled_norms(info: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Per camera and Gaussian, the means2d gradient norm scaled as gsplat's DefaultStrategy scales it (pixels of a
    [-1, 1] image, times the number of cameras), and whether the Gaussian is visible: ([C, N], [C, N] bool)."""
    grads = info["means2d"].grad.detach().clone()  # [C, N, 2]
    grads[..., 0] *= info["width"] / 2.0 * info["n_cameras"]
    grads[..., 1] *= info["height"] / 2.0 * info["n_cameras"]
    return grads.norm(dim=-1), (info["radii"] > 0).all(dim=-1)


def per_gaussian_norms(info: dict) -> torch.Tensor:
    """The norms gsplat's DefaultStrategy accumulates, for the Gaussians visible in any camera: [M]."""
    norms, visible = scaled_norms(info)
    return norms[visible].float().cpu()


def per_gaussian_update(info: dict, sums: torch.Tensor, counts: torch.Tensor) -> None:
    """Accumulate as gsplat's DefaultStrategy does: per Gaussian, the sum of norms and the number of visible views."""
    norms, visible = scaled_norms(info)
    sums += (norms * visible).sum(dim=0).float().cpu()
    counts += visible.sum(dim=0).float().cpu()


def summarise(norms: torch.Tensor) -> dict:
    quantiles = torch.quantile(norms, torch.tensor(QUANTILES, dtype=norms.dtype)).tolist()
    return {
        "samples": int(norms.numel()),
        "quantiles": {f"p{round(q * 100)}": v for q, v in zip(QUANTILES, quantiles)},
        "max": float(norms.max()),
        "share_above": {f"{t:g}": float((norms > t).float().mean()) for t in THRESHOLDS},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prior", choices=["sd", "synthetic"], default="sd", help="the 2D prior")
    parser.add_argument("--model", default=None, help="Stable Diffusion folder or id (with --prior sd)")
    parser.add_argument("--method", choices=["sds", "vsd", "esd"], default="esd", help="update rule")
    parser.add_argument("--steps", type=int, default=8, help="training steps to record")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra generate options")
    parser.add_argument("--out", type=Path, default=None, help="write the summary as JSON here")
    args = parser.parse_args()

    argv = [
        "generate",
        "a head" if args.prior == "synthetic" else "densify-grads",  # the synthetic prior's object: the head
        "--preset",
        "synthetic" if args.prior == "synthetic" else "esd",
        "--method",
        args.method,
        "--steps",
        str(args.steps),
        "--densify.no-enabled",
    ]  # measure the gradients of the scene as initialised, without growth
    if args.model:
        argv += ["--prior.model", args.model]
    for pair in args.set:
        key, value = pair.split("=", 1)
        argv += [f"--{key.replace('_', '-')}", value]
    config = parse_args(argv)
    norms, times = [], []
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = build_trainer(config, Path(run_dir), torch.device(args.device))
        original = trainer.densifier.post_backward
        sums = torch.zeros(trainer.scene.num_gaussians)
        counts = torch.zeros(trainer.scene.num_gaussians)

        def recording_post_backward(params, optimizers, step, info):
            norms.append(per_gaussian_norms(info))
            if info["means2d"].shape[1] == sums.shape[0]:  # no Gaussian was removed
                per_gaussian_update(info, sums, counts)
            return original(params, optimizers, step, info)

        trainer.densifier.post_backward = recording_post_backward
        for _ in range(args.steps):
            start = time.perf_counter()
            trainer.train_step()
            times.append(time.perf_counter() - start)
    summary = {
        "prior": args.prior,
        "model": args.model,
        "method": args.method,
        "resolution": config.resolution,
        "resolution_start": config.resolution_start,
        "batch_size": config.batch_size,
        "steps": args.steps,
        "seconds_per_step": sorted(times)[len(times) // 2],
        "per_step": summarise(torch.cat(norms)),
        "per_gaussian_mean": summarise(sums[counts > 0] / counts[counts > 0]),
    }
    text = json.dumps(summary, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
