"""``esd-gs doctor``: what a run would use here and what is wrong, one line each. It never downloads weights.

Checks, in order: torch and its device; gsplat's CUDA kernels (built, buildable, or not: then the PyTorch renderer
draws); the model sources of phi (and of a separate psi base, and Shap-E's with ``init:shap-e``), each answered
from a local folder, the Hugging Face cache or the Hub (a model_index.json is fetched, at the pinned revision of a
known mirror, and on CUDA the parts' config.json files to size the run; never weights; one short request first checks
that the Hub answers at all); free GPU memory against an estimate of what the chosen preset needs; free disk space for
the run directory. Exit code 0 when a run can start, 1 otherwise.
"""

from __future__ import annotations

import importlib.metadata
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch
from rich.console import Console

from ..configs.generate import GenerateConfig, PresetName
from ..configs.presets import preset
from ..configs.yaml_io import load_yaml_config
from ..initial import INITS, ShapEInit
from ..priors import SyntheticUNetConfig
from ..priors.sources import (
    PHI_PARTS,
    PINS,
    SD_LAYOUT,
    SHAP_E_LAYOUT,
    ModelLayout,
    SourceCheck,
    check_candidates,
    start_hub_probe,
)
from ..priors.synthetic_unet import cached_fits, default_cache
from ..render.gsplat_backend import find_nvcc, gsplat_build_state, jit_build_dir

RUN_DISK_GIB = 1.0
"""Disk a run directory needs at most with the default cap (checkpoint of 200k Gaussians with Adam state, videos)."""
WORKING_GIB_PER_512_VIEW = 4.0
"""Rough activation memory per 512-px view in a VSD/ESD step (VAE encode with gradient, the UNet passes, psi's
training pass), on top of the weights. A rough estimate, not a measurement."""


@dataclass
class DoctorArgs:
    """Check what esd-gs generate would use on this machine, and what is wrong.

    One line per check, no downloads; exit code 0 when a run can start, 1 otherwise.

    For example:
      esd-gs doctor
      esd-gs doctor --config configs/vsd.yaml
      esd-gs doctor --preset synthetic-unet --init shap-e
    """

    model: str | None = None
    """phi's model to check: a family (sd2.1-base, sd2.1, sd1.5), a Hub id or a folder; None = the preset's."""
    # synthetic needs no model; synthetic-unet's UNet is fitted on the first run and cached.
    preset: PresetName = "esd"
    """The generate preset the run would use (as generate's --preset): its prior, model, size and psi are checked."""
    config: Path | None = None
    """A YAML file of generate settings over the preset (as generate's --config), checked the same way."""
    out: Path = Path("runs")
    """Where run directories would be written (its free disk space is checked)."""
    init: Literal["ball", "ply", "shap-e"] | None = None
    """The start the run would use (as generate's --init; shap-e: Shap-E's model is checked); None = the preset's."""
    init_model: str | None = None
    """Shap-E's model to check with --init shap-e: shap-e (openai/shap-e), a Hub id or a folder; None = the default."""


class Report:
    """The lines go to stdout (a report, not a progress message)."""

    def __init__(self):
        self.failed = False
        self.console = Console(highlight=False, soft_wrap=True)

    def line(self, status: Literal["ok", "warn", "fail"], what: str, text: str) -> None:
        colour = {"ok": "green", "warn": "yellow", "fail": "red"}[status]
        self.failed |= status == "fail"
        self.console.print(f"[{colour}]{status:>4}[/{colour}]  {what}: {text}")


def check_torch(report: Report) -> torch.device:
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        report.line(
            "ok",
            "torch",
            f"{torch.__version__}, CUDA {torch.version.cuda}: {props.name} ({props.total_memory / 2**30:.1f} GiB)",
        )
        return torch.device("cuda")
    report.line(
        "warn",
        "torch",
        f"{torch.__version__}: no CUDA device, runs use the CPU (Stable Diffusion takes "
        "seconds per UNet pass there: use --preset synthetic, or a GPU)",
    )
    return torch.device("cpu")


