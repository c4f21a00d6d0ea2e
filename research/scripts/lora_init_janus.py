"""The Janus benchmark on the fitted synthetic UNet with each LoRA initialisation of psi (issue 31, item 2).

``esd-gs bench janus`` has no option for psi's ``--psi.lora-init``, so this script builds the benchmark's own
configuration (``bench_base_config(prior="synthetic-unet")``), sets ``psi.lora_init`` and runs the benchmark's own
loop and scoring (``run_janus_benchmark``) once per initialisation, into ``OUT/<init>/``. Seeds are added one at a
time across the initialisations (seed 0 of each, then seed 1 of each, ...), so an interrupted measurement holds
whole pairs; a re-run continues, keeping the finished runs (as the benchmark does).

Usage (from the repository root; about 4 min per run on 2 free cores):

    .venv/bin/python research/scripts/lora_init_janus.py --inits kaiming gaussian --seeds 3 \
        --out runs/lora-init-janus --json research/results/lora_init/lora_init_janus.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from esd_gs.bench.janus import BenchRun, bench_base_config, run_janus_benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inits", nargs="+", default=["kaiming", "gaussian"], help="--psi.lora-init values")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. seeds-1 per initialisation")
    parser.add_argument("--lambda-entropy", type=float, default=1.0, help="ESD's lambda")
    parser.add_argument("--out", type=Path, default=Path("runs/lora-init-janus"), help="one benchmark folder per init")
    parser.add_argument("--json", type=Path, default=None, help="write every run's record here")
    args = parser.parse_args()

    base = bench_base_config(prior="synthetic-unet")
    runs = [BenchRun("esd", args.lambda_entropy, "learned")]
    device = torch.device("cpu")
    for seeds in range(1, args.seeds + 1):
        for init in args.inits:
            config = replace(base, psi=replace(base.psi, lora_init=init))
            print(f"--- psi.lora_init = {init}, seeds 0 .. {seeds - 1}", flush=True)
            run_janus_benchmark(runs, seeds, config, args.out / init, device)
    records = {init: json.loads((args.out / init / "results.json").read_text()) for init in args.inits}
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(records, indent=1))
    for init, result in records.items():
        for r in result["runs"]:
            print(
                f"{init:9s} seed {r['seed']}: aligned PSNR {r['aligned_psnr']:.2f} dB, faces {r['face_count']}, "
                f"frontal share {r['frontal_fraction']:.2f}, side accuracy {r['side_accuracy']:.2f}"
            )


if __name__ == "__main__":
    main()
