"""How good is the fitted synthetic UNet (``--prior synthetic-unet``)? Fits it at the Janus benchmark's settings (or
loads it from the cache), then reports its noise prediction's error against the exact prior's over t, and draws
samples of both side by side (DDIM, 50 steps) with the share of samples whose nearest prior image is frontal.

    .venv/bin/python research/scripts/synthetic_unet_fit.py --json research/results/synthetic-unet/fit.json \
        --png research/results/synthetic-unet/samples.png

``--fit-steps N`` fits with N optimiser steps instead of the default (cached under its own key), ``--reference
FILE.ply`` fits another object's images.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from esd_gs.bench.janus import bench_base_config
from esd_gs.evaluation.janus import frontal_flags, nearest_prior_distances
from esd_gs.priors.synthetic_unet import fit_errors
from esd_gs.video import contact_sheet, write_png

TIMESTEPS = (50, 100, 300, 500, 700, 900)


@torch.no_grad()
def ddim_samples(prior, count: int, steps: int, seed: int) -> torch.Tensor:
    """``count`` DDIM samples (eta 0) of the prior's first prompt, in [0, 1]."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(prior.scheduler.config)
    scheduler.set_timesteps(steps)
    size = prior.unet.config.sample_size
    x = torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed))
    text = prior.text_embeddings(prior.prompts[0]).plain.expand(count, -1, -1)
    for t in scheduler.timesteps:
        eps = prior.eps(x, t.expand(count), text, text[:1], 1.0)
        x = scheduler.step(eps, t, x).prev_sample
    return ((x + 1) / 2).clamp(0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--fit-steps", type=int, default=None, help="the fit's optimiser steps (--prior.steps)")
    parser.add_argument("--reference", type=Path, default=None, help="another object's .ply (default: the head)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--png", type=Path, default=None)
    args = parser.parse_args()
    base = bench_base_config(prior="synthetic-unet", reference=args.reference)
    if args.fit_steps is not None:
        base = dataclasses.replace(base, prior=dataclasses.replace(base.prior, steps=args.fit_steps))
    start = time.perf_counter()
    prior = base.prior.build(torch.device("cpu"), base.run_context)  # fits (minutes) unless the cache has it
    fit_seconds = time.perf_counter() - start
    oracle = base.prior.images.build(torch.device("cpu"), base.run_context)
    errors = fit_errors(prior, oracle, TIMESTEPS, count=128)
    samples = ddim_samples(prior, args.samples, 50, seed=0)
    images = oracle.reference_images(0)
    frontal = frontal_flags(nearest_prior_distances(samples, images), oracle.azimuths)
    truth = frontal_flags(nearest_prior_distances(images, images), oracle.azimuths)
    nearest = nearest_prior_distances(samples, images).min(dim=1).values.sqrt().mean()
    result = {
        "settings": base.prior.fit_settings(),
        "parameters": sum(p.numel() for p in prior.unet.parameters()),
        "seconds to build (fit, or load from the cache)": round(fit_seconds, 1),
        "relative eps error vs the exact prior, by t": errors,
        "frontal share of DDIM samples": float(frontal.float().mean()),
        "frontal share of the prior's images": float(truth.float().mean()),
        "mean RMS distance of a sample to its nearest prior image": float(nearest),
    }
    print(json.dumps(result, indent=1))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    if args.png is not None:
        pick = images[torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(0))[: args.samples]]
        both = torch.cat([pick, samples]).permute(0, 2, 3, 1).numpy()
        args.png.parent.mkdir(parents=True, exist_ok=True)
        write_png(contact_sheet((both * 255).round().astype(np.uint8), columns=16), args.png)
        print(f"{args.png}: the first rows are prior images, the last rows the UNet's DDIM samples")


if __name__ == "__main__":
    main()
