"""``--compile`` against eager: one ESD guidance step (``bench_guidance.py``'s step, shared-UNet psi), side by side in
one run, and what the compile costs.

    # CPU, the tiny offline Stable Diffusion, 64 px renders:
    .venv/bin/python benchmarks/bench_compile.py
    # GPU: full-size SD 2.1-base UNet and VAE configs on random weights, 512 px renders, fp16:
    python benchmarks/bench_compile.py --full-size --device cuda --size 512 --precision fp16

Each round runs eager, then compiled, each on a fresh phi and psi, ``--warmup`` + ``--steps`` steps; the table gives
each run's median ms/step and it/s, compiled / eager, and the compiled run's first step, which compiles the UNet
passes. Inductor's cache goes to a new temporary folder (``TORCHINDUCTOR_CACHE_DIR``), so round 1 pays the cold
compile; later rounds find the graphs compiled in this process, and their first step is an ordinary step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

import torch
from bench_guidance import full_size_prior, run_config

from esd_gs.priors.stable_diffusion import StableDiffusionPrior, resolve_dtype
from esd_gs.testing.tiny_sd import build_tiny_stable_diffusion


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full-size", action="store_true", help="SD 2.1-base UNet/VAE configs, random weights")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto", help="auto (fp16 on CUDA, fp32 on CPU), fp32, fp16, bf16")
    parser.add_argument("--size", type=int, default=64, help="render size in pixels (latents are size / 8)")
    parser.add_argument("--batch", type=int, default=1, help="views per step")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="eager / compiled pairs")
    args = parser.parse_args()
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="esd-gs-inductor-")  # read at the first compile
    device = torch.device(args.device)
    dtype = resolve_dtype(args.precision, device)
    if args.full_size:

        def make_prior():
            return full_size_prior(device, dtype)
    else:
        path = build_tiny_stable_diffusion(tempfile.mkdtemp(prefix="esd-gs-bench-") + "/tiny", "epsilon")

        def make_prior():
            return StableDiffusionPrior.from_pretrained(str(path), device=device, precision=args.precision)

    print(
        f"torch {torch.__version__}, device {device}, dtype {dtype}, {args.size} px, batch {args.batch}, "
        f"{'full-size SD 2.1-base configs' if args.full_size else 'tiny SD'}, {torch.get_num_threads()} threads, "
        f"ESD (lambda 0.5), shared psi, median of {args.steps} steps after {args.warmup}"
    )
    print(f"{'round':>5} {'eager ms':>9} {'it/s':>7} {'compiled ms':>12} {'it/s':>7} {'ratio':>6} {'first step s':>13}")
    eager_ms, compiled_ms = [], []
    for round_ in range(1, args.rounds + 1):
        eager = run_config(make_prior, "esd", True, args, device)
        compiled = run_config(make_prior, "esd", True, args, device, compiled=True)
        eager_ms.append(eager["step_s"] * 1e3)
        compiled_ms.append(compiled["step_s"] * 1e3)
        print(
            f"{round_:>5} {eager_ms[-1]:9.1f} {eager['it_s']:7.2f} {compiled_ms[-1]:12.1f} {compiled['it_s']:7.2f} "
            f"{compiled_ms[-1] / eager_ms[-1]:6.2f} {compiled['first_step_s']:13.1f}",
            flush=True,
        )
    eager_med, compiled_med = statistics.median(eager_ms), statistics.median(compiled_ms)
    print(
        f"median {eager_med:9.1f} {1e3 / eager_med:7.2f} {compiled_med:12.1f} {1e3 / compiled_med:7.2f} "
        f"{compiled_med / eager_med:6.2f}"
    )


if __name__ == "__main__":
    main()
