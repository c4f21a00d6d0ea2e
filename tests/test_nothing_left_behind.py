"""A command that fails leaves no folder it created behind (issue 30), and never removes one that was there: one test
per command that can fail after choosing its output folder (in-process ``main``, so each stays fast), generate's
(a model that does not load) included. batch's uses the same helper around its scheduling, after Ray has stopped."""

import shutil
from pathlib import Path

import pytest

from esd_gs.cli.main import main
from esd_gs.environment import output_folder

SAVED_RUN = Path(__file__).parent / "data" / "janus-runs" / "esd"


def failed(argv, capsys) -> str:
    """Run ``esd-gs *argv`` in process; it must fail in one line (exit code 2); returns that line."""
    code = main([str(a) for a in argv])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and lines and lines[-1].startswith("esd-gs: error: "), lines
    return lines[-1]


@pytest.fixture
def run(tmp_path) -> Path:
    """A copy of a saved run of the synthetic prior (scene.ply, config.yaml)."""
    return Path(shutil.copytree(SAVED_RUN, tmp_path / "run"))


def test_the_folder_is_removed_only_while_empty_and_only_if_new(tmp_path):
    with pytest.raises(RuntimeError), output_folder(tmp_path / "a" / "b"):
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []  # both new folders gone
    (tmp_path / "kept").mkdir()
    with pytest.raises(KeyboardInterrupt), output_folder(tmp_path / "kept" / "new"):
        (tmp_path / "kept" / "new" / "finished.txt").write_text("work")
        raise KeyboardInterrupt
    assert (tmp_path / "kept" / "new" / "finished.txt").read_text() == "work"  # finished work stays
    with pytest.raises(RuntimeError), output_folder(tmp_path / "kept"):
        raise RuntimeError
    assert (tmp_path / "kept").is_dir()  # it was there before


def test_a_path_through_dot_dot_never_removes_a_folder_that_was_there(tmp_path, monkeypatch):
    """``new/../out``: ``new/..`` is the working folder, which existed; with only empty folders in it, a removal by
    path would have taken them all."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep_a").mkdir()
    (tmp_path / "keep_b" / "inner").mkdir(parents=True)
    with pytest.raises(RuntimeError), output_folder(Path("new") / ".." / "out"):
        raise RuntimeError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep_a", "keep_b", "new"]
    assert (tmp_path / "keep_b" / "inner").is_dir()


def test_evaluate_without_its_model_leaves_no_folder_and_names_the_offline_option(run, tmp_path, capsys):
    out = tmp_path / "evals" / "here"
    line = failed(["evaluate", run, "--out", out, "--clip-model", tmp_path / "no-clip"], capsys)
    assert "could not load the CLIP model" in line and "--metrics janus --sides reference" in line
    assert not (tmp_path / "evals").exists()
    # a bare .ply has no known answer: the line does not offer it
    line = failed(["evaluate", run / "scene.ply", "--prompt", "a head", "--clip-model", tmp_path / "no-clip"], capsys)
    assert "could not load the CLIP model" in line and "--sides reference" not in line
    assert not (tmp_path / "run" / "scene-eval").exists()


def test_the_offline_option_works_without_any_model(run, tmp_path, capsys):
    out = tmp_path / "offline"
    no_models = ["--clip-model", tmp_path / "no-clip", "--classifier", tmp_path / "no-classifier"]
    argv = ["evaluate", run, "--out", out, "--metrics", "janus", "--sides", "reference", "--size", "32", *no_models]
    assert main([str(a) for a in argv]) == 0
    capsys.readouterr()
    assert (out / "eval.json").is_file() and (out / "eval.png").is_file()


def test_compare_without_its_model_leaves_no_folder(run, tmp_path, capsys):
    line = failed(["compare", run, "--out", tmp_path / "cmp", "--clip-model", tmp_path / "no-clip"], capsys)
    assert "could not load the CLIP model" in line and "--metrics janus --sides reference" in line
    assert not (tmp_path / "cmp").exists()


def test_render_interrupted_leaves_no_folder(tmp_path, capsys, monkeypatch):
    import esd_gs.cli.render_cmd as render_cmd

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(render_cmd, "render_views", interrupted)
    code = main(["render", "assets/head.ply", "--out", str(tmp_path / "new" / "out"), "--views", "2", "--size", "16"])
    assert code == 130 and "interrupted" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_bench_with_a_reference_that_does_not_read_leaves_no_folder(tmp_path, capsys):
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"ply\nformat nonsense\n")
    failed(["bench", "janus", "--reference", bad, "--seeds", "1", "--steps", "1", "--out", tmp_path / "bench"], capsys)
    assert not (tmp_path / "bench").exists()


def test_export_and_view_create_no_folder(tmp_path, capsys):
    failed(["export", "assets/head.ply", "--to", tmp_path / "new" / "head.splat"], capsys)
    failed(["view", tmp_path / "none.ply", "--seconds", "1"], capsys)
    assert list(tmp_path.iterdir()) == []


def test_generate_whose_model_does_not_load_leaves_no_folder(tmp_path, capsys):
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"ply\nformat nonsense\n")
    argv = ["generate", "a head", "--preset", "synthetic", "--prior.reference", bad, "--out", tmp_path / "runs" / "a"]
    failed(argv, capsys)
    assert not (tmp_path / "runs").exists()
