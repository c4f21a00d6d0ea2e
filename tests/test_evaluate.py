"""esd-gs evaluate / compare: the metrics on known answers, the Janus measure against the synthetic ground truth,
the prior-sample cache, and the commands end to end with tiny real models (saved and loaded by from_pretrained)."""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from fake_hub import run_cli

from esd_gs.configs.yaml_io import dump_yaml_config, load_yaml_config
from esd_gs.errors import UserError
from esd_gs.evaluation import samples as samples_module
from esd_gs.evaluation.compare import compare
from esd_gs.evaluation.evaluate import ALL_METRICS, EvalConfig, evaluate, resolve_target
from esd_gs.evaluation.fid import fid_metric, frechet_distance
from esd_gs.evaluation.metrics import METRICS, Metric
from esd_gs.evaluation.models import EvalModels
from esd_gs.evaluation.quality import inception_quality_variety
from esd_gs.evaluation.samples import SampleSettings, stable_diffusion_samples
from esd_gs.evaluation.sides import (
    BACK,
    FRONT,
    SIDE,
    ClipSideClassifier,
    ReferenceSideClassifier,
    janus_measure,
    side_of_azimuth,
)
from esd_gs.priors import StableDiffusionConfig
from esd_gs.testing.tiny_eval import build_tiny_classifier, build_tiny_clip
from esd_gs.testing.tiny_sd import build_tiny_stable_diffusion

SAVED = Path(__file__).parent / "data" / "janus-runs"
"""Seed 0 of `esd-gs bench janus --methods sds vsd esd --lambdas 1.0 --estimators particle --seeds 1` (1200 steps,
p_front 0.5): scene.ply, config.yaml, run.json and the benchmark's own record (janus.json)."""
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval-models")
    build_tiny_clip(root / "clip")
    build_tiny_classifier(root / "classifier")
    build_tiny_stable_diffusion(root / "sd")
    return root


def small_config(models_dir: Path, tmp_path: Path, **changes) -> EvalConfig:
    base = EvalConfig(
        clip_model=str(models_dir / "clip"),
        classifier=str(models_dir / "classifier"),
        size=32,
        fid_samples=16,
        fid_steps=2,
        cache_dir=tmp_path / "cache",
    )
    return replace(base, **changes)


def copy_runs(tmp_path: Path, names=("sds", "vsd", "esd")) -> list[Path]:
    out = []
    for name in names:
        shutil.copytree(SAVED / name, tmp_path / name)
        out.append(tmp_path / name)
    return out


# ---------------------------------------------------------------------------------------------- eq. 10
def test_iq_iv_on_constructed_tables():
    one_class = torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 4)
    assert inception_quality_variety(one_class) == pytest.approx((0.0, 0.0), abs=1e-9)
    each_class = torch.eye(4)
    assert inception_quality_variety(each_class) == pytest.approx((0.0, math.log(4)), abs=1e-9)
    uniform = torch.full((3, 4), 0.25)
    assert inception_quality_variety(uniform) == pytest.approx((math.log(4), math.log(4)), abs=1e-9)
    mixed = torch.tensor([[1.0, 0.0], [0.5, 0.5]])  # IQ = (0 + ln 2) / 2, IV = H(0.75, 0.25)
    iv = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert inception_quality_variety(mixed) == pytest.approx((math.log(2) / 2, iv), abs=1e-9)
    with pytest.raises(ValueError):
        inception_quality_variety(torch.zeros(0, 3))


# ---------------------------------------------------------------------------------------------- the Janus measure
def one_hot(sides: list[int]) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(sides), 3).float()


def test_janus_measure_counts_frontal_arcs_on_a_circle():
    # one face across the seam of the turntable (views 110..119 and 0..9): one arc, a sixth of the views
    single = [FRONT] * 10 + [SIDE] * 20 + [BACK] * 60 + [SIDE] * 20 + [FRONT] * 10
    measure = janus_measure(one_hot(single))
    assert (measure.frontal_arcs, measure.janus) == (1, False)
    assert measure.frontal_share == pytest.approx(20 / 120)
    assert measure.side_shares == pytest.approx({"front": 20 / 120, "side": 40 / 120, "back": 60 / 120})
    # a second face at the back: two arcs, Janus
    double = [FRONT] * 15 + [SIDE] * 30 + [FRONT] * 15 + [SIDE] * 60
    measure = janus_measure(one_hot(double))
    assert (measure.frontal_arcs, measure.janus, measure.frontal_share) == (2, True, 0.25)
    assert janus_measure(one_hot([FRONT] * 8)).frontal_arcs == 1  # a face everywhere: one arc, share 1
    assert janus_measure(one_hot([BACK] * 8)).frontal_arcs == 0
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.7, 0.1]])  # the most likely side decides
    assert janus_measure(probs).sides == ["front", "side"]


