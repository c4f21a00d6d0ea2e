"""esd-gs as pip installs it: a wheel built from this checkout, installed into a folder of its own, and run from a
folder without the repository's configs/ (the presets are values in the package, not files beside it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_presets_work_from_an_installed_wheel(tmp_path):
    source = tmp_path / "source"  # a copy: building writes build/ and egg-info beside the sources
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "esd_gs", source / "esd_gs", ignore=shutil.ignore_patterns("__pycache__"))
    run("-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "wheels"), str(source))
    (wheel,) = (tmp_path / "wheels").glob("esd_gs-*.whl")
    site = tmp_path / "site"
    run("-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel))
    elsewhere = tmp_path / "elsewhere"  # no configs/ folder here, and the checkout is not on the path
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site), HF_HUB_OFFLINE="1", COLUMNS="120")

    probe = (
        "import esd_gs, pathlib; from esd_gs.configs.presets import PRESETS; "
        "print(pathlib.Path(esd_gs.__file__).parent); print(' '.join(PRESETS)); "
        "print(PRESETS['synthetic-unet'].config.steps, PRESETS['synthetic-unet'].config.prior.name)"
    )
    where, names, synthetic_unet = run("-c", probe, cwd=elsewhere, env=env).stdout.splitlines()
    assert Path(where) == site / "esd_gs"  # the installed copy, not the checkout
    assert names.split() == ["esd", "vsd", "sds", "preview", "synthetic", "synthetic-unet"]
    assert synthetic_unet == "1200 synthetic-unet"

    helped = run("-m", "esd_gs", "generate", "--preset", "synthetic-unet", "--help", cwd=elsewhere, env=env).stdout
    assert "(default: 1200)" in helped and "(default: 32)" in helped  # the preset's steps and resolution
    assert "(default: prior:synthetic-unet)" in helped and "(default: psi:particle)" in helped

    small = ["--steps", "2", "--batch-size", "1", "--init.num-points", "32", "--prior.num-images", "4"]
    small += ["--output.turntable-views", "2", "--output.video-formats", "gif", "--out", "run"]
    run("-m", "esd_gs", "generate", "a head", "--preset", "synthetic", *small, cwd=elsewhere, env=env)
    saved = (elsewhere / "run" / "config.yaml").read_text()
    assert "preset: synthetic\n" in saved and "name: residual" in saved and "train_steps_per_iter: 4" in saved
    assert (elsewhere / "run" / "scene.ply").is_file()
