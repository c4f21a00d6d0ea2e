"""The jobs of a batch: a job file read into prompts and options, expanded over methods and seeds into the
``GenerateConfig`` of each run.

A job file is either

- text: one prompt a line (blank lines and lines starting with ``#`` are skipped), or
- YAML / JSON (``.yaml``, ``.yml``, ``.json``): a list whose items are a prompt string or a mapping with ``prompt``
  and any generate setting, written as in a config file (``steps: 600``, ``preset: synthetic``, ``prior: {p_front:
  0.8}``).

Each job's config is the base (the job's ``preset``, else ``--preset``, else esd; with ``--config``'s file over it)
with the job's settings on top (nested mappings merged), then the method and the seed. (A job of esd-gs 0.1 that says
``prior: synthetic`` starts from the synthetic preset.) Every config is checked before anything runs; a bad one is
one line naming its job.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, replace
from pathlib import Path

from ..configs.generate import GenerateConfig
from ..configs.presets import PRESETS, preset
from ..configs.yaml_io import config_from_dict, load_yaml_config, parse_text, shown_value
from ..distillation import METHODS
from ..errors import UserError
from ..estimators import ESTIMATORS
from ..files import read_text_file


@dataclass(frozen=True)
class Job:
    """One run of the batch."""

    name: str
    """Its folder under the batch's output directory: <prompt slug>-<method>-s<seed> (a prompt given again with
    other settings: <prompt slug>-job<index>-...)."""
    config: GenerateConfig
    """Its whole config, ``out`` set to its folder."""


def read_job_file(path: Path) -> list[dict]:
    """The job file -> one mapping per job (``prompt`` and settings), in file order. A file that is not a regular
    one (a FIFO), or YAML / JSON nested too deeply, is refused in one line (``files.read_text_file``,
    ``presets.parse_text``)."""
    text = read_text_file(path, "job file")
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        syntax = "json" if path.suffix.lower() == ".json" else "yaml"
        items = parse_text(text, syntax, f"job file {path}")
        if not isinstance(items, list):
            raise UserError(f"job file {path}: expected a list of jobs, got {type(items).__name__}")
        jobs = []
        for index, item in enumerate(items, 1):
            if isinstance(item, str):
                item = {"prompt": item}
            if not isinstance(item, dict) or not isinstance(item.get("prompt"), str) or not item["prompt"].strip():
                raise UserError(f"job file {path}, job {index}: needs a prompt (a string, or a mapping with prompt:)")
            jobs.append(item)
    else:
        jobs = [
            {"prompt": line.strip()} for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
        ]
    if not jobs:
        raise UserError(f"job file {path} holds no jobs")
    return jobs


def _absolute_paths(config: GenerateConfig) -> GenerateConfig:
    """Local model folders, reference files and the start's file or model folder as absolute paths (Hub ids and family
    names stay as they are)."""

    def absolute(value):
        return str(Path(value).expanduser().resolve()) if value and Path(value).expanduser().exists() else value

    def resolved(part):
        """A part's config with every path in it absolute: ``Path`` values (and tuples of them), nested configs, and
        the model fields (``model``, ``base_model``: text, a folder when one exists there, else a Hub id)."""
        changes = {}
        for f in dataclasses.fields(part):
            value = getattr(part, f.name)
            if isinstance(value, Path):
                changes[f.name] = value.expanduser().resolve()
            elif isinstance(value, tuple) and value and all(isinstance(v, Path) for v in value):
                changes[f.name] = tuple(v.expanduser().resolve() for v in value)
            elif dataclasses.is_dataclass(value):
                changes[f.name] = resolved(value)
            elif f.name in ("model", "base_model") and isinstance(value, str):
                changes[f.name] = absolute(value)
        return replace(part, **changes)

    return replace(config, prior=resolved(config.prior), psi=resolved(config.psi), init=resolved(config.init))


def slug(prompt: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:40] or "job"


def expand_jobs(
    items: list[dict],
    out: Path,
    config_file: Path | None = None,
    preset_name: str | None = None,
    methods: tuple[str, ...] = (),
    seeds: int | None = None,
    steps: int | None = None,
    where: str = "job file",
) -> list[Job]:
    """Every (job, method, seed) as a checked config with its own folder under ``out``. ``methods`` empty: each job's
    own method; ``seeds`` None: each job's own seed, else seeds 0 .. seeds-1."""
    for method in methods:
        if method not in METHODS:
            raise UserError(f"unknown method '{method}' in --methods: use {', '.join(METHODS)}")
    if seeds is not None and seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {seeds}")
    if preset_name is not None:
        preset(preset_name)  # an unknown one: one line before any job is read
    out = out.resolve()  # the workers may run in another folder (a cluster's): every path is absolute
    jobs, first_of_slug, taken = [], {}, set()
    for index, item in enumerate(items, 1):
        settings = {k: v for k, v in item.items()}
        label = f"{where}, job {index} ({shown_value(item['prompt'])})"
        name = settings.pop("preset", None)
        if isinstance(settings.get("prior"), str):  # esd-gs 0.1: the prior's name chose the synthetic defaults
            old = settings.pop("prior")
            name = name or (old if old in PRESETS else "esd")
        if name is not None and name not in PRESETS:
            raise UserError(f"{label}: unknown preset {shown_value(name)}: use {', '.join(PRESETS)}")
        psi = settings.get("psi")
        chosen = preset(name or preset_name or "esd")
        base = (
            chosen.with_psi(psi["name"]) if isinstance(psi, dict) and psi.get("name") in ESTIMATORS else chosen.config
        )
        if config_file is not None:
            base = load_yaml_config(config_file, "config file", base=base)
        for key in ("out", "resume", "overwrite", "config", "viewer", "viewer_port"):
            if key in settings:
                raise UserError(f"{label}: '{key}' is set by the batch, not per job")
        config = config_from_dict(settings, where=label, base=base)
        if steps is not None:
            config = replace(config, steps=steps)
        if config.device.startswith("cuda:") and config.device != "cuda:0":
            raise UserError(f"{label}: device {config.device}: each batch worker sees its one GPU as cuda (cuda:0)")
        config = _absolute_paths(config)
        stem = slug(config.prompt)
        if first_of_slug.setdefault(stem, index) != index:  # the same prompt again, with other settings
            stem = f"{stem}-job{index}"
        for method in methods or (config.distill.method,):
            for seed in range(seeds) if seeds is not None else (config.seed,):
                name = f"{stem}-{method}-s{seed}"
                if name in taken:
                    raise UserError(f"{label}: its run folder {name} is already another job's: change its prompt")
                taken.add(name)
                run = replace(config, distill=replace(config.distill, method=method), seed=seed, out=out / name)
                try:
                    run.validate()
                except (UserError, ValueError) as exc:
                    raise UserError(f"{label}: {exc}") from None
                jobs.append(Job(name, run))
    return jobs
