"""How well does the learned psi fit a scene that does not move? (the diagnostic of ``monitors/psi_error.py``)

Freezes a scene (a .ply, or the run's random initial ball), then trains the run's learned psi on fresh renders of it,
exactly as the generate loop does (``ScoreDistillation.update_psi``: same batch, cameras, p_null, optimiser), and
measures its error against the exact scores every ``--every`` updates. Separates what psi can learn (capacity,
learning rate, dropout, timestep sampling) from the lag behind a moving scene.

    .venv/bin/python research/scripts/psi_fit.py --scene runs/demo/scene.ply --updates 1200 --set psi.lr=1e-3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from esd_gs.cli.main import parse_args
from esd_gs.estimators import ParticlePsiConfig
from esd_gs.io import read_ply
from esd_gs.monitors.psi_error import PsiDiagnostic
from esd_gs.pipeline.build import build_trainer
from esd_gs.render import render


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", type=Path, default=None, help="the frozen scene (default: the initial ball)")
    parser.add_argument("--updates", type=int, default=1200)
    parser.add_argument("--every", type=int, default=200)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="generate options")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    argv = ["generate", "a head", "--preset", "synthetic", "psi:residual"]
    for item in args.set:
        key, value = item.split("=", 1)
        argv += [f"--{key.replace('_', '-')}", *value.split(",")]
    config = parse_args(argv)
    torch.manual_seed(0)
    trainer = build_trainer(config, Path("/tmp/esd-gs-psi-fit"), torch.device("cpu"))
    if args.scene is not None:
        trainer.scene = read_ply(args.scene)
    bank = ParticlePsiConfig().bank_size
    diagnostic = PsiDiagnostic(config.diagnose, trainer.prior, bank, config.distill.effective_lambda)
    size = config.resolution
    rows, start = [], time.perf_counter()
    for update in range(args.updates + 1):
        if update % args.every == 0:
            errors = diagnostic.measure(
                trainer.psi, trainer.text.plain, lambda n, g: trainer.render_latents(n, size, g)
            )
            rows.append({"update": update, "errors": errors})
            print(
                update,
                " ".join(
                    f"t{e['t']} null {e['psi_null']:.3f} cam {e['psi_camera']:.3f} upd {e['psi_update']:.2f} "
                    f"(particle {e['particle_null']:.3f}, upd {e['particle_update']:.2f})"
                    for e in errors
                ),
                flush=True,
            )
        if update == args.updates:
            break
        cams = config.cameras.sample(config.batch_size, generator=trainer.camera_gen)
        with torch.no_grad():
            rgb = render(trainer.scene, cams, size, size, background=trainer._backgrounds(len(cams))).rgb
            latents = trainer.prior.encode(rgb)
        trainer.distill.update_psi(latents, cams, generator=trainer.noise_gen)
    print(f"{time.perf_counter() - start:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps({"argv": argv, "scene": str(args.scene), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