def test_side_of_azimuth_boundaries():
    azimuths = torch.tensor([0.0, 44.9, 45.0, -44.9, 90.0, 135.0, 135.1, 180.0, -135.1, 359.0])
    assert side_of_azimuth(azimuths).tolist() == [0, 0, 1, 0, 1, 1, 2, 2, 2, 0]


def test_reference_classifier_knows_the_prior_images_own_sides():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(12, 3, 8, 8, generator=gen)
    azimuths = torch.linspace(-180, 150, 12)
    probs = ReferenceSideClassifier(images, azimuths).side_probabilities(images)
    assert torch.equal(probs.argmax(1), side_of_azimuth(azimuths))
    with pytest.raises(ValueError, match="px"):
        ReferenceSideClassifier(images, azimuths).side_probabilities(torch.rand(2, 3, 16, 16))


def test_clip_parts_agree_with_transformers_own_logits(models_dir):
    """CLIP similarity and the side probabilities are CLIPModel's own logits_per_image (= logit_scale x cosine)."""
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    models = EvalModels(CPU)
    clip = models.clip(str(models_dir / "clip"))
    views = torch.rand(5, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    texts = ClipSideClassifier(clip, "a head").texts
    assert texts == ["front view of a head", "side view of a head", "back view of a head"]
    model = CLIPModel.from_pretrained(models_dir / "clip")
    tokens = AutoTokenizer.from_pretrained(models_dir / "clip")(texts, padding=True, return_tensors="pt")
    pictures = [(v.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy() for v in views]
    pixels = AutoImageProcessor.from_pretrained(models_dir / "clip")(images=pictures, return_tensors="pt")
    with torch.no_grad():
        logits = model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, **pixels).logits_per_image
    ours = ClipSideClassifier(clip, "a head").side_probabilities(views)
    torch.testing.assert_close(ours, torch.softmax(logits, dim=1), atol=1e-5, rtol=1e-4)
    cosine = clip.image_features(views) @ clip.text_features(texts).T
    torch.testing.assert_close(cosine * clip.logit_scale, logits, atol=1e-4, rtol=1e-4)


def test_reference_sides_reproduce_the_benchmark_and_rank_the_saved_runs_as_the_ground_truth(models_dir, tmp_path):
    """The automatic measure on the saved SDS, VSD and ESD runs, with the synthetic ground-truth classifier: the
    same frontal share and face count as the benchmark recorded, and the same ranking (ESD breaks the collapse)."""
    config = small_config(models_dir, tmp_path, sides="reference", metrics=("janus",))
    models = EvalModels(CPU)
    gaps = {}
    for name in ("sds", "vsd", "esd"):
        record = json.loads((SAVED / name / "janus.json").read_text())["record"]
        result, _ = evaluate(resolve_target(SAVED / name, out=tmp_path / name), config, models)
        assert result["janus"]["classifier"] == "reference"
        assert result["janus"]["frontal_share"] == pytest.approx(record["frontal_fraction"])
        assert result["janus"]["frontal_arcs"] == record["face_count"]
        truth = result["ground_truth"]
        assert truth["aligned_psnr"] == pytest.approx(record["aligned_psnr"], abs=1e-3)
        assert truth["side_accuracy"] == pytest.approx(record["side_accuracy"])
        reference_share = truth["frontal_fraction"] - truth["frontal_share_gap"]
        gaps[name] = (result["janus"]["frontal_share"] - reference_share, record["frontal_share_gap"])
    ranking = sorted(gaps, key=lambda n: abs(gaps[n][0]))
    assert ranking == sorted(gaps, key=lambda n: abs(gaps[n][1]))
    gaps = {n: g[0] for n, g in gaps.items()}
    assert ranking[0] == "esd" and gaps["esd"] < 0.1 < gaps["sds"] and gaps["vsd"] > 0.1


# ---------------------------------------------------------------------------------------------- FID
class Flatten(torch.nn.Module):
    """Identity features (the pixels): FID then has a closed form."""

    num_features = 3 * 2 * 2

    def forward(self, images):
        return images.reshape(images.shape[0], -1)


def test_fid_statistics_known_answer():
    """Same covariance, means apart by c in each of d features: FID = d c^2 (through ``frechet_distance``)."""
    real = torch.rand(200, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    for shift in (0.0, 0.05, 0.2):
        assert frechet_distance(real, real + shift, Flatten()) == pytest.approx(12 * shift**2, abs=1e-4)


def test_clip_fid_is_zero_against_itself_and_grows_with_a_shift(models_dir):
    clip = EvalModels(CPU).clip(str(models_dir / "clip"))
    images = torch.rand(24, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 0.6
    assert frechet_distance(images, images, "clip", clip) == pytest.approx(0.0, abs=1e-3)
    values = [frechet_distance(images, (images + s).clamp(0, 1), "clip", clip) for s in (0.1, 0.2, 0.4)]
    assert 1e-3 < values[0] < values[1] < values[2]
    with pytest.raises(ValueError):
        frechet_distance(images[:1], images, "clip", clip)


def test_inception_fid_without_torch_fidelity_is_one_line(monkeypatch):
    import torchmetrics.image.fid as tm_fid

    monkeypatch.setattr(tm_fid, "_TORCH_FIDELITY_AVAILABLE", False)
    with pytest.raises(UserError, match="torch-fidelity.*--fid-features clip"):
        fid_metric("inception")


# ---------------------------------------------------------------------------------------------- prior samples
def test_stable_diffusion_samples_are_cached_extended_and_reused(models_dir, tmp_path, monkeypatch):
    prior = EvalModels(CPU).stable_diffusion(str(models_dir / "sd"))
    settings = SampleSettings.of(str(models_dir / "sd"), prompt="a head", steps=2, size=prior.native_size)
    calls = []
    real_pipeline = samples_module._pipeline

    def counting(prior_):
        pipe = real_pipeline(prior_)
        original = pipe.__call__

        def call(*args, **kwargs):
            calls.append(len(kwargs["prompt"]))
            return original(*args, **kwargs)

        return type("Counted", (), {"__call__": staticmethod(call)})()

    monkeypatch.setattr(samples_module, "_pipeline", counting)
    four = stable_diffusion_samples(prior, settings, 4, tmp_path)
    assert four.shape == (4, 3, 64, 64) and calls == [4]
    assert 0.0 <= float(four.min()) and float(four.max()) <= 1.0 and float(four.std()) > 0
    again = stable_diffusion_samples(prior, settings, 4, tmp_path)
    assert calls == [4] and torch.equal(again, four)  # from the cache: no sampling
    six = stable_diffusion_samples(prior, settings, 6, tmp_path)
    assert calls == [4, 2] and torch.equal(six[:4], four)  # extended by the two missing
    fresh = stable_diffusion_samples(prior, settings, 6, tmp_path / "other-cache")
    # sample i has its own seed: the same set however it was built (up to one 8-bit level: batched float sums)
    assert float((fresh - six).abs().max()) <= 1.5 / 255
    other = stable_diffusion_samples(prior, replace(settings, prompt="a car"), 2, tmp_path)
    assert not torch.equal(other, six[:2])
    assert len(list((tmp_path / "fid-samples").iterdir())) == 2


# ---------------------------------------------------------------------------------------------- runs
def test_evaluate_a_stable_diffusion_run_uses_its_model_and_loads_models_once(models_dir, tmp_path):
    """A run of prior:sd: FID against its own model's samples; CLIP and the classifier load once for both runs."""
    (run,) = copy_runs(tmp_path, ("esd",))
    config = load_yaml_config(run / "config.yaml")
    sd = StableDiffusionConfig(model=str(models_dir / "sd"), view_dependent_prompt=False)
    (run / "config.yaml").write_text(dump_yaml_config(replace(config, prior=sd)))
    second = tmp_path / "esd-copy"
    shutil.copytree(run, second)
    eval_config = small_config(models_dir, tmp_path)
    models = EvalModels(CPU)
    for target in (run, second):
        result, views = evaluate(resolve_target(target), eval_config, models)
        assert views.shape == (120, 3, 32, 32)
        assert result["fid"]["source"] == f"Stable Diffusion {models_dir / 'sd'}" and result["fid"]["samples"] == 16
        assert "ground_truth" not in result and result["janus"]["classifier"] == "clip"
        assert len(result["per_view"]["clip_similarity"]) == 120
        assert result["clip"]["distance"] == pytest.approx(1 - result["clip"]["similarity"])
        assert 0.0 <= result["iq_iv"]["iq"] <= math.log(10) + 1e-6
    assert models.loads == {"clip": 1, "stable_diffusion": 1, "classifier": 1}


def test_evaluate_and_compare_commands(models_dir, tmp_path):
    runs = copy_runs(tmp_path)
    env = {"HF_HUB_OFFLINE": "1", "ESD_GS_CACHE": str(tmp_path / "cache")}
    small = [
        "--clip-model",
        models_dir / "clip",
        "--classifier",
        models_dir / "classifier",
        "--size",
        "32",
        "--fid-samples",
        "16",
    ]
    done = run_cli("evaluate", runs[2], *small, env_extra=env)
    assert done.returncode == 0, done.stderr
    saved = json.loads((runs[2] / "eval.json").read_text())
    assert {"clip", "fid", "iq_iv", "janus", "ground_truth", "seconds"} <= set(saved)
    assert saved["fid"]["source"] == "synthetic prior (32 px)" and (runs[2] / "eval.png").stat().st_size > 10_000
    again = run_cli("evaluate", runs[2], *small, env_extra=env)
    assert again.returncode == 2 and "--overwrite" in again.stderr and "Traceback" not in again.stderr
    before = (runs[2] / "eval.json").stat().st_mtime_ns
    done = run_cli("compare", *runs, "--out", tmp_path / "cmp", *small, env_extra=env)
    assert done.returncode == 0, done.stderr
    assert "esd: evaluated earlier with the same settings, reused" in done.stderr.replace("\n", " ")
    lines = done.stderr.splitlines()  # issue 30: compare's rate is per run; an evaluation's stages show none
    comparing = [line for line in lines if line.startswith("comparing ")]
    assert comparing and all(re.search(r" (s/run|run/s) ", line) for line in comparing), comparing
    assert re.search(r" \d+\.\d+ (s/run|run/s) ", comparing[-1]), comparing  # a rate, not "--"
    assert all("/s" not in line for line in lines if line.startswith("evaluating ")), lines
    assert (runs[2] / "eval.json").stat().st_mtime_ns == before  # reused, not redone
    table = (tmp_path / "cmp" / "compare.md").read_text()
    rows = [
        line.split(" | ")[0].strip("| ") for line in table.splitlines() if line.startswith("| ") and "---" not in line
    ]
    assert rows[:4] == ["run", "sds", "vsd", "esd"]
    assert "Ground truth" in table and (tmp_path / "cmp" / "compare.png").stat().st_size > 10_000
    assert len(json.loads((tmp_path / "cmp" / "compare.json").read_text())["runs"]) == 3
    other = run_cli("compare", *runs, "--out", tmp_path / "cmp2", *small[:-1], "8", env_extra=env)
    assert other.returncode == 2 and "other settings" in other.stderr


def test_compare_loads_each_model_once_for_all_runs(models_dir, tmp_path):
    runs = copy_runs(tmp_path)
    models = EvalModels(CPU)
    config = small_config(models_dir, tmp_path)
    compare([resolve_target(r) for r in runs], config, models, tmp_path / "out", "torch", overwrite=False)
    # one prior and one sample set for the 3 runs
    assert models.loads == {"clip": 1, "classifier": 1, "synthetic reference": 1, "synthetic samples": 1}
    assert all((r / "eval.json").is_file() for r in runs)


@pytest.mark.parametrize(
    "args, message",
    [
        (["{ply}"], "pass --prompt"),
        (["{missing}"], "does not exist"),
        (["{run}", "--clip-model", "{nowhere}"], "could not load the CLIP model"),
        (["{run}", "--classifier", "{nowhere}"], "could not load the image classifier"),
        (["{ply}", "--prompt", "a head", "--sides", "reference"], "--sides reference needs a run of a synthetic prior"),
        (["{run}", "--views", "1"], "--views must be in"),
        (["{run}", "--fid-samples", "1"], "--fid-samples must be >= 2"),
        (["{run}", "--fid-features", "inception"], "torch-fidelity"),
        (["{empty}"], "holds no scene.ply"),
        ([], "name at least one"),
    ],
)
def test_bad_input_is_one_line(models_dir, tmp_path, args, message):
    (run,) = copy_runs(tmp_path, ("esd",))
    (tmp_path / "empty").mkdir()
    names = {
        "ply": run / "scene.ply",
        "missing": tmp_path / "nope.ply",
        "run": run,
        "nowhere": tmp_path / "none",
        "empty": tmp_path / "empty",
    }
    argv = [a.format(**{k: str(v) for k, v in names.items()}) for a in args]
    small = {"--clip-model": models_dir / "clip", "--classifier": models_dir / "classifier", "--size": 32}
    extra = [str(x) for key, value in small.items() if key not in argv for x in (key, value)]
    done = run_cli("evaluate", *argv, *extra, env_extra={"HF_HUB_OFFLINE": "1"})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert message in lines[-1] and lines[-1].startswith("esd-gs: error:") and "Traceback" not in done.stderr


def two_faced_head():
    """The built-in head with its back replaced by its front, mirrored (x -> -x): a face at azimuth 0 and 180."""
    from esd_gs.example import builtin_head
    from esd_gs.scene import GaussianScene

    raw = builtin_head().raw()
    front = raw["means"][:, 0] > 0
    mirrored = {k: v[front].clone() for k, v in raw.items()}
    mirrored["means"][:, 0] *= -1
    mirrored["quats"][:, 2:] *= -1  # (w, x, y, z) of M R M with M = diag(-1, 1, 1)
    return GaussianScene({k: torch.cat([raw[k][front], mirrored[k]]) for k in raw})


def test_the_measure_finds_two_faces_and_a_face_everywhere(models_dir, tmp_path):
    """Known answers beyond the saved runs: a two-faced head is Janus (2 arcs), as the ground truth says; the
    collapsed SDS run (one arc, every view frontal) is a face everywhere; the single-faced reference is one face."""
    from esd_gs.io import write_ply

    (run,) = copy_runs(tmp_path, ("sds",))
    models = EvalModels(CPU)
    config = small_config(models_dir, tmp_path, sides="reference", metrics=("janus",))
    collapsed, _ = evaluate(resolve_target(run), config, models)
    assert collapsed["janus"]["verdict"] == "face everywhere" and collapsed["janus"]["frontal_arcs"] == 1
    write_ply(two_faced_head(), run / "scene.ply")
    janus, _ = evaluate(resolve_target(run), config, models)
    assert janus["janus"]["frontal_arcs"] == 2 and janus["janus"]["verdict"] == "Janus"
    assert janus["ground_truth"]["face_count"] == 2 and janus["ground_truth"]["excess_faces"] == 1
    assert janus["ground_truth"]["true_back_share"] < 0.5 and janus["ground_truth"]["one_face"] is False
    assert collapsed["ground_truth"]["one_face"] is False  # a face everywhere: no excess face, the share far off
    from esd_gs.example import builtin_head

    write_ply(builtin_head(), run / "scene.ply")
    single, _ = evaluate(resolve_target(run), config, models)
    assert single["janus"]["verdict"] == "one face" and single["ground_truth"]["excess_faces"] == 0
    assert single["ground_truth"]["true_back_share"] == 1.0 and single["ground_truth"]["one_face"] is True


# ---------------------------------------------------------------------------------------------- the metric table
def test_the_metric_table_is_what_metrics_accepts_and_help_lists(monkeypatch, capsys):
    import typing

    from esd_gs.cli.main import main

    assert list(METRICS) == list(typing.get_args(Metric)) == list(ALL_METRICS) == list(EvalConfig().metrics)
    monkeypatch.setenv("COLUMNS", "300")
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = capsys.readouterr().out
    assert f"Metrics to compute: {', '.join(METRICS)}." in text
    assert "{" + ",".join(METRICS) + "}" in text  # the choices tyro offers: the Literal's
    assert main(["evaluate", "scene.ply", "--metrics", "psnr"]) == 2
    assert f"Expected one of {tuple(METRICS)}" in capsys.readouterr().err


def test_evaluate_runs_the_requested_entries_once_each_in_table_order(tmp_path, monkeypatch):
    """Whatever the order of --metrics, eval.json, its timings and its summary follow the table."""
    from esd_gs.evaluation.report import summary_lines

    ran = []
    for name, entry in list(METRICS.items()):

        def compute(inputs, name=name):
            ran.append(name)
            return {"views": int(inputs.views.shape[0])}

        monkeypatch.setitem(METRICS, name, replace(entry, compute=compute, summary=lambda part, name=name: name))
    config = EvalConfig(metrics=("janus", "clip"), views=4, size=16, cache_dir=tmp_path / "cache")
    target = resolve_target(Path(__file__).parents[1] / "assets" / "head.ply", "a head", tmp_path / "out")
    result, views = evaluate(target, config, EvalModels(CPU), backend="torch")
    assert ran == ["clip", "janus"] and views.shape == (4, 3, 16, 16)
    assert result["clip"] == result["janus"] == {"views": 4} and "fid" not in result and "iq_iv" not in result
    assert list(result["seconds"]) == ["render", "clip", "janus"]
    assert summary_lines(result) == ["clip", "janus"]
