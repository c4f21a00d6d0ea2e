"""The real ``esd-gs`` command in a subprocess: render, export, --help and one-line errors."""

import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import plyfile
import pytest
import torch

from esd_gs.example import make_head_scene
from esd_gs.io import read_ply, write_ply
from esd_gs.io.splat import read_splat

ROOT = Path(__file__).resolve().parents[1]
HEAD = ROOT / "assets" / "head.ply"


def esd_gs(*args, cwd=None):
    env = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="120")
    return subprocess.run(
        [sys.executable, "-m", "esd_gs", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def test_shipped_asset_is_the_procedural_head():
    stored = read_ply(HEAD)
    built = make_head_scene()
    for key, value in built.params.items():
        assert torch.allclose(stored.params[key], value.detach(), atol=1e-6), key


def test_help_lists_subcommands_and_explains_options():
    top = esd_gs("--help")
    assert top.returncode == 0
    assert "render" in top.stdout and "export" in top.stdout
    render_help = esd_gs("render", "--help")
    assert render_help.returncode == 0
    for flag in ("--out", "--views", "--size", "--elevation", "--formats", "--up", "--device"):
        assert flag in render_help.stdout
    assert "Number of turntable views" in render_help.stdout


def test_render_writes_video_gif_and_contact_sheet(tmp_path):
    out = tmp_path / "turn"
    result = esd_gs("render", HEAD, "--out", out, "--views", 6, "--size", 48, "--sheet-views", 4)
    assert result.returncode == 0, result.stderr
    frames = np.stack([frame for frame in iio.imiter(out / "turntable.mp4")])
    assert frames.shape == (6, 48, 48, 3)
    assert iio.imread(out / "turntable.gif", index=None).shape[1:3] == (48, 48)
    sheet = iio.imread(out / "contact_sheet.png")
    assert sheet.ndim == 3 and sheet.shape[1] > 4 * 48
    # The first frame is the front of the head: not the white background in the middle.
    assert frames[0, 20:28, 20:28].mean() < 230


def test_export_to_splat_and_padded_ply(tmp_path):
    splat = tmp_path / "head.splat"
    assert esd_gs("export", HEAD, "--to", splat).returncode == 0
    n = read_ply(HEAD).num_gaussians
    assert splat.stat().st_size == 32 * n
    assert len(read_splat(splat)["positions"]) == n

    padded = tmp_path / "head_sh3.ply"
    result = esd_gs("export", HEAD, "--to", padded, "--sh-degree", 3)
    assert result.returncode == 0, result.stderr
    vertex = plyfile.PlyData.read(str(padded))["vertex"]
    names = [p.name for p in vertex.properties]
    assert sum(name.startswith("f_rest_") for name in names) == 45
    assert np.count_nonzero(np.stack([vertex[f"f_rest_{i}"] for i in range(45)])) == 0
    original = plyfile.PlyData.read(str(HEAD))["vertex"]
    assert np.array_equal(vertex["x"], original["x"]) and np.array_equal(vertex["opacity"], original["opacity"])

    zup = tmp_path / "head_z.ply"
    assert esd_gs("export", HEAD, "--to", zup, "--up", "z").returncode == 0
    z_vertex = plyfile.PlyData.read(str(zup))["vertex"]
    # -Y-up file -> +Z-up file: file z equals minus the original file y.
    assert np.allclose(z_vertex["z"], -original["y"])


@pytest.mark.parametrize(
    "args, expected",
    [
        (["render", "missing.ply"], "missing.ply"),
        (["render", "{head}", "--views", "0"], "--views"),
        (
            ["render", "{head}", "--device", "cuda"]
            if not torch.cuda.is_available()
            else ["render", "{head}", "--size", "2"],
            "--",
        ),
        (["export", "{head}", "--to", "out.stl"], ".glb or .obj"),
        (["export", "{bad}", "--to", "out.splat"], "bad.ply"),
        (["export", "{head}", "--to", "{head}"], "already exists"),
    ],
)
def test_bad_input_gives_one_clear_line_and_exit_code_2(tmp_path, args, expected):
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 1000000\nproperty float x\nend_header\n\0\0")
    args = [a.format(head=HEAD, bad=bad) for a in args]
    result = esd_gs(*args, cwd=tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("esd-gs: error:") and expected in lines[0]
    assert "Traceback" not in result.stderr


def test_export_never_overwrites_without_permission(tmp_path):
    target = tmp_path / "keep.ply"
    write_ply(make_head_scene(200), target)
    before = target.read_bytes()
    result = esd_gs("export", HEAD, "--to", target)
    assert result.returncode == 2 and target.read_bytes() == before
    assert esd_gs("export", HEAD, "--to", target, "--overwrite").returncode == 0
    assert target.read_bytes() != before
