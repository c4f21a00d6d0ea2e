"""Running the jobs of a batch: ``run_job`` does one job in any process; ``BatchWorker`` (a Ray actor, one per GPU or
CPU slot) runs job after job and keeps what is expensive to load: the priors (``PriorCache``: one per
``priors.prior_key``, handed back unchanged after each run by ``Prior.restore``) and, with ``--evaluate``, the
evaluation models.

A job's run directory decides what it does: a run of other settings, or files that are no run (no config.yaml) ->
refused (never removed); finished (run.json and scene.ply) -> skipped; unfinished with a checkpoint (interrupted,
or "running" when its worker was killed) -> resumed; anything else of the same settings -> started afresh
(``generate --overwrite`` rules: the old outputs are set aside until the new run has finished). Whatever
fails (a bad prompt, a NaN, out of memory) ends as the job's one-line reason; the worker goes on with the next job.
Each job's console output (its progress bar) goes to ``RUN/batch.log``.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from dataclasses import asdict, dataclass, replace

from ..configs.generate import GenerateConfig
from ..configs.yaml_io import load_run_config, run_settings
from ..progress import stage_log
from ..training.checkpoint import has_checkpoint
from ..training.run_dir import RunDir

LOG = "batch.log"


@dataclass
class JobResult:
    name: str
    status: str
    """finished, skipped (finished earlier), interrupted (resumable) or failed."""
    reason: str = ""
    """Why it failed or stopped, in one line."""
    seconds: float = 0.0
    resumed: bool = False
    prior_loads: int = 0
    """Priors this worker had loaded when the job ended (tests: fewer than the jobs)."""
    evaluated: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


class PriorCache:
    """One built prior per ``prior_key``, on one device."""

    def __init__(self):
        self.priors: dict = {}
        self.loads = 0

    def get(self, config: GenerateConfig):
        from ..environment import pick_device
        from ..priors import prior_key

        device = pick_device(config.device)
        key = (prior_key(config.prior, config.run_context), str(device))
        if key not in self.priors:
            self.priors[key] = config.prior.build(device, config.run_context)
            self.loads += 1
        return self.priors[key]

    def drop(self, config: GenerateConfig) -> None:
        from ..priors import prior_key

        key = prior_key(config.prior, config.run_context)
        self.priors = {k: v for k, v in self.priors.items() if k[0] != key}


def _free_memory(exc: BaseException) -> None:
    """After an out-of-memory error on CUDA, hand the cached blocks back before the next job."""
    import torch

    if torch.cuda.is_available() and "out of memory" in str(exc).lower():
        torch.cuda.empty_cache()


def _one_line(exc: BaseException) -> str:
    from ..errors import UserError, public_names

    text = public_names((str(exc).strip().splitlines() or [""])[0])[:300]
    if isinstance(exc, UserError):
        return text
    if "out of memory" in text.lower():
        return f"out of memory ({type(exc).__name__})"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_job(name: str, config: GenerateConfig, priors: PriorCache, evaluate_with=None) -> JobResult:
    """One job (module docstring). ``evaluate_with``: (EvalConfig, EvalModels) to evaluate the finished run."""
    from ..errors import UserError
    from ..pipeline.generate import generate
    from ..training.trainer import Interrupted

    files = RunDir(config.out)
    start = time.perf_counter()
    status = files.read_status()
    if files.config.is_file():
        try:
            saved = load_run_config(files.config)
        except UserError as exc:
            return JobResult(name, "failed", f"{files.config}: {exc}")
        if run_settings(saved) != run_settings(replace(config, out=None)):
            return JobResult(
                name, "failed", f"{files.path} holds a run of other settings: remove it or use another --out"
            )
        if status == "finished" and files.scene_ply.is_file():
            return _evaluated(JobResult(name, "skipped", "finished earlier"), config, files, evaluate_with)
    elif files.existing_outputs() or files.replaced.exists():
        return JobResult(name, "failed", f"{files.path} holds files that are not a run of this batch: move them away")
    # a checkpoint of an unfinished run (interrupted, or its worker killed while "running"): resume it
    resume = status in ("interrupted", "running") and has_checkpoint(files.checkpoint)
    job = replace(config, resume=files.path) if resume else replace(config, overwrite=bool(files.existing_outputs()))
    prior = None
    try:
        files.path.mkdir(parents=True, exist_ok=True)
        log = open(files.path / LOG, "a", encoding="utf-8")
    except OSError as exc:
        return JobResult(name, "failed", f"cannot write {files.path}: {exc.strerror or exc}")
    with log, contextlib.redirect_stderr(log), stage_log():
        try:
            prior = priors.get(config)
            generate(job, prior=prior)
            result = JobResult(name, "finished", resumed=resume)
        except Interrupted as exc:
            result = JobResult(name, "interrupted", f"stopped by {exc}; re-run the batch to resume", resumed=resume)
        except Exception as exc:  # one job's failure never stops the worker
            traceback.print_exc(file=log)
            result = JobResult(name, "failed", _one_line(exc), resumed=resume)
            _free_memory(exc)
        finally:
            if prior is not None:
                try:
                    prior.restore()
                except Exception as exc:  # the prior cannot be trusted any more: build it again next time
                    traceback.print_exc(file=log)
                    priors.drop(config)
                    result.reason = (result.reason + "; " if result.reason else "") + f"prior reset: {_one_line(exc)}"
    result.seconds = time.perf_counter() - start
    result.prior_loads = priors.loads
    return _evaluated(result, config, files, evaluate_with) if result.status == "finished" else result


def _evaluated(result: JobResult, config: GenerateConfig, files: RunDir, evaluate_with) -> JobResult:
    """With ``--evaluate``: eval.json and eval.png in the run directory (kept when already there, same settings)."""
    if evaluate_with is None:
        return result
    from ..evaluation.evaluate import evaluate, resolve_target, saved_evaluation, write_evaluation

    eval_config, models = evaluate_with
    try:
        target = resolve_target(files.path)
        if saved_evaluation(target, eval_config) is None:
            with open(files.path / LOG, "a", encoding="utf-8") as log, contextlib.redirect_stderr(log):
                write_evaluation(target, *evaluate(target, eval_config, models))
        result.evaluated = True
    except Exception as exc:
        result.reason = (result.reason + "; " if result.reason else "") + f"evaluation failed: {_one_line(exc)}"
    return result


def worker_class(ray):
    """The Ray actor class (defined once Ray is imported: Ray stays an optional dependency)."""

    @ray.remote(max_restarts=0)
    class BatchWorker:
        def __init__(self, eval_config=None):
            self.priors = PriorCache()
            self.eval_config = eval_config
            self.eval_models = None

        def where(self) -> tuple[str, int]:
            """(node id, process id): where a stop signal for this worker must be sent."""
            return ray.get_runtime_context().get_node_id(), os.getpid()

        def run(self, name: str, config: GenerateConfig) -> dict:
            evaluate_with = None
            if self.eval_config is not None:
                if self.eval_models is None:
                    from ..environment import pick_device
                    from ..evaluation.models import EvalModels

                    self.eval_models = EvalModels(pick_device(config.device))
                evaluate_with = (self.eval_config, self.eval_models)
            return run_job(name, config, self.priors, evaluate_with).as_dict()

    return BatchWorker
