"""The table of scene formats (``esd_gs/formats.py``): every suffix in it round-trips through ``esd-gs export``, the
export command's refusals and --help are read from it, and a run's scene files are written by the same entries."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from esd_gs.cli.export_cmd import ExportArgs
from esd_gs.cli.main import main
from esd_gs.formats import FORMATS, WriteOptions, format_of, listed, suffixes
from esd_gs.initial import BallInit
from esd_gs.io import read_ply
from esd_gs.io.splat import read_splat
from esd_gs.mesh.extract import MeshConfig
from esd_gs.scene import GaussianScene
from esd_gs.training.outputs import OutputConfig, export_mesh, export_scene
from esd_gs.training.run_dir import RunDir

ROOT = Path(__file__).resolve().parents[1]
HEAD = ROOT / "assets" / "head.ply"
SMALL_MESH = ["--resolution", "32", "--faces", "2000"]


def exported(tmp_path: Path, suffix: str, capsys, *flags: str) -> tuple[Path, str]:
    """The file written and what export said, without whitespace (rich wraps long paths at its width)."""
    out = tmp_path / f"head{suffix}"
    code = main(["export", str(HEAD), "--to", str(out), *flags])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return out, "".join(captured.err.split())


def refusal(capsys, *args) -> str:
    assert main([str(a) for a in args]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("esd-gs: error: "), lines
    return lines[0].removeprefix("esd-gs: error: ")


def head_scene() -> GaussianScene:
    return read_ply(HEAD)


# ---------------------------------------------------------------------------------------------- the table
def test_every_suffix_in_the_table_round_trips_through_export(tmp_path, capsys):
    """Each format writes a file its readers (ours, trimesh, a browser page's text) take back, and says so."""
    head = head_scene()
    seen = set()
    for suffix, entry in FORMATS.items():
        out, said = exported(tmp_path, suffix, capsys, *(SMALL_MESH if entry.prepare else []))
        assert said.startswith(f"wrote{out}("), said
        if suffix == ".ply":
            back = read_ply(out)
            for key, value in head.params.items():
                assert torch.allclose(back.params[key], value, atol=1e-6), key
        elif suffix == ".splat":
            assert read_splat(out)["positions"].shape == (head.num_gaussians, 3)
        elif suffix == ".html":
            assert out.read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html")
        else:
            mesh = trimesh.load(out, force="mesh")
            assert 100 < len(mesh.faces) <= 2000 and np.isfinite(mesh.vertices).all()
        seen.add(suffix)
    assert seen == {".ply", ".splat", ".html", ".glb", ".obj"}  # a new format needs its round trip above


def test_suffix_is_case_insensitive_and_unknown_ones_are_listed_from_the_table(tmp_path, capsys):
    assert format_of(Path("a.PLY")) is FORMATS[".ply"] and format_of(Path("a.stl")) is None
    message = refusal(capsys, "export", HEAD, "--to", tmp_path / "out.stl")
    assert message == f"--to must end in {listed(FORMATS, 'or')}, got 'out.stl'"
    assert message == "--to must end in .ply, .splat, .html, .glb or .obj, got 'out.stl'"  # unchanged wording


def test_options_a_format_does_not_honour_are_refused_as_the_table_says(tmp_path, capsys):
    for suffix, entry in FORMATS.items():
        flags = SMALL_MESH if entry.prepare else []
        target = tmp_path / f"refused{suffix}"
        if not entry.up:
            message = refusal(capsys, "export", HEAD, "--to", target, "--up", "z", *flags)
            assert message == "--up applies to .ply and .splat files: .html is shown upright, meshes are glTF's +Y up"
        if not entry.sh_degree:
            message = refusal(capsys, "export", HEAD, "--to", target, "--sh-degree", "3", *flags)
            assert message == "--sh-degree applies to .ply output only (.splat and .html use one colour per Gaussian)"
        if not entry.texture:
            message = refusal(capsys, "export", HEAD, "--to", target, "--texture", "64", *flags)
            assert message == "--texture is written into the .glb itself: export to a .glb"
        assert not target.exists()
    assert (
        suffixes("up") == [".ply", ".splat"] and suffixes("sh_degree") == [".ply"] and suffixes("texture") == [".glb"]
    )


def test_honoured_options_reach_the_file(tmp_path, capsys):
    """--up on the formats that honour it and --sh-degree on .ply change what is written."""
    (tmp_path / "z").mkdir()
    for suffix in suffixes("up"):
        zup, _ = exported(tmp_path / "z", suffix, capsys, "--up", "z")
        minus_y, _ = exported(tmp_path, suffix, capsys)
        assert zup.read_bytes() != minus_y.read_bytes(), suffix
    for suffix in suffixes("sh_degree"):
        padded, _ = exported(tmp_path / "z", suffix, capsys, "--sh-degree", "3", "--overwrite")
        assert read_ply(padded).sh_degree == 3


def test_export_help_lists_every_format(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for suffix, entry in FORMATS.items():
        assert f"{suffix} ({entry.name})" in text


def test_mesh_defaults_are_those_of_export_and_of_the_mesh_config():
    """A run's scene.glb (``WriteOptions()``) is the mesh ``esd-gs export --to scene.glb`` writes by default."""
    options, mesh, args = WriteOptions(), MeshConfig(), {f.name: f.default for f in dataclasses.fields(ExportArgs)}
    for name in ("resolution", "faces", "level", "texture"):
        assert getattr(options, name) == getattr(mesh, name) == args[name], name
    assert options.up == args["up"] and options.sh_degree == args["sh_degree"]


# ---------------------------------------------------------------------------------------------- a run's outputs
def test_run_outputs_are_written_by_the_table_entries(tmp_path, monkeypatch):
    calls: list[tuple[str, Path, WriteOptions]] = []

    def spying(entry):
        def write(scene, path, options):
            calls.append((entry.suffix, path, options))
            return entry.write(scene, path, options)

        return dataclasses.replace(entry, write=write)

    for suffix in (".ply", ".splat", ".glb"):
        monkeypatch.setitem(FORMATS, suffix, spying(FORMATS[suffix]))
    files = RunDir(tmp_path / "run")
    files.path.mkdir()
    scene = BallInit(num_points=64).scene(generator=torch.Generator().manual_seed(0))
    export_scene(scene, files, OutputConfig(up="z"), "torch", final=False)
    assert calls == [
        (".ply", files.scene_ply, WriteOptions(up="z")),
        (".splat", files.scene_splat, WriteOptions(up="z")),
    ]
    assert read_ply(files.scene_ply, up="z").num_gaussians == 64 and files.scene_splat.stat().st_size == 64 * 32
    calls.clear()
    monkeypatch.setitem(FORMATS, ".glb", dataclasses.replace(FORMATS[".glb"], write=lambda s, p, o: calls.append(p)))
    export_mesh(scene, files)
    assert calls == [files.scene_glb]


# ---------------------------------------------------------------------------------------------- layering
def imported_packages(path: Path) -> set[str]:
    """The esd_gs sub-packages / modules a module of esd_gs/<package>/ imports (relative or absolute, anywhere in
    it, ``TYPE_CHECKING`` blocks included); its own package's modules left out."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 2:  # from ..x import y / from .. import x
            found |= {node.module.split(".")[0]} if node.module else {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("esd_gs."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("esd_gs.")}
    return found


def test_io_imports_nothing_above_it():
    """io/ is below mesh/, viewer/ and the table of formats: none of its modules imports them."""
    for path in sorted((ROOT / "esd_gs" / "io").glob("*.py")):
        above = imported_packages(path) & {"mesh", "viewer", "formats", "training", "cli"}
        assert not above, f"io/{path.name} imports {above}"


def test_the_table_imports_no_optional_writer_package_until_it_writes():
    code = "import sys, esd_gs.cli.export_cmd; print(sorted({'trimesh', 'viser', 'skimage'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr
