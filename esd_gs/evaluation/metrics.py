"""The metrics of ``esd-gs evaluate`` as one table (``METRICS``): name (as ``--metrics`` spells it) -> its entry.

Conventions:
- an entry's ``compute(inputs)`` returns its part of eval.json (stored under ``key``) from the rendered views and the
  loaded models in ``MetricInputs``; per-view series go into ``inputs.per_view``;
- an entry's ``summary(part)`` is its line in the terminal and under eval.png (``report.summary_lines``);
- ``evaluate.evaluate`` runs the requested entries in table order, each as one timed stage, so eval.json keeps one
  key order whatever the order of ``--metrics``;
- ``Metric`` states the names for the command line (tyro needs a Literal); a test checks that it equals the table's.

Adding a metric: its function here and its entry in ``METRICS`` (and its name in ``Metric``); the models it needs are
loaded up front by ``evaluate.preload``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from torch import Tensor

from .fid import frechet_distance
from .quality import inception_quality_variety
from .samples import SampleSettings, stable_diffusion_samples, synthetic_samples
from .sides import ClipSideClassifier, ReferenceSideClassifier, janus_measure

if TYPE_CHECKING:
    from .evaluate import EvalConfig, EvalTarget
    from .models import EvalModels

Metric = Literal["clip", "fid", "iq-iv", "janus"]
"""The names ``--metrics`` accepts: the keys of ``METRICS``, in its order."""


@dataclass
class MetricInputs:
    """What every metric of one target reads."""

    target: EvalTarget
    config: EvalConfig
    models: EvalModels
    views: Tensor
    """The turntable views [V, 3, S, S] at ``config.size``."""
    prior_size_views: Callable[[], Tensor]
    """The same views at a synthetic run's prior resolution (rendered at the first call)."""
    synthetic_reference: tuple[Tensor, Tensor, Tensor, Tensor] | None
    """A synthetic run's (prior images, their azimuths, the reference's benchmark turntable, its twin's); None
    otherwise."""
    synthetic_key: str
    """What a synthetic run's prior depends on (the key of its cached samples); "" otherwise."""
    progress: Any = None
    per_view: dict[str, list] = field(default_factory=dict)
    """Per-view series of eval.json (``per_view``), filled by the metrics."""

    @property
    def synthetic(self) -> bool:
        return self.synthetic_reference is not None


@dataclass(frozen=True)
class MetricEntry:
    """One metric: its name, its key in eval.json, how it is computed and summarised."""

    name: Metric
    key: str
    compute: Callable[[MetricInputs], dict]
    summary: Callable[[dict], str]


# ---------------------------------------------------------------------------------------------- the metrics
def clip_similarity(inputs: MetricInputs) -> dict:
    """Cosine similarity of each view's CLIP image embedding to the prompt's text embedding (and 1 - it)."""
    config = inputs.config
    clip = inputs.models.clip(config.clip_model)
    similarity = (clip.image_features(inputs.views) @ clip.text_features([inputs.target.prompt]).T).squeeze(1)
    inputs.per_view["clip_similarity"] = similarity.tolist()
    return {
        "model": config.clip_model,
        "similarity": float(similarity.mean()),
        "distance": 1.0 - float(similarity.mean()),
    }


def fid(inputs: MetricInputs) -> dict:
    """Fréchet distance between the views and samples of the prior: a synthetic run's at its resolution, else
    Stable Diffusion's (cached samples)."""
    config, models, run = inputs.config, inputs.models, inputs.target.run_config
    if inputs.synthetic:  # the prior's distribution is defined at the run's resolution: compare there
        key = ("synthetic samples", inputs.synthetic_key + f"|{config.fid_samples}")
        real = models.cached(
            key,
            lambda: synthetic_samples(run, config.fid_samples, run.resolution, models.device),
            label="sampling the synthetic prior for FID",
        )
        fake = inputs.prior_size_views()
        source = f"synthetic prior ({run.resolution} px)"
    else:
        model = config.fid_model(run)
        prior = models.stable_diffusion(model)
        negative = getattr(run.prior if run is not None else None, "negative_prompt", "")
        settings = SampleSettings.of(
            model,
            prompt=inputs.target.prompt,
            negative_prompt=negative,
            steps=config.fid_steps,
            guidance=config.fid_guidance,
            size=prior.native_size,
            seed=config.fid_seed,
        )
        real = stable_diffusion_samples(prior, settings, config.fid_samples, config.cache_dir, progress=inputs.progress)
        fake, source = inputs.views, f"Stable Diffusion {model}"
    clip = models.clip(config.clip_model) if config.fid_features == "clip" else None
    return {
        "value": frechet_distance(real, fake, config.fid_features, clip),
        "features": config.fid_features if clip is None else f"clip {config.clip_model}",
        "samples": int(real.shape[0]),
        "source": source,
    }


def iq_iv(inputs: MetricInputs) -> dict:
    """IQ / IV (eq. 10) from the ImageNet classifier's p(y | view)."""
    classifier = inputs.models.classifier(inputs.config.classifier)
    iq, iv = inception_quality_variety(classifier.probabilities(inputs.views))
    return {"classifier": inputs.config.classifier, "iq": iq, "iv": iv, "labels": classifier.num_labels}


def janus(inputs: MetricInputs) -> dict:
    """The frontal share and the frontal arcs under the side classifier (``--sides``)."""
    if inputs.config.sides == "reference":
        prior_images, prior_azimuths, *_ = inputs.synthetic_reference
        side_views = inputs.prior_size_views()
        classifier = ReferenceSideClassifier(prior_images, prior_azimuths)
    else:
        clip = inputs.models.clip(inputs.config.clip_model)
        side_views, classifier = inputs.views, ClipSideClassifier(clip, inputs.target.prompt)
    measure = janus_measure(classifier.side_probabilities(side_views))
    return {"classifier": classifier.name, **measure.as_dict()}


# ---------------------------------------------------------------------------------------------- their lines
def _clip_line(part: dict) -> str:
    return f"CLIP similarity {part['similarity']:.3f} (distance {part['distance']:.3f})"


def _fid_line(part: dict) -> str:
    return f"FID {part['value']:.4g} ({part['features']}, {part['samples']} samples)"


def _iq_iv_line(part: dict) -> str:
    return f"IQ {part['iq']:.3f}  IV {part['iv']:.3f}"


def _janus_line(part: dict) -> str:
    return (
        f"{part['verdict']}: {part['frontal_arcs']} frontal arc(s), frontal share {part['frontal_share']:.2f} "
        f"({part['classifier']} sides)"
    )


METRICS: dict[str, MetricEntry] = {
    entry.name: entry
    for entry in (
        MetricEntry("clip", "clip", clip_similarity, _clip_line),
        MetricEntry("fid", "fid", fid, _fid_line),
        MetricEntry("iq-iv", "iq_iv", iq_iv, _iq_iv_line),
        MetricEntry("janus", "janus", janus, _janus_line),
    )
}
"""Every metric by name, in the order evaluate runs them and eval.json and the report list them."""
