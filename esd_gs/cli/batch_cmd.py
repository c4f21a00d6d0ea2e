"""``esd-gs batch JOBS --out DIR``: parses the options, builds every job (``batch/jobs.py``) and runs them on Ray
(``batch/runner.py``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from ..batch.jobs import expand_jobs, read_job_file
from ..configs.generate import PresetName
from ..distillation import METHODS
from ..errors import UserError
from ..evaluation.evaluate import EvalConfig

METHODS_HELP = (
    f"Run each job with each of these methods (space- or comma-separated: {', '.join(METHODS)}); empty: each job's own."
)


@dataclass
class BatchArgs:
    """Run many generate jobs (prompts x methods x seeds) on Ray, here or on a cluster.

    Running it again skips finished jobs and resumes interrupted ones.

    Writes one run directory per job, batch.json and a gallery (index.html).

    For example:
      esd-gs batch prompts.txt --out runs/library --methods sds,vsd,esd --seeds 3
      esd-gs batch prompts.txt --out runs/library --address auto
    """

    # A YAML / JSON job is a prompt, or a mapping of prompt and any generate setting, as in a preset.
    jobs: tyro.conf.Positional[Path]
    """Job file: text (one prompt a line, # comments) or a YAML / JSON list of prompts or of generate settings."""
    out: Path = Path("runs/batch")
    """Output directory: one run directory per job, batch.json, index.md, index.html."""
    preset: PresetName | None = None
    """The generate preset every job starts from unless it names its own (as generate's --preset); None = esd."""
    config: Path | None = None
    """A YAML file of generate settings applied over each job's preset (as generate's --config)."""
    methods: Annotated[tuple[str, ...], tyro.conf.arg(help=METHODS_HELP)] = ()
    seeds: int | None = None
    """Run each job with seeds 0 .. N-1; None = each job's own seed, once."""
    steps: int | None = None
    """Steps of every job; None = each job's own."""
    address: str | None = None
    """Ray cluster to join ('auto', 'ray://host:10001' or 'host:6379'); None = start Ray on this machine."""
    workers: int | None = None
    """Workers; None = one per GPU, or 1 on CPUs (each gets an equal share of the cores)."""
    evaluate: bool = False
    """Evaluate every finished job (esd-gs evaluate; the --eval.* options) and put its metrics in the gallery."""
    eval: EvalConfig = field(default_factory=EvalConfig)


def run_batch_command(args: BatchArgs) -> int:
    from ..batch.runner import check_address, import_ray, run_batch

    methods = tuple(m.strip() for item in args.methods for m in item.split(",") if m.strip())
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    check_address(args.address)  # a form Ray would wait on without end: refused before anything is read
    if args.config is not None and not os.path.lexists(args.config):
        raise UserError(f"config file {args.config} does not exist")
    items = read_job_file(args.jobs)
    jobs = expand_jobs(items, args.out, args.config, args.preset, methods, args.seeds, args.steps, where=str(args.jobs))
    import_ray()  # before any folder is made: one line when Ray is missing
    if args.evaluate:
        from ..evaluation.evaluate import check_dependencies

        check_dependencies(args.eval)
    check_out_dir(args.out)  # made once Ray has started or joined (run_batch): a cluster that fails leaves nothing
    return run_batch(jobs, args.out, args.address, args.workers, args.eval if args.evaluate else None)


def check_out_dir(out: Path) -> None:
    """--out can be used: a folder, or one that can be made (the nearest existing path above it a writable folder).
    Nothing is created."""
    if out.exists() and not out.is_dir():
        raise UserError(f"output path {out} exists and is not a directory")
    probe = Path(os.path.abspath(out))
    while not os.path.lexists(probe) and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"cannot create output directory {out}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"output directory {out} cannot be made: {probe} is not writable")
