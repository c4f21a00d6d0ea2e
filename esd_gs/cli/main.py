"""The ``esd-gs`` command: one tyro subcommand per job.

Every user-facing failure (bad flag values, unreadable files, missing models, occupied run directories) ends as
one line on stderr and exit code 2 (a permission problem counts as one); a training failure (persistent NaNs) or a
file system failure while running (a full disk, a vanished folder) or a GPU out of memory exits 1, also with one line
(for ``generate``, naming the settings to lower; its run saves a checkpoint and the scene first); Ctrl-C / SIGTERM
during ``generate`` saves a checkpoint and the scene (or says in one line why it could not), then exits 130 / 143.
Programming errors keep their traceback.

This module is the console entry point (``esd-gs = "esd_gs.cli.main:main"``) and imports nothing heavy itself: the
subcommands, tyro and torch are imported inside ``main``, once Ctrl-C and SIGTERM are handled, so that a signal at
any point of start-up (``import torch`` takes seconds) ends as one line, ``esd-gs: interrupted``, exit code 130 /
143, never as a traceback. Only rich comes first (``esd_gs.progress``): on a terminal, the long commands
(``SLOW_STARTS``) name what they load from their first second, torch included. The subcommands' config classes
are still importable from here (``__getattr__``).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import signal
import sys
from typing import Any, NamedTuple, Union

from ..errors import OutOfMemory, Stopped, UserError, out_of_memory, public_names
from ..progress import stage_log


class Subcommand(NamedTuple):
    """One ``esd-gs`` subcommand, by reference (``"module:name"``, imported only when used): its options' config class
    and the function that runs it."""

    config: str
    run: str
    returns_exit_code: bool = False
    """Whether ``run`` returns the exit code (doctor, batch, view); the others exit 0 when they return."""


SUBCOMMANDS = {
    "generate": Subcommand("..configs.generate:GenerateConfig", ".generate_cmd:run_generate"),
    "render": Subcommand(".render_cmd:RenderArgs", ".render_cmd:run_render"),
    "export": Subcommand(".export_cmd:ExportArgs", ".export_cmd:run_export"),
    "bench": Subcommand(".bench_cmd:BenchArgs", ".bench_cmd:run_bench"),
    "evaluate": Subcommand(".evaluate_cmd:EvaluateArgs", ".evaluate_cmd:run_evaluate"),
    "batch": Subcommand(".batch_cmd:BatchArgs", ".batch_cmd:run_batch_command", returns_exit_code=True),
    "view": Subcommand(".view_cmd:ViewArgs", ".view_cmd:run_view", returns_exit_code=True),
    "compare": Subcommand(".compare_cmd:CompareArgs", ".compare_cmd:run_compare"),
    "doctor": Subcommand(".doctor_cmd:DoctorArgs", ".doctor_cmd:run_doctor", returns_exit_code=True),
}
"""The subcommands, in the order ``esd-gs --help`` lists them."""


def _load(reference: str) -> Any:
    module, name = reference.split(":")
    return getattr(importlib.import_module(module, __package__), name)


def __getattr__(name: str):
    """The subcommands' config classes (``from esd_gs.cli.main import GenerateConfig``), imported when first asked
    for."""
    for command in SUBCOMMANDS.values():
        if command.config.endswith(f":{name}"):
            value = globals()[name] = _load(command.config)
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


def _parse(commands, argv: list[str], lenient: bool = False):
    """tyro.cli, with its boxed usage errors turned into one UserError line (help still prints normally; an option
    esd-gs 0.1 spelled differently gets its new spelling). ``lenient``: options these defaults do not have are left
    for a later parse (an option of the prior a preset chooses, parsed before the preset is known)."""
    import tyro

    from .help import DESCRIPTION, optional_metavars

    buffer = io.StringIO()
    try:
        with contextlib.redirect_stderr(buffer):
            parsed = tyro.cli(
                commands,
                args=argv,
                description=DESCRIPTION,
                registry=optional_metavars(),
                config=(tyro.conf.CascadeSubcommandArgs,),  # options may follow prior:NAME, psi:NAME and init:NAME
                return_unknown_args=lenient,
            )
            return parsed[0] if lenient else parsed
    except SystemExit as exit_:
        captured = buffer.getvalue()
        if exit_.code in (0, None) or not captured.strip():
            sys.stderr.write(captured)
            raise
        message = re.sub(r"^Error parsing [^:]*: ", "", _panel_message(captured))  # a config's own check: its words
        if argv and "nrecognized" in message:
            from .generate_cmd import old_spelling, part_option_hint

            hint = part_option_hint(argv[1:]) if argv[0] == "generate" else None
            message = old_spelling(argv[0], argv[1:]) or hint or message
        raise UserError(message + " (see --help)") from None
    except ValueError as exc:  # a nested config refused a value in its __post_init__
        raise UserError(str(exc)) from None


HELP_FLAGS = ("-h", "--help")


def parse_args(argv: list[str]) -> Any:
    """Command line -> the chosen subcommand's config. ``generate``'s is parsed against the defaults of the preset and
    file it names (``generate_cmd.generate_defaults``), so that its flags override them and ``--help`` shows them."""
    from .help import subcommand

    chosen = argv[0] if argv else None

    def parse(generate_defaults, line: list[str], lenient: bool = False):
        commands = []
        for name, command in SUBCOMMANDS.items():
            config = _load(command.config)
            given = {"default": generate_defaults} if name == "generate" and generate_defaults is not None else {}
            commands.append(subcommand(name, config, chosen, **given))
        return _parse(Union[tuple(commands)], line, lenient)

    if chosen != "generate":
        return parse(None, argv)
    from .generate_cmd import generate_defaults, init_short_form, name_default_parts

    argv = init_short_form(argv)
    without_help = [arg for arg in argv if arg not in HELP_FLAGS]  # help waits for the preset's defaults
    defaults = generate_defaults(lambda defaults: parse(defaults, without_help, lenient=True))
    return parse(defaults, name_default_parts(argv, defaults))


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
        with stage_log():
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


SLOW_STARTS = ("generate", "evaluate", "compare", "batch", "bench")
"""The subcommands whose start-up (torch, the models) takes seconds: a spinner says so from the first one."""


def _starting(argv: list[str], doing: str):
    """A spinner while the libraries load and the command line is read, for ``SLOW_STARTS`` on a terminal only (a
    mistake in the command line stays the only line; ``--help`` prints as it is)."""
    from ..progress import stage

    quiet = not argv or argv[0] not in SLOW_STARTS or any(arg in HELP_FLAGS for arg in argv)
    return contextlib.nullcontext() if quiet else stage(f"esd-gs {argv[0]}: {doing}", terminal_only=True)


def _run(argv: list[str]) -> int:
    with _starting(argv, "loading torch"):  # before torch: its import is the first seconds of every command
        import torch

        from ..io import PlyFormatError
        from ..training.trainer import Interrupted, TrainingError

    try:
        with _starting(argv, "reading the options"):
            args = parse_args(argv)
        (command,) = [c for c in SUBCOMMANDS.values() if type(args) is _load(c.config)]
        code = _load(command.run)(args)
        if command.returns_exit_code:
            return code
    except (UserError, PlyFormatError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        message = str(exc)
        if isinstance(exc, OSError) and exc.filename:
            message = f"{exc.strerror}: {exc.filename}"
        return _error(message, 2)
    except OSError as exc:  # not the input but the disk: full, read-only, vanished (exit 1, like a failed run)
        where = f" ({exc.filename})" if exc.filename else ""
        return _error(f"{exc.strerror or exc}{where}", 1)
    except (TrainingError, OutOfMemory) as exc:
        return _error(str(exc), 1)
    except torch.cuda.OutOfMemoryError as exc:  # outside generate, which names its own settings (pipeline/generate.py)
        return _error(f"{out_of_memory(exc)}: free what other processes hold, or use smaller sizes", 1)
    except Interrupted as exc:
        hint = (
            "resume with --resume" if exc.resumable is not False else "nothing was saved that --resume could continue"
        )
        print(f"esd-gs: interrupted ({exc}); {hint}", file=sys.stderr)
        return 128 + exc.signum
    return 0


if __name__ == "__main__":
    sys.exit(main())
