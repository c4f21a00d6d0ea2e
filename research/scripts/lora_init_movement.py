"""How far psi's output moves from phi's in its first updates, with each LoRA initialisation (issue 31, item 2).

On the fitted synthetic UNet (``--preset synthetic-unet``'s phi, from its cache), a LoRA psi made as ``generate``
makes it (the benchmark's settings: AdamW lr 1e-3, the plain eps loss), with its camera MLP frozen so that only the
LoRA moves, is trained on batches of 4 of the prior's images at random cameras. After 1, 10 and 100 updates its
noise prediction on 16 fixed noisy images (t from 50 to 950) is compared with the one at step 0 (phi's):
||eps_psi - eps_phi|| / ||eps_phi||. Also the standard deviation of each LoRA A matrix at step 0. With B = 0 at the
start, Adam moves B by about lr per element per step whatever A is, so the first updates move psi's output in
proportion to A's scale.

Usage (from the repository root; a few minutes once the UNet is cached):

    OMP_NUM_THREADS=1 .venv/bin/python research/scripts/lora_init_movement.py \
        --json research/results/lora_init/lora_init_movement.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from esd_gs.bench.janus import bench_base_config
from esd_gs.cameras import OrbitSampler
from esd_gs.priors import SyntheticUNetPrior, synthetic_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inits", nargs="+", default=["kaiming", "gaussian"], help="--psi.lora-init values")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. seeds-1 of psi's initialisation and batches")
    parser.add_argument("--updates", type=int, nargs="+", default=[1, 10, 100], help="measure after these updates")
    parser.add_argument("--json", type=Path, default=None, help="write the measurements here")
    parser.add_argument("--fit-steps", type=int, default=None, help="the UNet's fit steps (default: the preset's)")
    args = parser.parse_args()

    base = bench_base_config(prior="synthetic-unet")
    if args.fit_steps is not None:  # another fit (cached under its own settings): a quick check of this script
        base = replace(base, prior=replace(base.prior, steps=args.fit_steps))
    device = torch.device("cpu")
    oracle = synthetic_images(base.prior).build(device, base.run_context)
    images = oracle.images  # [256, 3, 32, 32] in [-1, 1]: the fitted UNet's pixel-space "latents"
    gen = torch.Generator().manual_seed(1234)
    eval_index = torch.randperm(images.shape[0], generator=gen)[:16]
    eval_t = torch.linspace(50, 950, 16).long()
    eval_noise = torch.randn(16, *images.shape[1:], generator=gen)
    eval_cams = OrbitSampler().sample(16, generator=gen).embedding()

    results = []
    for init in args.inits:
        for seed in range(args.seeds):
            phi = SyntheticUNetPrior.from_oracle(oracle, base.resolution, base.prior, device)  # a fresh UNet each time
            text = base.prior.text_embeddings(phi, base.prompt).plain
            torch.manual_seed(seed)
            psi = replace(base.psi, lora_init=init).build(phi)
            psi.camera_embedding.requires_grad_(False)
            a_std = [float(p.detach().std()) for n, p in psi.unet.named_parameters() if "lora_A" in n]
            x_t = phi.add_noise(images[eval_index], eval_noise, eval_t)
            eps_phi = psi.eps(x_t, eval_t, text, eval_cams)
            train_gen = torch.Generator().manual_seed(100 + seed)
            moved = {}
            for update in range(1, max(args.updates) + 1):
                index = torch.randint(0, images.shape[0], (4,), generator=train_gen)
                cams = OrbitSampler().sample(4, generator=train_gen).embedding()
                psi.train_step(images[index], text, cams, train_gen)
                if update in args.updates:
                    eps = psi.eps(x_t, eval_t, text, eval_cams)
                    moved[update] = float((eps - eps_phi).norm() / eps_phi.norm())
            row = {"init": init, "seed": seed, "a_std_min": min(a_std), "a_std_max": max(a_std), "moved": moved}
            results.append(row)
            print(json.dumps(row), flush=True)
    summary = {}
    for init in args.inits:
        rows = [r for r in results if r["init"] == init]
        summary[init] = {str(u): sum(r["moved"][u] for r in rows) / len(rows) for u in args.updates}
    ratio = {}
    if {"kaiming", "gaussian"} <= set(args.inits):
        ratio = {u: summary["gaussian"][u] / summary["kaiming"][u] for u in summary["gaussian"]}
    print("mean movement:", json.dumps(summary), "gaussian / kaiming:", json.dumps(ratio))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        out = {"psi_lr": base.psi.lr, "loss_weighting": base.psi.loss_weighting, "runs": results}
        out.update({"mean_moved": summary, "gaussian_over_kaiming": ratio})
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
