"""How ``esd-gs --help`` reads: the top-level description, the summaries in its list of subcommands, and the
metavar of an option that may be None.

tyro builds the help from the docstrings, and treats their line breaks so:

- A class docstring (a subcommand's description, the text atop an options panel) has its single line breaks joined,
  except before a line that starts with something other than a letter: an indented example command keeps its own
  line. A blank line stays a paragraph break. A section title such as "Examples:" is dropped with its section (the
  docstring parser takes it for one), hence "For example:".
- The description of the command whose help is shown is printed as written, not wrapped to the terminal: each of
  its lines is a paragraph of its own, short enough for 80 columns.
- A field docstring keeps every line break of its source (its continuation lines start with indentation, which
  tyro removes only after joining lines): an option's help is one source line, and a comment above the field can
  say more to the reader of the code.

So a subcommand's docstring is a short first line (its summary in ``esd-gs --help``), a line or two more, then
"For example:" and two or three indented commands. tests/test_help.py checks the help at 80, 100 and 120 columns.
"""

from __future__ import annotations

import inspect
import types
import typing

import tyro
from tyro.constructors import (
    ConstructorRegistry,
    PrimitiveConstructorSpec,
    PrimitiveTypeInfo,
    UnsupportedTypeAnnotationError,
)

DESCRIPTION = """Text to 3D Gaussians with Entropic Score Distillation (ESD), as 3DGS .ply files.

Start with doctor, which checks this machine, then generate a scene.

For example:
  esd-gs doctor
  esd-gs generate "a plush dragon toy"
  esd-gs view runs/a-plush-dragon-toy-esd"""

PATHS = tyro.conf.arg(metavar="PATH [PATH ...]", help_behavior_hint="(required)")
"""A positional list of paths the command needs one of at least (it refuses none): shown as ``PATH [PATH ...]
(required)``, not as tyro's ``[[PATH [PATH ...]]] (default: )``."""


def summary(command: type) -> str:
    """The first paragraph (a line) of a subcommand's docstring: what ``esd-gs --help`` lists it with."""
    return inspect.cleandoc(command.__doc__ or "").split("\n\n")[0]


def optional_metavars() -> ConstructorRegistry:
    """An option of type ``X | None`` shows X's metavar (``--out PATH``) instead of tyro's ``{None}|PATH``. It still
    accepts the word None, and its help says what None means; only the name shown changes."""
    registry = ConstructorRegistry()

    @registry.primitive_rule
    def optional(info: PrimitiveTypeInfo) -> PrimitiveConstructorSpec | None:
        if info.type_origin not in (typing.Union, types.UnionType):
            return None
        members = typing.get_args(info.type)
        values = [t for t in members if t is not type(None)]
        if len(members) != 2 or len(values) != 1:
            return None
        inner = ConstructorRegistry.get_primitive_spec(PrimitiveTypeInfo.make(values[0], info.markers))
        if isinstance(inner, UnsupportedTypeAnnotationError) or inner.nargs != 1:
            return None  # sequences keep tyro's own metavar
        return PrimitiveConstructorSpec(
            nargs=1,
            metavar=inner.metavar,  # {sd,synthetic} rather than {None,sd,synthetic}: the help says what None means
            choices=None if inner.choices is None else (*inner.choices, "None"),
            instance_from_str=lambda args: None if args == ["None"] else inner.instance_from_str(args),
            is_instance=lambda value: value is None or inner.is_instance(value),
            str_from_instance=lambda value: ["None"] if value is None else inner.str_from_instance(value),
        )

    return registry


def subcommand(name: str, command: type, chosen: str | None, **kwargs) -> typing.Any:
    """``command`` as the subcommand ``name``: described by its whole docstring when it is the one chosen on the
    command line (its own --help), by its summary otherwise (the list in ``esd-gs --help``)."""
    description = None if chosen == name else summary(command)
    return typing.Annotated[command, tyro.conf.subcommand(name, description=description, **kwargs)]
