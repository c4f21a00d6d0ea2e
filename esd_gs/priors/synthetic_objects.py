"""The synthetic prior's built-in objects, by name, and the one a prompt names.

The objects: the head (``example.builtin_head``, ``assets/head.ply``) and the procedural car, house, mug, chair,
penguin, cat, bus and radio (``reference_objects``, ``assets/references/<name>.ply``). A prompt names an object when
one of its words is the object's name or that name with a plural "s" ("es" after an "s"), in any case: "a red car"
-> car, "A bald Head" -> head, "two mugs" -> mug, "two buses" -> bus. Words are runs of letters, so "carpet" and
"headphones" name nothing. Only the name is read: the rest of the prompt ("red", "bald") does not change the object,
which has one look. A prompt that names none of them, or names two different ones ("a penguin on a chair"), is
refused in one line: the prior shows one object per prompt."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import UserError
from ..scene import GaussianScene

DEVELOPMENT: tuple[str, ...] = ("head", "car", "house", "mug", "chair", "penguin")
"""The development objects: the Janus benchmark's settings (psi's loss, updates per step, the schedule) were chosen
on these (research/README.md, "The rules")."""
HELD_OUT: tuple[str, ...] = ("cat", "bus", "radio")
"""The held-out objects: built before any run on them; their results are only ever reported, never tuned on. Any
setting chosen after looking at one of their results makes that object a development object."""
OBJECTS: tuple[str, ...] = DEVELOPMENT + HELD_OUT
"""The built-in objects' names, as a prompt names them."""

Source = Path | str
"""Where a reference object comes from: a 3DGS .ply file (``Path``), or a built-in object's name (``str``)."""


def object_named(prompt: str) -> str:
    """The built-in object ``prompt`` names (module docstring), or one ``UserError`` listing the names."""
    words = set(re.findall(r"[a-z]+", prompt.lower()))
    named = [name for name in OBJECTS if words & {name, f"{name}es" if name.endswith("s") else f"{name}s"}]
    if len(named) == 1:
        return named[0]
    if named:
        problem = f"'{prompt}' names {' and '.join(named)}, and the synthetic prior shows one object"
    else:
        problem = f"the synthetic prior shows the object its prompt names, and '{prompt}' names none"
    names = ", ".join(OBJECTS)
    raise UserError(f'{problem}: name one of {names} ("a red car"), or pass a 3DGS .ply: --prior.reference PATH')


def load_object(source: Source) -> GaussianScene:
    """A reference object's scene: the .ply file, or the built-in object of that name (its shipped .ply in a source
    checkout, else built by its procedure, as ``example.builtin_head`` does)."""
    from ..io import read_ply

    if isinstance(source, Path):
        return read_ply(source)
    if source == "head":
        from ..example import builtin_head

        return builtin_head()
    from ..reference_objects import REFERENCE_OBJECTS, reference_path

    path = reference_path(source)
    return read_ply(path) if path.is_file() else REFERENCE_OBJECTS[source]()


def twin_of(scene: GaussianScene, source: Source) -> GaussianScene:
    """The two-faced twin (``reference_objects.two_faced``: its front mirrored onto its back) of the reference object
    ``scene`` loaded from ``source`` (``load_object``'s), mirrored where a built-in object's front meets its back
    (``reference_objects.TWIN_PLANES``; its shipped file too, however its path is written), at x = 0 for any other
    file: its front must face +X."""
    from ..reference_objects import TWIN_PLANES, reference_path, two_faced

    if isinstance(source, str):
        name = source
    else:  # a shipped file, however the path was written (relative to the working folder, or with a link)
        name = next((n for n in OBJECTS if n != "head" and reference_path(n).resolve() == source.resolve()), "")
    return two_faced(scene, TWIN_PLANES.get(name, 0.0))
