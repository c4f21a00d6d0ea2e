"""The package's import layers: every folder (and top-level module) of esd_gs imports only those below it in
``LAYERS``, so no two import each other, however indirectly, and no lower layer knows a higher one.

Every import counts: at module level, inside functions (lazy imports of heavy packages), and under
``typing.TYPE_CHECKING``. Run it alone with ``.venv/bin/python -m pytest -q tests/test_layers.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "esd_gs"

LAYERS = [
    # plumbing, no knowledge of 3D or of diffusion
    "errors",
    "files",
    "atomic",
    "environment",
    "progress",
    "sh",
    "optim_state",
    "video",
    # the scene theta, the cameras c, files of scenes, rendering g(theta, c), meshes, the browser view, and the table
    # of scene formats that writes them all
    "scene",
    "cameras",
    "io",
    "example",
    "reference_objects",
    "render",
    "mesh",
    "viewer",
    "formats",
    # diffusion maths, offline test models, then phi, psi and the update rule
    "diffusion",
    "testing",
    "priors",
    "estimators",
    "distillation",
    # theta's starting point (a ball, a file, or a 3D prior's object)
    "initial",
    # the loop, and what watches it from above (the psi diagnostic, the live view)
    "training",
    "monitors",
    # a run's whole configuration, evaluating runs, running them, and the commands
    "configs",
    "evaluation",
    "pipeline",
    "bench",
    "batch",
    "cli",
    "__main__",
]
"""From the bottom up: each name may import only the names before it (and itself)."""


def unit_of(module: str) -> str:
    """``esd_gs.priors.base`` -> ``priors``; ``esd_gs.scene`` -> ``scene``; ``esd_gs`` -> ``esd_gs``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, text: str | None = None) -> set[str]:
    """Every esd_gs module ``path`` (whose source is ``text``, default: the file's) imports, wherever the import
    statement is."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text() if text is None else text)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # ``from . import janus`` names a module: count it as the module itself
            targets = [f"{target}.{alias.name}" for alias in node.names] if not node.module else [target]
            found.update(t for t in targets if t.split(".")[0] == "esd_gs")
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "esd_gs")
    return found


def import_edges() -> list[tuple[str, str, str]]:
    """(importing unit, imported unit, importing file) for every import between two different units."""
    edges = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = unit_of(module_name(path))
        for target in imported_modules(path):
            unit = unit_of(target)
            if unit not in (source, "esd_gs"):
                edges.append((source, unit, str(path.relative_to(PACKAGE.parent))))
    return edges


def test_every_folder_and_module_has_a_layer():
    units = {unit_of(module_name(p)) for p in PACKAGE.rglob("*.py")} - {"esd_gs"}
    assert units - set(LAYERS) == set(), "place the new part in LAYERS"
    assert set(LAYERS) - units == set(), "a part LAYERS names no longer exists"


def test_no_import_goes_up_a_layer():
    rank = {name: index for index, name in enumerate(LAYERS)}
    upward = [
        f"{where}: {source} imports {target}" for source, target, where in import_edges() if rank[target] > rank[source]
    ]
    assert upward == []


def test_the_loop_knows_no_evaluation_and_no_viewer():
    """The issue's own words: training/ imports nothing from evaluation/ or viewer/ (they plug in as callbacks)."""
    assert [e for e in import_edges() if e[0] == "training" and e[1] in ("evaluation", "viewer", "monitors")] == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from ..configs.generate import GenerateConfig", {"esd_gs.configs.generate"}),
        ("from . import janus", {"esd_gs.evaluation.janus"}),
        ("import esd_gs.io", {"esd_gs.io"}),
    ],
)
def test_the_checker_sees_relative_absolute_and_lazy_imports(source, expected):
    """The checker itself: an import inside a function and under TYPE_CHECKING counts as much as one at the top."""
    text = f"from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    {source}\ndef f():\n    {source}\n"
    assert imported_modules(PACKAGE / "evaluation" / "probe.py", text) == expected
