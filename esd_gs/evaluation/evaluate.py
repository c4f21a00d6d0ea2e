"""``esd-gs evaluate``: the paper's metrics (section 6) and the automatic Janus measure on 120 turntable views.

For one scene (a run directory or a 3DGS .ply) and its prompt:

1. render ``views`` turntable views (evenly spaced azimuths from the front, at ``elevation``; white background);
2. **CLIP**: cosine similarity of each view's CLIP image embedding to the prompt's text embedding, averaged over the
   views (the paper's "CLIP distance" column, lower is better, is reported as 1 - similarity);
3. **FID** (``fid.py``) between the views and ``fid_samples`` samples of the prior (``samples.py``); for a run of
   the synthetic prior, whose distribution is defined at the run's resolution, both at that resolution;
4. **IQ / IV** (eq. 10, ``quality.py``) from an ImageNet classifier's p(y | view);
5. **Janus** (``sides.py``): the frontal share and the number of frontal arcs under a side classifier;
6. for a run of the synthetic prior, the benchmark's ground-truth metrics (``janus.py``) against its reference.

The result is a JSON-ready dict (eval.json); ``report.py`` draws its figure.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import torch
import tyro
from torch import Tensor

from ..cameras import MAX_VIEWS, turntable
from ..configs.generate import GenerateConfig
from ..errors import ConfigError, UserError
from ..files import read_json_or_none
from ..priors import synthetic_images
from ..priors.sources import DEFAULT_MODEL
from .fid import FidFeatures
from .metrics import METRICS, Metric, MetricInputs
from .models import DEFAULT_CLASSIFIER, DEFAULT_CLIP, EvalModels, ModelUnavailable
from .samples import default_cache_dir

ALL_METRICS: tuple[Metric, ...] = tuple(METRICS)
EVAL_FILE, FIGURE_FILE = "eval.json", "eval.png"


@dataclass
class EvalConfig:
    """What esd-gs evaluate measures, and how."""

    metrics: Annotated[tuple[Metric, ...], tyro.conf.arg(help=f"Metrics to compute: {', '.join(ALL_METRICS)}.")] = (
        ALL_METRICS
    )
    views: int = 120
    """Turntable views (the paper's 120), evenly spaced in azimuth from the front."""
    elevation: float = 15.0
    """Elevation of the turntable, degrees."""
    size: int = 224
    """Size of the rendered views in pixels (CLIP's and the classifier's input size)."""
    radius: float = 2.5
    """Camera distance from the origin."""
    fovy: float = 50.0
    """Vertical field of view, degrees."""
    clip_model: str = DEFAULT_CLIP
    """CLIP model: Hugging Face id or local folder written by save_pretrained."""
    classifier: str = DEFAULT_CLASSIFIER
    """ImageNet classifier of IQ / IV: Hugging Face id or local folder (any AutoModelForImageClassification)."""
    sides: Literal["clip", "reference"] = "clip"
    """Side classifier of the Janus measure: clip (zero-shot) or reference (the ground truth of a synthetic prior)."""
    fid_features: FidFeatures = "clip"
    """Features of the Fréchet distance: clip (offline) or inception (standard FID; needs torch-fidelity's weights)."""
    fid_samples: int = 1000
    """Number of prior samples FID compares the views with (the paper: 1000); cached and reused."""
    fid_steps: int = 50
    """DDIM steps per Stable Diffusion sample."""
    fid_guidance: float = 7.5
    """Classifier-free guidance scale of the Stable Diffusion samples."""
    fid_seed: int = 0
    """Seed of the first sample (sample i uses seed + i)."""
    model: str | None = None
    """Stable Diffusion model of the FID samples; None = the run's --prior.model (for a .ply, sd2.1-base)."""
    cache_dir: Path = field(default_factory=default_cache_dir)
    """Where the prior's samples are cached ($ESD_GS_CACHE or ~/.cache/esd-gs)."""

    def __post_init__(self) -> None:
        if not self.metrics:
            raise ConfigError(f"--metrics needs at least one of {', '.join(ALL_METRICS)}")
        if not 2 <= self.views <= MAX_VIEWS:
            raise ConfigError(f"--views must be in 2..{MAX_VIEWS}, got {self.views}")
        if not 16 <= self.size <= 1024:
            raise ConfigError(f"--size must be between 16 and 1024 pixels, got {self.size}")
        if not -90.0 <= self.elevation <= 90.0:
            raise ConfigError(f"--elevation must be in [-90, 90] degrees, got {self.elevation}")
        if not (math.isfinite(self.radius) and self.radius > 0) or not 0.0 < self.fovy < 180.0:
            raise ConfigError("--radius must be positive and --fovy between 0 and 180 degrees")
        if self.fid_samples < 2 or self.fid_steps < 1 or not math.isfinite(self.fid_guidance):
            raise ConfigError("--fid-samples must be >= 2, --fid-steps >= 1 and --fid-guidance a number")

    def fid_model(self, run: GenerateConfig | None) -> str:
        """The Stable Diffusion of a non-synthetic target's FID samples: ``model``, else the model the run's prior
        loads (``PriorConfig.model_source``), else the default family (a bare .ply)."""
        source = run.prior.model_source() if run is not None else None
        return self.model or source or DEFAULT_MODEL

    def settings(self) -> dict:
        """What makes two evaluations comparable (everything but the cache folder)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if k != "cache_dir"}


@dataclass
class EvalTarget:
    """One thing to evaluate: a scene file, its prompt, its run's config (None for a bare .ply), where to write."""

    name: str
    scene: Path
    prompt: str
    run_config: GenerateConfig | None
    out: Path


def resolve_target(path: Path, prompt: str | None = None, out: Path | None = None) -> EvalTarget:
    """A run directory (its scene.ply and config.yaml) or a .ply (then ``prompt`` is needed) -> the target.
    Default output: the run directory itself, or ``<stem>-eval/`` beside the .ply."""
    from ..configs.yaml_io import load_run_config
    from ..training.run_dir import RunDir

    if path.is_dir():
        run = RunDir(path)
        if not run.scene_ply.is_file():
            raise UserError(f"{path} holds no scene.ply: not a finished run (or --resume it first)")
        config = load_run_config(run.config) if run.config.is_file() else None
        if prompt is None and config is None:
            raise UserError(f"{path} has no config.yaml to read the prompt from: pass --prompt")
        return EvalTarget(path.name, run.scene_ply, prompt or config.prompt, config, out or path)
    if not path.exists():
        raise UserError(f"{path} does not exist")
    if path.suffix.lower() != ".ply":
        raise UserError(f"{path} is neither a run directory nor a .ply file")
    if not prompt:
        raise UserError(f"{path} is a bare .ply: pass --prompt with what it shows")
    return EvalTarget(path.stem, path, prompt, None, out or path.with_name(f"{path.stem}-eval"))


def scene_digest(path: Path) -> str:
    """sha256 of the scene file (eval.json records which scene it measured)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def render_turntable(scene, config: EvalConfig, size: int | None = None, backend: str = "auto") -> Tensor:
    """The evaluation's views [V, 3, S, S] in [0, 1] on a white background."""
    from ..render.views import render_images

    cams = turntable(config.views, elevation=config.elevation, radius=config.radius, fovy=config.fovy)
    return render_images(scene, cams, size or config.size, background=1.0, backend=backend)


def evaluate(
    target: EvalTarget, config: EvalConfig, models: EvalModels, backend: str = "auto", progress=None
) -> tuple[dict, Tensor]:
    """Every metric of ``config.metrics`` for ``target`` (module docstring) -> (the content of eval.json, the
    rendered views [V, 3, S, S]). ``models`` keeps the loaded models for the next target; ``progress`` (rich) shows
    each stage."""
    from ..io import read_ply

    run = target.run_config
    synthetic = run is not None and synthetic_images(run.prior) is not None
    if config.sides == "reference" and "janus" in config.metrics and not synthetic:
        raise UserError(f"--sides reference needs a run of a synthetic prior; {target.name} is not one")
    up = run.output.up if run is not None else "-y"
    scene = read_ply(target.scene, up=up).to(models.device)
    stages = ["render", *config.metrics, *(["ground truth"] if synthetic else [])]
    task = (
        progress.add_task(f"evaluating {target.name}", total=len(stages), rate=False) if progress is not None else None
    )
    seconds: dict[str, float] = {}
    result: dict = {
        "scene": str(target.scene),
        "scene_sha256": scene_digest(target.scene),
        "prompt": target.prompt,
        "gaussians": scene.num_gaussians,
        "settings": config.settings(),
    }
    if run is not None:
        result["run"] = {
            "method": run.distill.method,
            "lambda_entropy": run.distill.lambda_entropy,
            "estimator": run.psi.name if run.distill.needs_psi else "-",
            "prior": run.prior.name,
            "steps": run.steps,
            "seed": run.seed,
        }

    def stage(name: str):
        if task is not None:
            progress.update(task, description=f"evaluating {target.name}: {name}")
        return time.perf_counter()

    def done(name: str, start: float) -> None:
        seconds[name] = time.perf_counter() - start
        if task is not None:
            progress.advance(task)

    start = stage("render")
    views = render_turntable(scene, config, backend=backend)
    done("render", start)
    at_prior_size: list[Tensor] = []  # synthetic runs: the same views at the prior's resolution, rendered once

    def prior_size_views() -> Tensor:
        if not at_prior_size:
            at_prior_size.append(render_turntable(scene, config, size=run.resolution, backend=backend))
        return at_prior_size[0]

    key = _synthetic_key(run) if synthetic else ""
    reference = (
        models.cached(
            ("synthetic reference", key),
            lambda: _synthetic_reference(run, models.device),
            label="rendering the synthetic prior's images and its reference object's views",
        )
        if synthetic
        else None
    )
    inputs = MetricInputs(target, config, models, views, prior_size_views, reference, key, progress)
    for entry in METRICS.values():
        if entry.name in config.metrics:
            start = stage(entry.name)
            result[entry.key] = entry.compute(inputs)
            done(entry.name, start)
    if synthetic:
        from ..render.views import render_images
        from .janus import janus_metrics

        start = stage("ground truth")
        prior_images, prior_azimuths, reference_views, twin_views = inputs.synthetic_reference
        gt_views = render_images(scene, _benchmark_turntable(), run.resolution, background=1.0, backend=backend)
        metrics = janus_metrics(gt_views, reference_views, prior_images, prior_azimuths, twin_views)
        result["ground_truth"] = metrics.as_dict() | {"one_face": metrics.one_face}
        done("ground truth", start)
    result["per_view"] = inputs.per_view
    result["seconds"] = seconds
    if task is not None:
        progress.remove_task(task)
    return result, views


def _synthetic_key(run: GenerateConfig) -> str:
    """What the synthetic prior and reference of a run depend on (runs of one benchmark share them)."""
    return repr((synthetic_images(run.prior), run.prompt, run.resolution, run.cameras, run.background))


OFFLINE_OPTION = "--metrics janus --sides reference"
"""What measures a run of a synthetic prior without any downloaded model: the Janus measure under the prior's known
answer (and the ground-truth metrics every synthetic run gets)."""


def all_synthetic(targets: list[EvalTarget]) -> bool:
    """Whether every target is a run of a synthetic prior (whose front and sides are known)."""
    return bool(targets) and all(
        t.run_config is not None and synthetic_images(t.run_config.prior) is not None for t in targets
    )


def preload(targets: list[EvalTarget], config: EvalConfig, models: EvalModels) -> None:
    """Load every model the targets need before any work, so that a missing one fails at once, in one line; when
    every target is a run of a synthetic prior, that line also names ``OFFLINE_OPTION``, which needs no model."""
    try:
        _preload(targets, config, models)
    except ModelUnavailable as exc:
        if not all_synthetic(targets):
            raise
        raise ModelUnavailable(
            f"{exc}; without the Hub, a run of the synthetic prior is measured against its known answer with "
            f"{OFFLINE_OPTION}"
        ) from None


def _preload(targets: list[EvalTarget], config: EvalConfig, models: EvalModels) -> None:
    if config.sides == "reference" and "janus" in config.metrics:
        for target in targets:
            if target.run_config is None or synthetic_images(target.run_config.prior) is None:
                raise UserError(f"--sides reference needs a run of a synthetic prior; {target.name} is not one")
    metrics = set(config.metrics)
    clip_sides = "janus" in metrics and config.sides == "clip"
    if "clip" in metrics or clip_sides or ("fid" in metrics and config.fid_features == "clip"):
        models.clip(config.clip_model)
    if "fid" in metrics:
        if config.fid_features == "inception":  # torch-fidelity loads (or downloads) its weights here
            from ..progress import stage
            from .fid import fid_metric

            with stage("loading the Inception network for FID"):
                fid_metric("inception")
        for target in targets:
            run = target.run_config
            if run is None or synthetic_images(run.prior) is None:
                models.stable_diffusion(config.fid_model(run))
    if "iq-iv" in config.metrics:
        models.classifier(config.classifier)


def _benchmark_turntable():
    """The Janus benchmark's turntable (``janus.TURNTABLE_VIEWS``): the ground truth is measured as it is."""
    from .janus import TURNTABLE_ELEVATION, TURNTABLE_VIEWS

    return turntable(TURNTABLE_VIEWS, elevation=TURNTABLE_ELEVATION)


def _synthetic_reference(run: GenerateConfig, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(prior images, their azimuths, the reference object's turntable at the protocol of the benchmark, its
    two-faced twin's) of a synthetic run, all at the run's resolution: what the ground truth is measured against."""
    from ..priors.synthetic_objects import load_object, twin_of
    from ..render.views import render_images

    prior = synthetic_images(run.prior).build(device, run.run_context)
    index = prior.prompts.index(run.prompt)
    source = synthetic_reference_source(run)
    reference = load_object(source).to(device)

    def views(scene) -> Tensor:
        return render_images(scene, _benchmark_turntable(), run.resolution, background=1.0)

    per = prior.per_reference
    images, azimuths = prior.reference_images(index).cpu(), prior.azimuths[index * per : (index + 1) * per].cpu()
    return images, azimuths, views(reference), views(twin_of(reference, source))


def synthetic_reference_source(run: GenerateConfig):
    """Where the reference object of a synthetic run's prompt comes from (``synthetic_objects.Source``): its file, or
    the built-in object it names (``SyntheticPriorConfig.references``, which the prior is built from)."""
    prompts, sources = synthetic_images(run.prior).references(run.prompt)
    return sources[prompts.index(run.prompt)]


def synthetic_reference_object(run: GenerateConfig):
    """The reference object (a ``GaussianScene``) of a synthetic run's prompt (``synthetic_reference_source``)."""
    from ..priors.synthetic_objects import load_object

    return load_object(synthetic_reference_source(run))


# ---------------------------------------------------------------------------------------------- files
def saved_evaluation(target: EvalTarget, config: EvalConfig) -> dict | None:
    """The eval.json already in ``target.out`` when it measured this very scene with these settings, else None."""
    saved = read_json_or_none(target.out / EVAL_FILE)
    if not isinstance(saved, dict) or saved.get("settings") != config.settings():
        return None
    return saved if saved.get("scene_sha256") == scene_digest(target.scene) else None


def write_evaluation(target: EvalTarget, result: dict, views: Tensor) -> list[Path]:
    """eval.json and eval.png into ``target.out`` (created), atomically."""
    import json

    from ..atomic import atomic_path
    from .report import write_eval_figure

    target.out.mkdir(parents=True, exist_ok=True)
    figure = write_eval_figure(result, views, target.out / FIGURE_FILE)
    with atomic_path(target.out / EVAL_FILE) as tmp:  # last: its presence says the evaluation is complete
        tmp.write_text(json.dumps(result, indent=1))
    return [target.out / EVAL_FILE, figure]


def check_dependencies(config: EvalConfig) -> None:
    """One line before any work when a package the chosen metrics need is missing, or when FID's sample cache
    (``--cache-dir``) could not be used (``check_cache_dir``)."""
    import importlib.util

    if "fid" in config.metrics:
        check_cache_dir(config.cache_dir)

    if importlib.util.find_spec("matplotlib") is None:
        raise UserError("esd-gs evaluate draws its figures with matplotlib: pip install 'esd-gs[eval]'")
    if "fid" in config.metrics and importlib.util.find_spec("torchmetrics") is None:
        raise UserError("FID needs torchmetrics: pip install 'esd-gs[eval]' (or leave fid out of --metrics)")
    if "fid" in config.metrics and config.fid_features == "inception":
        if importlib.util.find_spec("torch_fidelity") is None:
            from .fid import INCEPTION_HINT

            raise UserError(INCEPTION_HINT)


def check_cache_dir(path: Path) -> None:
    """The prior-sample cache must be a folder, or one that can be made: the nearest existing path at or above it
    must be a writable folder. Checked before any model loads or view renders; nothing is created here."""
    import os

    probe = Path(os.path.abspath(path))
    while not os.path.lexists(probe) and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        if probe == Path(os.path.abspath(path)):
            raise UserError(f"--cache-dir {path} is not a folder")
        raise UserError(f"--cache-dir {path} cannot be made: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"--cache-dir {path} cannot be used: {probe} is not writable")
