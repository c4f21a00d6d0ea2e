"""The ``esd-gs`` command: one tyro subcommand per job.

Every user-facing failure (bad flag values, unreadable files, missing models, occupied run directories) ends as
one line on stderr and exit code 2 (a permission problem counts as one); a training failure (persistent NaNs) or a
file system failure while running (a full disk, a vanished folder) exits 1, also with one line; Ctrl-C / SIGTERM
during ``generate`` saves a checkpoint and the scene (or says in one line why it could not), then exits 130 / 143.
Programming errors keep their traceback.

This module is the console entry point (``esd-gs = "esd_gs.cli.main:main"``) and imports nothing heavy itself: the
subcommands, tyro and torch are imported inside ``main``, once Ctrl-C and SIGTERM are handled, so that a signal at
any point of start-up (``import torch`` takes seconds) ends as one line, ``esd-gs: interrupted``, exit code 130 /
143, never as a traceback. The subcommands' config classes are still importable from here (``__getattr__``).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import signal
import sys
from typing import TYPE_CHECKING, Union

from ..errors import Stopped, UserError, public_names

if TYPE_CHECKING:
    from ..configs.generate import GenerateConfig
    from .batch_cmd import BatchArgs
    from .bench_cmd import BenchArgs
    from .compare_cmd import CompareArgs
    from .doctor_cmd import DoctorArgs
    from .evaluate_cmd import EvaluateArgs
    from .export_cmd import ExportArgs
    from .render_cmd import RenderArgs
    from .view_cmd import ViewArgs

_LAZY = {
    "GenerateConfig": "..configs.generate",
    "BatchArgs": ".batch_cmd",
    "BenchArgs": ".bench_cmd",
    "CompareArgs": ".compare_cmd",
    "DoctorArgs": ".doctor_cmd",
    "EvaluateArgs": ".evaluate_cmd",
    "ExportArgs": ".export_cmd",
    "RenderArgs": ".render_cmd",
    "ViewArgs": ".view_cmd",
}
"""The subcommands' config classes, imported from their modules when first asked for."""


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __package__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _error(message: str, code: int) -> int:
    """One line on stderr; a hidden temporary file is named as the file it was to become (``public_names``)."""
    print(f"esd-gs: error: {public_names(message)}", file=sys.stderr)
    return code


def _panel_message(text: str) -> str:
    """The message inside tyro's error panel, as one line: the lines between the title and the first rule after them
    (drawn with box characters on a terminal, with dashes elsewhere)."""
    lines = []
    for raw in text.splitlines()[1:]:  # the first line is the panel's title bar
        line = raw.strip().strip("│|").strip()
        if not line or line.startswith(("╰", "╭")):
            continue
        if set(line) <= {"─", "-", " "}:
            if lines:
                break  # what follows the message: similar options, the pointer to --help
            continue
        if line.startswith("For full helptext"):
            break
        lines.append(line)
    return " ".join(lines) or text.strip().splitlines()[0]


def _parse(commands, argv: list[str]):
    """tyro.cli, with its boxed usage errors turned into one UserError line (help still prints normally)."""
    import tyro

    from .help import DESCRIPTION, optional_metavars

    buffer = io.StringIO()
    try:
        with contextlib.redirect_stderr(buffer):
            return tyro.cli(commands, args=argv, description=DESCRIPTION, registry=optional_metavars())
    except SystemExit as exit_:
        captured = buffer.getvalue()
        if exit_.code in (0, None) or not captured.strip():
            sys.stderr.write(captured)
            raise
        message = re.sub(r"^Error parsing [^:]*: ", "", _panel_message(captured))  # a config's own check: its words
        raise UserError(message + " (see --help)") from None
    except ValueError as exc:  # a nested config refused a value in its __post_init__
        raise UserError(str(exc)) from None


