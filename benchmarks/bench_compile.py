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

import os
import statistics
import tempfile

import torch
from bench_guidance import prior_factory, run_config, step_parser

from esd_gs.priors.stable_diffusion import resolve_dtype


def main() -> None:
    parser = step_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="eager / compiled pairs")
    args = parser.parse_args()
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="esd-gs-inductor-")  # read at the first compile
    device = torch.device(args.device)
    dtype = resolve_dtype(args.precision, device)
    make_prior = prior_factory(args, device, dtype)

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
