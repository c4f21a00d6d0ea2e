"""``esd-gs --help`` and every subcommand's help read well at 80, 100 and 120 columns (in-process ``main``, the
terminal width forced through ``COLUMNS``, which tyro reads with ``shutil.get_terminal_size``).

What "reads well" means here:
- no ragged break: inside a panel, no line of a paragraph is followed by a continuation line whose first word would
  have fitted on it (tyro keeps the line breaks of a docstring whose continuation lines are indented, so a
  hard-wrapped field docstring shows its source line breaks wherever the terminal's width falls);
- the description above the panels: short lines that end a sentence (tyro prints it as written, unwrapped, so each
  line must fit 80 columns and none may be a line broken mid-sentence) and two or three indented example commands,
  each on its own line;
- the prompt shows as PROMPT, no ``{None}|TYPE`` or ``[STR]`` metavar, no reST double backticks.
"""

from __future__ import annotations

import dataclasses
import io
import re
import sys
import typing

import docstring_parser
import pytest

from esd_gs.cli.main import (
    BatchArgs,
    BenchArgs,
    CompareArgs,
    DoctorArgs,
    EvaluateArgs,
    ExportArgs,
    GenerateConfig,
    RenderArgs,
    ViewArgs,
    main,
)

COMMANDS = ["", "generate", "render", "export", "bench", "evaluate", "batch", "view", "compare", "doctor"]
SUBCOMMANDS = [
    GenerateConfig,
    RenderArgs,
    ExportArgs,
    BenchArgs,
    EvaluateArgs,
    BatchArgs,
    ViewArgs,
    CompareArgs,
    DoctorArgs,
]
WIDTHS = [80, 100, 120]
EXAMPLE = re.compile(r"^  esd-gs\b")  # an example command line of a description: indented, its own line


class _Terminal(io.StringIO):
    """A stdout that says it is UTF-8, as a terminal does: tyro draws its panels with box characters only then."""

    encoding = "utf-8"


def render_help(command: str, width: int) -> str:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COLUMNS", str(width))
        out = _Terminal()
        patch.setattr(sys, "stdout", out)
        with pytest.raises(SystemExit) as exit_:
            main([*command.split(), "--help"])
    assert exit_.value.code in (0, None)
    return out.getvalue()


@pytest.fixture(scope="module")
def helps() -> dict[tuple[str, int], str]:
    return {(command, width): render_help(command, width) for command in COMMANDS for width in WIDTHS}


def description(text: str) -> list[str]:
    """The lines between the usage line and the first panel, without the blank lines around them."""
    lines = text.splitlines()
    end = next(i for i, line in enumerate(lines) if line.startswith("╭"))
    body = lines[1:end]
    while body and not body[0].strip():
        body.pop(0)
    while body and not body[-1].strip():
        body.pop()
    return body


def panels(text: str) -> list[tuple[str, list[str]]]:
    """(title, content lines without the borders) of each panel; one panel a row (the widths tested here)."""
    out: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("╭"):
            out.append((line.strip("╭─╮ "), []))
        elif line.startswith("│"):
            assert line.endswith("│") and line.count("│") == 2, f"not one panel a row: {line!r}"
            out[-1][1].append(line[2:-2])
    return out


def text_columns(line: str) -> set[int]:
    """The columns where the wrapped text of this line continues on the next line: its indentation (unless the line
    starts an option or a subcommand entry) and the start of a help column after a run of spaces."""
    stripped = line.lstrip()
    indent = len(line) - len(stripped)
    columns = {m.end() for m in re.finditer(r"(?<=\S)  +(?=\S)", line)}
    if not (indent == 0 and stripped.startswith("-")) and not stripped.startswith("•"):
        columns.add(indent)
    return columns


def first_piece(line: str) -> str:
    """What tyro tries to put on the previous line first: the first word, or its part up to a comma inside it."""
    word = line.split()[0]
    comma = word.find(",")
    return word[: comma + 1] if 0 <= comma < len(word) - 1 else word


def ragged_breaks(content: list[str]) -> list[str]:
    """Lines of a panel's paragraph followed by a continuation line whose first word would have fitted on them."""
    found = []
    for line, following in zip(content, content[1:]):
        if not line.strip() or not following.strip() or set(line.strip()) == {"─"}:
            continue
        indent = len(following) - len(following.lstrip())
        if (indent == 0 and following.startswith("-")) or following.lstrip().startswith("•"):
            continue  # the next option or subcommand
        if following.lstrip().startswith("(source subcommand: "):
            continue  # tyro's own line under a prior:NAME / psi:NAME group's description, not a continuation
        if indent not in text_columns(line):
            continue  # not the same paragraph: an option's help under its flags
        room = len(line) - len(line.rstrip())
        if len(first_piece(following)) + 1 <= room:
            found.append(f"{line.rstrip()}⏎{following.strip()}")
    return found


