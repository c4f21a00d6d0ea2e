"""Time of one full score-distillation step, for SDS, VSD and ESD, with phi and psi sharing a UNet or not.

One step = render a batch of views of a 4,096-Gaussian scene, encode it with the VAE (with gradient), phi with
text CFG (2B UNet passes), psi for the camera and the null camera where the method needs them, backward into the
scene, one Adam step on theta, and one psi training step (forward + backward + AdamW).

    # CPU, the tiny offline Stable Diffusion (loaded through from_pretrained), 64 px renders:
    .venv/bin/python benchmarks/bench_guidance.py
    # GPU: full-size SD 2.1-base UNet and VAE configs on random weights, 512 px renders, fp16:
    python benchmarks/bench_guidance.py --full-size --device cuda --size 512 --precision fp16

Reports the median step time over ``--steps`` steps after ``--warmup`` steps, iterations/s, and peak GPU memory.
Run it on an otherwise idle machine: on 2 cores a second busy process distorts CPU timings badly.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from esd_gs.cameras import OrbitSampler
from esd_gs.distillation import DistillationConfig, ScoreDistillation
from esd_gs.distillation.timesteps import TimestepSchedule
from esd_gs.estimators import CameraLoRAEstimator, LoRAPsiConfig
from esd_gs.initial import BallInit
from esd_gs.pipeline.build import compile_unet_passes
from esd_gs.priors.stable_diffusion import StableDiffusionPrior, resolve_dtype
from esd_gs.render import render
from esd_gs.testing.tiny_sd import (
    build_tiny_stable_diffusion,
    sd21_base_unet_config,
    sd21_scheduler_config,
    sd21_text_encoder_config,
    sd21_vae_config,
    tiny_clip_vocab,
    write_tiny_clip_tokenizer_files,
)


def full_size_prior(device: torch.device, dtype: torch.dtype) -> StableDiffusionPrior:
    """SD 2.1-base's UNet and VAE architecture with random weights (the text encoder is 1 layer: it runs once)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    unet = UNet2DConditionModel(**sd21_base_unet_config())
    vae = AutoencoderKL(**sd21_vae_config())
    with tempfile.TemporaryDirectory() as tmp:
        write_tiny_clip_tokenizer_files(tmp)
        tokenizer = CLIPTokenizer.from_pretrained(tmp, model_max_length=77)
    vocab, _ = tiny_clip_vocab()
    text_encoder = CLIPTextModel(CLIPTextConfig(**sd21_text_encoder_config(len(vocab), num_hidden_layers=1)))
    scheduler = DDPMScheduler(**sd21_scheduler_config())
    return StableDiffusionPrior(
        unet.to(device, dtype),
        vae.to(device, dtype),
        text_encoder.to(device, dtype),
        tokenizer,
        scheduler,
        device,
        dtype,
    )


def run_config(make_prior, method: str, shared: bool, args, device: torch.device, compiled: bool = False) -> dict:
    """One configuration's steps (module docstring); ``compiled``: phi's and psi's UNet passes through torch.compile
    (``--compile``), whose first step compiles them."""
    prior = make_prior()
    text = prior.text_embeddings("a head")
    config = DistillationConfig(method=method, lambda_entropy=0.5)
    psi = CameraLoRAEstimator.create(prior, LoRAPsiConfig(shared_unet=shared)) if config.needs_psi else None
    if compiled:
        compile_unet_passes(prior, psi)
    distill = ScoreDistillation(prior, text, config, TimestepSchedule(), psi)
    gen = torch.Generator().manual_seed(0)
    scene = BallInit(num_points=4096, opacity=0.3).scene(generator=gen).to(device)
    optimizer = torch.optim.Adam(scene.parameters(), lr=1e-3)
    sampler = OrbitSampler()
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        cams = sampler.sample(args.batch, generator=gen)
        images = render(scene, cams, args.size, args.size, background=0.5).rgb
        out = distill.step(images, cams, progress=i / (args.warmup + args.steps), generator=None)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        distill.update_psi(out.latents, cams)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i == 0:
            first = time.perf_counter() - start
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    median = statistics.median(times)
    return {
        "method": method,
        "shared": shared if psi else "-",
        "step_s": median,
        "it_s": 1 / median,
        "peak_gib": peak,
        "first_step_s": first,
    }


def step_parser(description: str) -> argparse.ArgumentParser:
    """The options of a guidance-step benchmark: model size, device, precision, size, batch, steps (this script's and
    ``bench_compile.py``'s)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full-size", action="store_true", help="SD 2.1-base UNet/VAE configs, random weights")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto", help="auto (fp16 on CUDA, fp32 on CPU), fp32, fp16, bf16")
    parser.add_argument("--size", type=int, default=64, help="render size in pixels (latents are size / 8)")
    parser.add_argument("--batch", type=int, default=1, help="views per step")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    return parser


def prior_factory(args: argparse.Namespace, device: torch.device, dtype: torch.dtype):
    """A function that makes a fresh phi for each configuration: the full-size random-weight SD or the tiny one."""
    if args.full_size:
        return lambda: full_size_prior(device, dtype)
    path = build_tiny_stable_diffusion(tempfile.mkdtemp(prefix="esd-gs-bench-") + "/tiny", "epsilon")
    return lambda: StableDiffusionPrior.from_pretrained(str(path), device=device, precision=args.precision)


def main() -> None:
    args = step_parser(__doc__).parse_args()
    device = torch.device(args.device)
    dtype = resolve_dtype(args.precision, device)
    make_prior = prior_factory(args, device, dtype)

    print(
        f"torch {torch.__version__}, device {device}, dtype {dtype}, {args.size} px, batch {args.batch}, "
        f"{'full-size SD 2.1-base configs' if args.full_size else 'tiny SD'}, {torch.get_num_threads()} threads"
    )
    print(f"{'method':>6} {'shared':>7} {'ms/step':>9} {'it/s':>7} {'peak GiB':>9}")
    for method, shared in (("sds", True), ("vsd", True), ("esd", True), ("vsd", False), ("esd", False)):
        row = run_config(make_prior, method, shared, args, device)
        peak = f"{row['peak_gib']:9.2f}" if row["peak_gib"] is not None else f"{'-':>9}"
        print(
            f"{row['method']:>6} {str(row['shared']):>7} {row['step_s'] * 1e3:9.1f} {row['it_s']:7.2f} {peak}",
            flush=True,
        )
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