def parse_args(
    argv: list[str],
) -> (
    GenerateConfig
    | RenderArgs
    | ExportArgs
    | BenchArgs
    | EvaluateArgs
    | CompareArgs
    | BatchArgs
    | ViewArgs
    | DoctorArgs
):
    """Command line -> the chosen subcommand's config (``generate`` starts from its ``--config`` preset, if any)."""
    from ..configs.generate import GenerateConfig
    from .batch_cmd import BatchArgs
    from .bench_cmd import BenchArgs
    from .compare_cmd import CompareArgs
    from .doctor_cmd import DoctorArgs
    from .evaluate_cmd import EvaluateArgs
    from .export_cmd import ExportArgs
    from .generate_cmd import generate_defaults
    from .help import subcommand
    from .render_cmd import RenderArgs
    from .view_cmd import ViewArgs

    defaults = generate_defaults(argv[1:]) if argv[:1] == ["generate"] else GenerateConfig()
    chosen = argv[0] if argv else None
    commands = Union[
        subcommand("generate", GenerateConfig, chosen, default=defaults),
        subcommand("render", RenderArgs, chosen),
        subcommand("export", ExportArgs, chosen),
        subcommand("bench", BenchArgs, chosen),
        subcommand("evaluate", EvaluateArgs, chosen),
        subcommand("batch", BatchArgs, chosen),
        subcommand("view", ViewArgs, chosen),
        subcommand("compare", CompareArgs, chosen),
        subcommand("doctor", DoctorArgs, chosen),
    ]
    return _parse(commands, argv)


def _stop(signum: int, _frame) -> None:
    raise Stopped(signum)


def main(argv: list[str] | None = None) -> int:
    """``esd-gs``: parse, run the subcommand, map its failure to one line and an exit code. SIGTERM raises ``Stopped``
    (SIGINT: ``KeyboardInterrupt``) wherever no stage has installed its own handling (``generate``'s training and
    ``batch``'s scheduling save their work first); both end here as ``esd-gs: interrupted``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    handlers = {}
    try:
        with contextlib.suppress(ValueError):  # main called outside the main thread: signals stay as they are
            handlers = {signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler)}
            handlers[signal.SIGTERM] = signal.signal(signal.SIGTERM, _stop)
        return _run(argv)
    except KeyboardInterrupt:
        return _interrupted(signal.SIGINT)
    except Stopped as stop:
        return _interrupted(stop.signum)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _interrupted(signum: int) -> int:
    with contextlib.suppress(ValueError):  # a second signal while saying so: ignored, the command is ending
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("esd-gs: interrupted", file=sys.stderr)
    return 128 + signum


def _run(argv: list[str]) -> int:
    from ..configs.generate import GenerateConfig
    from ..io import PlyFormatError
    from ..training.trainer import Interrupted, TrainingError
    from .batch_cmd import BatchArgs, run_batch_command
    from .bench_cmd import run_bench
    from .compare_cmd import CompareArgs, run_compare
    from .doctor_cmd import DoctorArgs, run_doctor
    from .evaluate_cmd import EvaluateArgs, run_evaluate
    from .export_cmd import ExportArgs, run_export
    from .generate_cmd import run_generate
    from .render_cmd import RenderArgs, run_render
    from .view_cmd import ViewArgs, run_view

    try:
        args = parse_args(argv)
        if isinstance(args, GenerateConfig):
            run_generate(args)
        elif isinstance(args, RenderArgs):
            run_render(args)
        elif isinstance(args, ExportArgs):
            run_export(args)
        elif isinstance(args, DoctorArgs):
            return run_doctor(args)
        elif isinstance(args, EvaluateArgs):
            run_evaluate(args)
        elif isinstance(args, CompareArgs):
            run_compare(args)
        elif isinstance(args, BatchArgs):
            return run_batch_command(args)
        elif isinstance(args, ViewArgs):
            return run_view(args)
        else:
            run_bench(args)
    except (UserError, PlyFormatError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        message = str(exc)
        if isinstance(exc, OSError) and exc.filename:
            message = f"{exc.strerror}: {exc.filename}"
        return _error(message, 2)
    except OSError as exc:  # not the input but the disk: full, read-only, vanished (exit 1, like a failed run)
        where = f" ({exc.filename})" if exc.filename else ""
        return _error(f"{exc.strerror or exc}{where}", 1)
    except TrainingError as exc:
        return _error(str(exc), 1)
    except Interrupted as exc:
        hint = (
            "resume with --resume" if exc.resumable is not False else "nothing was saved that --resume could continue"
        )
        print(f"esd-gs: interrupted ({exc}); {hint}", file=sys.stderr)
        return 128 + exc.signum
    return 0


if __name__ == "__main__":
    sys.exit(main())
