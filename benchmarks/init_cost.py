"""What ``--init shap-e`` costs on a CPU: Shap-E at openai/shap-e's full-size shapes, random weights.

Real weights exist on no machine here, so the pipeline is built from the published configs
(``esd_gs.testing.tiny_shap_e.full_size_shap_e_components``; the tokenizer and the text encoder's vocabulary are the
tiny ones, which changes only an embedding lookup). Timed, each ``--reps`` times (median):

- one pass of the denoiser (``PriorTransformer``, 24 layers of width 1024 on 1024 latent tokens) with text guidance
  (a batch of 2): Shap-E's sampler makes 2 x steps - 1 of them (diffusers' Heun scheduler), so 64 steps cost 127
  passes, extrapolated from the measured median (running 127 passes here takes most of an hour);
- the whole sampler through the pipeline (text encoding, ``--sample-steps`` steps, ``output_type="latent"``), once:
  it checks the extrapolation (its passes against the denoiser's median);
- the mesh: ``decode_to_mesh`` on a ``grid``^3 grid (the renderer's MLP at every grid point, marching cubes, a colour
  per vertex) for each ``--grids``; random weights make a blobby field, not an object's, so the vertex count (and the
  colour queries) differ from a real object's;
- turning a mesh into the initial Gaussians (``ShapEInit.from_mesh``: 4,096 surface points grown to 16,384).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/init_cost.py --json benchmarks/results/init-cost.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from esd_gs.initial import ShapEInit
from esd_gs.testing.tiny_sd import tiny_clip_tokenizer
from esd_gs.testing.tiny_shap_e import full_size_shap_e_components


def timed(fn, reps: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(reps):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--grids", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--steps", type=int, default=64, help="Shap-E steps the total is extrapolated to")
    parser.add_argument("--sample-steps", type=int, default=2, help="steps of the one whole-pipeline sampling run")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    from diffusers import ShapEPipeline

    torch.manual_seed(0)
    start = time.perf_counter()
    pipe = ShapEPipeline(
        tokenizer=tiny_clip_tokenizer(Path("/tmp/esd-gs-init-cost-tokenizer")), **full_size_shap_e_components()
    )
    pipe.set_progress_bar_config(disable=True)
    build_s = time.perf_counter() - start
    params = {
        name: sum(p.numel() for p in getattr(pipe, name).parameters())
        for name in ("prior", "text_encoder", "shap_e_renderer")
    }
    prior = pipe.prior
    hidden = torch.randn(2, 1024, 1024)
    embeds = torch.randn(2, 768)
    timestep = torch.tensor([500.0, 500.0])
    with torch.no_grad():
        pass_s, _ = timed(
            lambda: prior(hidden, timestep=timestep, proj_embedding=embeds).predicted_image_embedding, args.reps
        )
        start = time.perf_counter()
        pipe("a red car", num_inference_steps=args.sample_steps, guidance_scale=15.0, output_type="latent")
        sampled_s = time.perf_counter() - start
        latent = torch.randn(1, 1024, 1024)
        decode = {}
        for grid in args.grids:
            seconds, mesh = timed(
                lambda g=grid: pipe.shap_e_renderer.decode_to_mesh(latent, torch.device("cpu"), grid_size=g), args.reps
            )
            decode[grid] = {"seconds": seconds, "vertices": int(mesh.verts.shape[0]), "faces": int(mesh.faces.shape[0])}
    colors = torch.stack([mesh.vertex_channels[c] for c in "RGB"], dim=1)
    gaussians_s, _ = timed(lambda: ShapEInit().from_mesh(mesh.verts, mesh.faces, colors, 2.5, 0), args.reps)
    passes = 2 * args.steps - 1
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "parameters": params,
        "build_s": build_s,
        "denoiser_pass_s": pass_s,
        "denoiser_passes": passes,
        "pipeline_s": {"steps": args.sample_steps, "passes": 2 * args.sample_steps - 1, "seconds": sampled_s},
        "sampling_s_extrapolated": sampled_s + pass_s * (passes - (2 * args.sample_steps - 1)),
        "decode": decode,
        "gaussians_from_mesh_s": gaussians_s,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