def check_gsplat(report: Report) -> None:
    try:
        version = importlib.metadata.version("gsplat")  # no import: importing gsplat may start its CUDA set-up
    except importlib.metadata.PackageNotFoundError:
        report.line("warn", "gsplat", "not installed: the PyTorch renderer draws (slower on a GPU)")
        return
    state = gsplat_build_state()
    text = {  # each message built only for its own state (the lookups touch the CUDA toolkit)
        "no-cuda": lambda: "not used without CUDA: esd-gs's PyTorch renderer draws",
        "prebuilt": lambda: "prebuilt CUDA kernels installed",
        "cached": lambda: f"CUDA kernels built (in {jit_build_dir()})",
        "buildable": lambda: (
            f"CUDA kernels not built yet: the first run builds them with {find_nvcc()} (a few minutes)"
        ),
        "no-toolkit": lambda: (
            "CUDA kernels cannot be built (no nvcc): runs fall back to the PyTorch renderer "
            f"(slower); install the CUDA toolkit matching torch's CUDA {torch.version.cuda} for gsplat"
        ),
    }[state]()
    report.line("warn" if state == "no-toolkit" else "ok", "gsplat", f"{version}: {text}")


def check_model(
    report: Report, role: str, model: str, parts: tuple[str, ...] = PHI_PARTS, layout: ModelLayout = SD_LAYOUT
) -> SourceCheck | None:
    """The first answering source of ``model`` (one line: the source that answers, or each one tried and why not), or
    None; ``layout``: what kind of pipeline it must be."""
    checks = check_candidates(model, parts, layout)
    if checks[-1].ok:
        check = checks[-1]
        pinned = check.source in PINS
        suffix = ""
        if check.reason == "on the Hugging Face Hub":
            suffix = " (the first run downloads its weights" + (" and checks their sha256)" if pinned else ")")
        name = check.source if check.source == model else f"{model} -> {check.source}"
        at = f" at {check.revision[:8]}" if check.revision else ""
        report.line("ok", role, f"{name}{at}: {check.reason}{suffix}")
        return check
    tried = [f"{c.source} ({c.reason})" for c in checks]
    family = f"{model} ({len(tried)} known source(s))" if model in layout.families else model
    remedy = (
        "pass --prior.model PATH, run `hf auth login` for a gated model, or use --preset synthetic"
        if layout is SD_LAYOUT
        else layout.remedy.format(flag="--init.model")
    )
    report.line("fail", role, f"{family}: tried {', '.join(tried)}; {remedy}")
    return None


