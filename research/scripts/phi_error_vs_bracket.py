"""Why the particle psi breaks on the fitted UNet: phi's own error against the size of ESD's bracket.

With lambda = 1, eq. 9's bracket is eps_phi(x_t) - eps_psi(x_t, null). The particle estimator's eps_psi is the exact
mixture score of a bank of renders, so on the fitted UNet prior its bracket is

    eps_unet - eps_bank  =  (eps_exact - eps_bank)  +  (eps_unet - eps_exact),

the bracket ESD wants (phi the exact prior) plus phi's network error, which nothing cancels. A LoRA psi is a copy of
the UNet (psi = phi at step 0), so the same network error appears in both of its terms and cancels. This script
measures, on fresh renders of saved scenes at the training cameras, for t = 100 ... 900:

- ``bracket``: ||eps_exact - eps_bank||, the wanted bracket (the exact prior's score minus the bank's mixture score);
- ``phi_error``: ||eps_unet - eps_exact||, the fitted UNet's error on those noised renders;
- ``ratio``: phi_error / bracket (above 1: the particle bracket on the UNet is mostly phi's error);
- ``cosine``: between the particle bracket on the UNet (eps_unet - eps_bank) and the wanted one.

    R=research/results/janus-synthetic-unet
    .venv/bin/python research/scripts/phi_error_vs_bracket.py ball assets/head.ply $R/scenes/*.ply \
        --json $R/phi_error_vs_bracket.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from esd_gs.bench.janus import bench_base_config
from esd_gs.diffusion.mixture import mixture_eps
from esd_gs.io import read_ply
from esd_gs.priors import SyntheticUNetPrior
from esd_gs.render import render

TIMESTEPS = (100, 300, 500, 700, 900)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenes", nargs="+", help="saved scene.ply files (-Y up), or 'ball': every run's start")
    parser.add_argument("--holdout", type=int, default=16, help="renders at which the scores are compared")
    parser.add_argument(
        "--bank", type=int, default=128, help="renders in the exact null score's mixture (as the diagnostic's)"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device("cpu")
    base = bench_base_config(prior="synthetic-unet")
    exact = base.prior.images.build(device, base.run_context)
    unet = SyntheticUNetPrior.from_oracle(exact, base.resolution, base.prior, device)
    assert torch.allclose(exact.alphas_cumprod, unet.alphas_cumprod, atol=1e-6)  # one forward process for both

    def rows_of(prior) -> torch.Tensor:  # the prompt's plain condition, one row per image, as in training
        plain = prior.text_embeddings(base.prompt).plain
        return plain.expand(args.holdout, *plain.shape[1:])

    text_exact, text_unet = rows_of(exact), rows_of(unet)
    size, results = base.resolution, {}
    for path in args.scenes:
        if path == "ball":  # the initial scene of the benchmark's seed-0 runs (the trainer's seed + 2)
            scene = base.init.scene(generator=torch.Generator().manual_seed(2))
        else:
            scene = read_ply(path).to(device)
        gen = torch.Generator().manual_seed(0)

        def latents(count: int) -> torch.Tensor:
            cams = base.cameras.sample(count, generator=gen)  # noqa: B023 (used inside this iteration only)
            with torch.no_grad():
                return exact.encode(render(scene, cams, size, size, background=1.0).rgb)  # noqa: B023

        z, bank = latents(args.holdout), latents(args.bank)
        rows = []
        for t in TIMESTEPS:
            steps = torch.full((len(z),), t, dtype=torch.long)
            noise = torch.randn(z.shape, generator=gen)
            x_t = exact.add_noise(z, noise, steps)
            with torch.no_grad():
                eps_exact = exact.eps(x_t, steps, text_exact, text_exact, 1.0)
                eps_unet = unet.eps(x_t, steps, text_unet, text_unet, 1.0)
            eps_bank = mixture_eps(x_t, bank, exact.alphas_cumprod, steps)
            wanted, particle = eps_exact - eps_bank, eps_unet - eps_bank
            bracket = float(wanted.norm())
            phi_error = float((eps_unet - eps_exact).norm())
            cosine = float(torch.nn.functional.cosine_similarity(particle.flatten(), wanted.flatten(), dim=0))
            rows.append(
                {"t": t, "bracket": bracket, "phi_error": phi_error, "ratio": phi_error / bracket, "cosine": cosine}
            )
            print(
                f"{path}: t={t} bracket {bracket:.3f} phi error {phi_error:.3f} ratio {phi_error / bracket:.2f} "
                f"cosine {cosine:.2f}",
                flush=True,
            )
        results[str(path)] = rows
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