def describe(command: str) -> str:
    return f"esd-gs {command} --help".replace("  ", " ")


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("command", COMMANDS)
def test_no_ragged_breaks_in_panels(helps, command, width):
    text = helps[command, width]
    found = [f"[{title}] {b}" for title, content in panels(text) for b in ragged_breaks(content)]
    assert not found, f"{describe(command)} at {width} columns:\n" + "\n".join(found)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("command", COMMANDS)
def test_description_is_short_lines_and_examples(helps, command, width):
    lines = description(helps[command, width])
    examples = [line for line in lines if EXAMPLE.match(line)]
    prose = [line for line in lines if line.strip() and not EXAMPLE.match(line)]
    where = f"{describe(command)} at {width} columns"
    assert 2 <= len(examples) <= 3, f"{where}: {len(examples)} example lines"
    assert 2 <= len(prose) <= 4, f"{where}: {len(prose)} lines of prose"  # two or three, and "For example:"
    too_long = [line for line in lines if len(line) > 80]  # tyro prints the description unwrapped
    assert not too_long, f"{where}: description lines over 80 columns: {too_long}"
    for line, following in zip(lines, lines[1:]):
        if line.strip() and following.strip() and not EXAMPLE.match(following):
            assert line.endswith((".", ":")), f"{where}: a description line broken mid-sentence: {line!r}"


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("command", COMMANDS)
def test_no_backticks_or_bad_metavars(helps, command, width):
    text = helps[command, width]
    assert "``" not in text, f"{describe(command)}: reST double backticks"
    assert "{None}|" not in text, f"{describe(command)}: a {{None}}|TYPE metavar"
    assert "{None," not in text, f"{describe(command)}: None among the choices of a metavar"
    assert "[STR]" not in text, f"{describe(command)}: a [STR] positional"


@pytest.mark.parametrize("width", WIDTHS)
def test_prompt_is_named(helps, width):
    text = helps["generate", width]
    usage = text.splitlines()[0]
    assert usage.endswith("[PROMPT] [INIT] [PRIOR] [PSI]"), usage  # then the init:NAME, prior:NAME and psi:NAME choices
    positionals = dict(panels(text))["positional arguments"]
    assert positionals[0].split()[0] == "[PROMPT]", positionals
    assert not re.search(r"(^|\s)\[?STR\]?(\s|$)", "\n".join(positionals))


def test_columns_reach_tyro(helps):
    """COLUMNS really sets the width: generate's panels span the whole terminal at each width."""
    for width in WIDTHS:
        assert {len(line) for line in helps["generate", width].splitlines() if line.startswith("╭")} == {width}


def test_checker_finds_a_ragged_break():
    option = [
        "--prior {sd,synthetic}              ",
        "      The 2D prior: sd or           ",
        "      synthetic. (default: sd)      ",
    ]
    assert ragged_breaks(option) == ["      The 2D prior: sd or⏎synthetic. (default: sd)"]
    assert ragged_breaks(["      The 2D prior: sd or a  ", "      synthetic. (default: sd)"]) == []
    assert ragged_breaks(["  • view    Serve a 3D view in      ", "            the browser.            "]) != []
    assert ragged_breaks(["A frozen Stable Diffusion.          ", "(source subcommand: prior:sd)       "]) == []
    assert ragged_breaks(["--out PATH                          ", "      Run directory. (default: runs)"]) == []


def _field_helps(cls: type, seen: set[type]) -> typing.Iterator[tuple[str, str]]:
    """(name, docstring) of every field of ``cls`` and of the configs nested in it (their default factories)."""
    if cls in seen:
        return
    seen.add(cls)
    docs = {param.arg_name: param.description for param in docstring_parser.parse_from_object(cls).params}
    for field in dataclasses.fields(cls):
        if docs.get(field.name):
            yield f"{cls.__name__}.{field.name}", docs[field.name]
        if dataclasses.is_dataclass(field.default_factory):
            yield from _field_helps(field.default_factory, seen)


def test_field_helps_are_one_line():
    """The cause of ragged breaks: tyro keeps the line breaks of a field docstring whose continuation lines are
    indented (it joins the lines before it dedents them), so an option's help is one source line."""
    seen: set[type] = set()
    multi = [name for command in SUBCOMMANDS for name, doc in _field_helps(command, seen) if "\n" in doc]
    assert len(seen) > len(SUBCOMMANDS), "nested configs not found"
    assert not multi, "multi-line field docstrings: " + ", ".join(multi)