def weights_gib(
    source: str,
    dtype_bytes: int,
    parts: tuple[str, ...] = ("unet", "vae", "text_encoder"),
    revision: str | None = None,
) -> float | None:
    """Exact parameter memory of the parts, from their config files only (models built on the meta device)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    classes = {"unet": UNet2DConditionModel, "vae": AutoencoderKL}
    at = {"revision": revision} if revision else {}
    total = 0
    try:
        for part in parts:
            with torch.device("meta"):
                if part == "text_encoder":
                    model = CLIPTextModel(CLIPTextConfig.from_pretrained(source, subfolder=part, **at))
                else:
                    cls = classes[part]
                    model = cls.from_config(cls.load_config(source, subfolder=part, **at))
            total += sum(p.numel() for p in model.parameters())
    except Exception:  # configs not to be had (offline, not cached): no estimate, said so
        return None
    return total * dtype_bytes / 2**30


def check_gpu_memory(report: Report, config: GenerateConfig, phi: SourceCheck | None, psi: SourceCheck | None) -> None:
    dtype_bytes = 4 if getattr(config.prior, "precision", "auto") == "fp32" else 2
    needed = None
    if phi is not None:
        needed = weights_gib(phi.source, dtype_bytes, revision=phi.revision)
        separate_psi = not getattr(config.psi, "shared_unet", True)
        if needed is not None and separate_psi and config.distill.needs_psi:
            base = psi or phi
            extra = weights_gib(base.source, dtype_bytes, ("unet",), revision=base.revision)
            needed = None if extra is None else needed + extra
    if needed is not None:
        views = config.batch_size * (config.resolution / 512) ** 2
        needed += WORKING_GIB_PER_512_VIEW * max(views, 0.25)
    try:
        free, total = torch.cuda.mem_get_info()
    except RuntimeError as exc:
        report.line("fail", "GPU memory", f"cannot be read ({str(exc).splitlines()[0][:120]})")
        return
    free_gib, total_gib = free / 2**30, total / 2**30
    if needed is None:
        report.line("ok", "GPU memory", f"{free_gib:.1f} GiB free of {total_gib:.1f} (no model config to size the run)")
    elif free_gib < needed:
        report.line(
            "fail",
            "GPU memory",
            f"{free_gib:.1f} GiB free of {total_gib:.1f}, the run needs about "
            f"{needed:.1f} GiB (estimate): try --prior.precision fp16, --psi.shared-unet or a smaller --resolution",
        )
    else:
        report.line(
            "ok",
            "GPU memory",
            f"{free_gib:.1f} GiB free of {total_gib:.1f}; the run needs about {needed:.1f} "
            "GiB (estimate: weights + working memory)",
        )


def check_disk(report: Report, out: Path) -> None:
    probe = out.resolve()
    while not probe.exists():
        probe = probe.parent
    free_gib = shutil.disk_usage(probe).free / 2**30
    status = "ok" if free_gib >= RUN_DISK_GIB else "fail"
    report.line(status, "disk", f"{free_gib:.1f} GiB free at {out} (a run needs up to about {RUN_DISK_GIB:.0f} GiB)")


def check_fitted_unets(report: Report, cache: Path) -> None:
    """--preset synthetic-unet downloads nothing: say how many fitted UNets its cache holds (one per set of prior
    images and fit settings; whether one fits this run's settings is known only once the prior's images are rendered)
    and what the first run costs when it holds none."""
    fits = cached_fits(cache)
    if fits:
        report.line("ok", "phi", f"the fitted synthetic UNet needs no download: {len(fits)} fitted in {cache}")
    else:
        report.line(
            "ok",
            "phi",
            f"the fitted synthetic UNet needs no download: none fitted in {cache} yet, the first run fits one "
            "(about 15 minutes on 2 CPU cores)",
        )


def run_doctor(args: DoctorArgs) -> int:
    config = preset(args.preset).config
    if args.config is not None:
        config = load_yaml_config(args.config, "config file", base=config)
    report = Report()
    source = config.prior.model_source()
    if source is not None and not isinstance(config.prior, SyntheticUNetConfig):
        start_hub_probe(args.model or source)  # answered while torch and gsplat are checked
    device = check_torch(report)
    check_gsplat(report)
    phi_source = psi_source = None
    if isinstance(config.prior, SyntheticUNetConfig):  # no download, but a fit on the first run
        check_fitted_unets(report, config.prior.cache or default_cache())
    elif source is None:
        report.line("ok", "phi", f"prior:{config.prior.name} needs no model")
    else:
        phi_source = check_model(report, "phi", args.model or source)
        base_model = getattr(config.psi, "base_model", None)
        if not getattr(config.psi, "shared_unet", True) and base_model and config.distill.needs_psi:
            psi_source = check_model(report, "psi base", base_model, ("unet",))
    if args.init is not None and args.init != config.init.name:
        config = replace(config, init=INITS[args.init]())
    if args.init_model is not None and isinstance(config.init, ShapEInit):
        config = replace(config, init=replace(config.init, model=args.init_model))
    init_model = config.init.model_source()
    if init_model is not None:  # init:shap-e: its model, checked as phi's is
        check_model(report, f"init:{config.init.name}", init_model, ("prior",), SHAP_E_LAYOUT)
    if device.type == "cuda":
        check_gpu_memory(report, config, phi_source, psi_source)
    check_disk(report, args.out)
    report.console.print(
        "a run can start" if not report.failed else "[red]a run cannot start: see the lines marked fail[/red]"
    )
    return 1 if report.failed else 0
