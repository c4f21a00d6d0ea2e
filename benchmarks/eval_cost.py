"""What does `esd-gs evaluate` cost? Seconds per metric for one run (120 views), on this machine.

Two model sets, each loaded through the same ``from_pretrained`` path a user's models take:

- the tiny random models of the tests (``esd_gs.testing.tiny_eval``): the pipeline's own overhead;
- full-size architectures with random weights: CLIP ViT-B/32 (transformers' ``CLIPConfig()`` defaults are exactly
  openai/clip-vit-base-patch32's) and ResNet-50 (``ResNetConfig()`` = microsoft/resnet-50): the cost of the real
  models' compute (the weights' values do not change it).

FID's samples come from the synthetic prior (cheap renders); with Stable Diffusion the samples dominate, so the
script also times one classifier-free-guided UNet pass of SD 2.1-base's architecture (batch 2, 64x64 latents), from
which the cost of N samples at S DDIM steps is N x S x that (plus one VAE decode per sample).

    .venv/bin/python benchmarks/eval_cost.py --repeats 3 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from esd_gs.evaluation.evaluate import EvalConfig, evaluate, resolve_target
from esd_gs.evaluation.models import EvalModels
from esd_gs.testing.tiny_eval import build_tiny_classifier, build_tiny_clip
from esd_gs.testing.tiny_sd import tiny_clip_tokenizer

RUN = Path(__file__).resolve().parents[1] / "tests" / "data" / "janus-runs" / "esd"


def build_full_size(root: Path) -> tuple[Path, Path]:
    """CLIP ViT-B/32 and ResNet-50 architectures, random weights, with their standard 224 px image processors."""
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        ConvNextImageProcessor,
        ResNetConfig,
        ResNetForImageClassification,
    )

    clip_dir, resnet_dir = root / "clip-b32", root / "resnet50"
    tokenizer = tiny_clip_tokenizer(root / "tokenizer-files")  # ids fit CLIP's 49408-word vocabulary
    CLIPModel(CLIPConfig()).save_pretrained(clip_dir)
    tokenizer.save_pretrained(clip_dir)
    CLIPImageProcessor().save_pretrained(clip_dir)  # 224 px, CLIP's mean and std
    ResNetForImageClassification(ResNetConfig(num_labels=1000)).save_pretrained(resnet_dir)
    ConvNextImageProcessor(size={"shortest_edge": 224}, crop_pct=0.875).save_pretrained(resnet_dir)
    return clip_dir, resnet_dir


def time_models(name: str, clip: Path, classifier: Path, repeats: int, fid_samples: int) -> dict:
    config = EvalConfig(clip_model=str(clip), classifier=str(classifier), fid_samples=fid_samples)
    models = EvalModels(torch.device("cpu"))
    evaluate(resolve_target(RUN, out=Path(tempfile.mkdtemp())), config, models)  # loads the models, warms up
    seconds: dict[str, list[float]] = {}
    for _ in range(repeats):
        result, _ = evaluate(resolve_target(RUN, out=Path(tempfile.mkdtemp())), config, models)
        for stage, value in result["seconds"].items():
            seconds.setdefault(stage, []).append(value)
    medians = {stage: statistics.median(values) for stage, values in seconds.items()}
    print(f"{name}: " + ", ".join(f"{k} {v:.2f} s" for k, v in medians.items()))
    return medians


def time_sd_unet_pass(repeats: int) -> float:
    """Median seconds of one CFG UNet pass (batch 2, 64x64 latents, text 77 x 1024) of SD 2.1-base, fp32."""
    from diffusers import UNet2DConditionModel

    from esd_gs.testing.tiny_sd import sd21_base_unet_config

    unet = UNet2DConditionModel(**sd21_base_unet_config()).eval()
    latents, text = torch.randn(2, 4, 64, 64), torch.randn(2, 77, 1024)
    times = []
    with torch.no_grad():
        unet(latents, torch.tensor([500, 500]), encoder_hidden_states=text)
        for _ in range(repeats):
            start = time.perf_counter()
            unet(latents, torch.tensor([500, 500]), encoder_hidden_states=text)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fid-samples", type=int, default=1000)
    parser.add_argument("--skip-sd", action="store_true", help="skip the SD 2.1-base UNet pass (3.5 GB, slow)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    out: dict = {"run": str(RUN), "views": 120, "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tiny = (build_tiny_clip(root / "tiny-clip"), build_tiny_classifier(root / "tiny-classifier"))
        out["tiny"] = time_models("tiny models", *tiny, args.repeats, args.fid_samples)
        out["full_size"] = time_models(
            "CLIP ViT-B/32 + ResNet-50", *build_full_size(root), args.repeats, args.fid_samples
        )
    if not args.skip_sd:
        out["sd21_base_cfg_unet_pass_s"] = time_sd_unet_pass(args.repeats)
        print(f"SD 2.1-base: one CFG UNet pass {out['sd21_base_cfg_unet_pass_s']:.2f} s on this CPU")
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
