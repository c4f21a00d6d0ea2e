"""Every bad input is refused before any work starts, in one line with exit code 2 (in-process ``main``, so the
many cases stay fast; tests/test_generate.py runs the same through real subprocesses)."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from esd_gs.cli.main import main
from esd_gs.training.checkpoint import checkpoint_tensor_file

SYNTHETIC = [
    "--preset",
    "synthetic",
    "--prior.num-images",
    "8",
    "--output.turntable-views",
    "2",
    "--output.turntable-size",
    "32",
    "--output.preview-every",
    "0",
]


def refused(argv, capsys, expected):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("esd-gs: error: ") and expected in lines[0], err
    assert "Error parsing" not in lines[0] and "tyro" not in lines[0], err  # the check's own words, not the parser's
    return lines[0]


@pytest.mark.parametrize(
    "flags,expected",
    [
        (["--output.turntable-views", "0"], "--output.turntable-views must be at least 1"),
        (["--output.turntable-size", "4"], "--output.turntable-size in 8..4096"),
        (["--resolution", "100000"], "--resolution 100000 is above 2048 px"),
        (["--device", "meta"], "--device meta is not supported"),
        (["--device", "mps"], "--device mps is not supported"),
        (["--seed", str(2**70)], "--seed must be in [0, 2**62)"),
        (["--seed", "-1"], "--seed must be in [0, 2**62)"),
        (["--optim.means", "0"], "--optim.means must be a positive learning rate"),
        (["--optim.scales", "-1e-3"], "--optim.scales must be a positive learning rate"),
        (["psi:lora", "--psi.lora-rank", "0"], "--psi.lora-rank must be >= 1"),
        (["psi:residual", "--psi.lr", "0"], "--psi.lr must be > 0"),
        (["psi:residual", "--psi.timestep-window", "-5"], "--psi.timestep-window must be >= 0"),
        (["psi:particle", "--psi.bank-size", "0"], "--psi.bank-size and --psi.bank-refresh-every must be at least 1"),
        (["psi:lora"], "prior:synthetic works with psi:residual or psi:particle, not psi:lora"),
        (["--guidance-scale", "nan"], "--guidance-scale must be a finite number"),
        (["--cameras.fovy", "0", "0"], "--cameras.fovy must be a range"),
        (["--cameras.radius", "3", "2"], "--cameras.radius must be a range"),
        (["--output.checkpoint-every", "2"], "--output.checkpoint-every must be a fraction"),
        (["--densify.grow-ratio", "-1"], "--densify.grow-ratio must be > 0"),
        (["--max-bad-steps", "0"], "--max-bad-steps must be at least 1"),
        (["--init.opacity", "1.5"], "--init.opacity in (0, 1)"),
        (["--init.color", "nan"], "--init.color in [0, 1]"),
        (["--init.num-points", "100000000"], "is above --densify.max-gaussians"),
        (
            ["--densify.max-gaussians", "100000000", "--init.num-points", "10"],
            "--densify.max-gaussians must be at most",
        ),
        (["--batch-size", "100000"], "--batch-size must be at most 64"),
        (["--output.turntable-views", "100000000"], "--output.turntable-views must be at most 3600"),
    ],
)
def test_bad_generate_numbers(flags, expected, capsys, tmp_path):
    refused(["generate", "a head", *SYNTHETIC, "--out", tmp_path / "run", *flags], capsys, expected)
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.parametrize(
    "text,expected",
    [
        ("prior: nope\n", "prior.name: 'nope' is not one of 'sd', 'synthetic', 'synthetic-unet'"),
        ("prior:\n  name: nope\n", "prior.name: 'nope' is not one of 'sd', 'synthetic', 'synthetic-unet'"),
        ("prior:\n  name: sd\n  p_front: 0.5\n", "prior: unknown setting(s) p_front"),
        ("psi:\n  name: particle\n  lr: 0.1\n", "psi: unknown setting(s) lr"),
        ("output:\n  up: sideways\n", "output.up: 'sideways' is not one of '-y', 'y', 'z'"),
        ("steps: ten\n", "steps: expected a whole number, got 'ten'"),
        ("steps: 1.5\n", "steps: expected a whole number, got 1.5"),
        ("psi:\n  shared_unet: maybe\n", "psi.shared_unet: expected true or false"),
        ("cameras:\n  fovy: 50\n", "cameras.fovy: expected a list"),
        ("- 1\n- 2\n", "expected a mapping, got list"),
        ("optim: 3\n", "optim: expected a mapping, got int"),
        ("nonsense: 1\n", "unknown setting(s) nonsense"),
    ],
)
def test_bad_yaml_presets(text, expected, capsys, tmp_path):
    preset = tmp_path / "preset.yaml"
    preset.write_text(text)
    refused(["generate", "a head", "--config", preset, "--out", tmp_path / "run"], capsys, expected)


def test_yaml_numbers_without_a_dot_are_numbers(tmp_path):
    from esd_gs.configs.yaml_io import load_yaml_config

    preset = tmp_path / "preset.yaml"
    preset.write_text("psi:\n  lr: 1e-3\noptim:\n  means: 2e-4\n")  # PyYAML reads these as text
    config = load_yaml_config(preset)
    assert (config.psi.lr, config.optim.means) == (1e-3, 2e-4)


def test_a_preset_that_is_not_utf8(capsys, tmp_path):
    preset = tmp_path / "preset.yaml"
    preset.write_bytes(b"prompt: caf\xe9\n")
    refused(["generate", "a head", "--config", preset], capsys, "is not UTF-8 text")


@pytest.mark.parametrize(
    "flags,expected",
    [
        (["--sheet-views", "0"], "--sheet-views must be at least 1"),
        (["--fovy", "0"], "--fovy must be between 0 and 180"),
        (["--radius", "0"], "--radius must be a positive distance"),
        (["--elevation", "120"], "--elevation must be in [-90, 90]"),
        (["--views", "100000000"], "--views must be in 1..3600"),
    ],
)
def test_bad_render_options(flags, expected, capsys, tmp_path):
    refused(["render", "assets/head.ply", "--out", tmp_path / "out", *flags], capsys, expected)


def test_render_and_bench_do_not_reuse_an_output_directory(capsys, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "contact_sheet.png").write_bytes(b"earlier")
    refused(
        ["render", "assets/head.ply", "--out", out, "--views", "2", "--size", "16"],
        capsys,
        "already holds contact_sheet.png: pass --overwrite",
    )
    assert (out / "contact_sheet.png").read_bytes() == b"earlier"
    assert (
        main(
            [
                "render",
                "assets/head.ply",
                "--out",
                str(out),
                "--views",
                "2",
                "--size",
                "16",
                "--formats",
                "gif",
                "--overwrite",
            ]
        )
        == 0
    )
    capsys.readouterr()
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "results.json").write_text("{}")
    refused(["bench", "janus", "--out", tmp_path / "bench", "--seeds", "1"], capsys, "already holds a benchmark")


@pytest.mark.parametrize(
    "flags,expected",
    [
        (["--steps", "0"], "--steps must be at least 1"),
        (["--methods", ""], "--methods is empty"),
        (["--methods", ",,"], "--methods is empty"),
        (["--methods", "esd", "--estimators", ""], "ESD needs at least one --estimators value"),
        (["--methods", "esd", "--lambdas", ""], "ESD needs at least one --estimators value and one --lambdas value"),
        (["--psi-lr", "0"], "--psi-lr must be a number > 0, got 0"),
        (["--psi-lr", "nan"], "--psi-lr must be a number > 0, got nan"),
        (["--psi-steps", "0"], "--psi-steps must be at least 1, got 0"),
        (["--psi-t-window", "-1"], "--psi-t-window must be at least 0, got -1"),
        (["--psi-steps-until", "0"], "--psi-steps-until must be in (0, 1], got 0"),
        (["--psi-steps", "1", "--psi-steps-until", "0.5"], "limits the extra updates of --psi-steps, which is 1"),
        (
            ["--prior", "synthetic-unet", "--psi-steps-until", "0.5"],
            "--psi-steps, which is 1 with --prior synthetic-unet",
        ),
        (["--unet-steps", "0"], "--unet-steps must be at least 1, got 0"),
        (["--unet-steps", "9"], "--unet-steps sets the fit of --prior synthetic-unet, and the prior is the exact one"),
    ],
)
def test_bad_bench_options(capsys, tmp_path, flags, expected):
    refused(["bench", "janus", *flags, "--out", tmp_path / "bench"], capsys, expected)
    assert not (tmp_path / "bench").exists()


def test_export_refuses_a_scene_that_overflows_when_rotated(capsys, tmp_path):
    from esd_gs.initial import BallInit
    from esd_gs.io import write_ply

    scene = BallInit(num_points=4).scene(generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        scene.params["quats"][0] = torch.tensor([3.0e38, 3.0e38, 0.0, 0.0])
    write_ply(scene, tmp_path / "big.ply", up="z")
    for target in ("out.ply", "out.splat"):
        refused(
            ["export", tmp_path / "big.ply", "--to", tmp_path / target, "--input-up", "z", "--up", "-y"],
            capsys,
            "values too large to rotate to up axis -y",
        )
        assert not (tmp_path / target).exists()


# ---------------------------------------------------------------------------------------------- corrupt runs
@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory):
    """A real synthetic run with a checkpoint, marked interrupted so that --resume accepts it."""
    run = tmp_path_factory.mktemp("runs") / "run"
    assert (
        main(["generate", "a head", *SYNTHETIC, "--steps", "4", "--output.checkpoint-every", "0.5", "--out", str(run)])
        == 0
    )
    status = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**status, "status": "interrupted", "step": 2}))
    return run


def corrupt_copy(run, tmp_path, change):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    change(copy / "checkpoint")
    return copy


def set_meta(ckpt, meta):
    (ckpt / "meta.json").write_text(json.dumps(meta))


def patch_meta(ckpt, **changes):
    meta = json.loads((ckpt / "meta.json").read_text())
    set_meta(ckpt, {**meta, **changes})


def patch_lr(ckpt, value):
    meta = json.loads((ckpt / "meta.json").read_text())
    meta["optimizers"]["scales"]["groups"][0]["lr"] = value
    set_meta(ckpt, meta)


def edit_tensors(ckpt, edit):
    path = checkpoint_tensor_file(ckpt)
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))


@pytest.mark.parametrize(
    "change,expected",
    [
        (lambda c: set_meta(c, {}), "no complete checkpoint"),
        (
            lambda c: set_meta(c, {"tensors": json.loads((c / "meta.json").read_text())["tensors"]}),
            "does not fit this run",
        ),
        (lambda c: set_meta(c, [1]), "no complete checkpoint"),
        (lambda c: edit_tensors(c, lambda t: t.pop("scene.means")), "does not fit this run"),
        (lambda c: edit_tensors(c, lambda t: t.update({"scene.means": torch.zeros(3, 2)})), "does not fit this run"),
        (lambda c: edit_tensors(c, lambda t: t.pop("rng.camera")), "does not fit this run"),
        (lambda c: checkpoint_tensor_file(c).write_bytes(b"not safetensors"), "is unreadable"),
        (lambda c: patch_meta(c, step="abc"), "step = 'abc' is not a count"),
        (lambda c: patch_meta(c, step=-5), "step = -5 is not a count"),
        (lambda c: patch_meta(c, step=10**6), "step = 1000000 is not a count in 0..4"),
        (lambda c: patch_meta(c, skipped=True), "skipped = True is not a count"),
        (lambda c: patch_lr(c, "x"), "has a non-numeric setting"),
        (lambda c: patch_lr(c, -1.0), "negative learning rate"),
        (lambda c: edit_tensors(c, lambda t: t.update({"scene.means": t["scene.means"].double()})), "not float32"),
    ],
    ids=[
        "empty-meta",
        "meta-without-fields",
        "meta-is-a-list",
        "missing-tensor",
        "mis-shaped-tensor",
        "missing-rng",
        "garbage-tensors",
        "step-text",
        "step-negative",
        "step-beyond",
        "skipped-bool",
        "lr-text",
        "lr-negative",
        "float64-means",
    ],
)
def test_corrupt_checkpoints_are_refused_in_one_line(interrupted_run, tmp_path, capsys, change, expected):
    copy = corrupt_copy(interrupted_run, tmp_path, change)
    refused(["generate", "--resume", copy], capsys, expected)


def test_a_run_json_that_is_not_a_mapping(interrupted_run, tmp_path, capsys):
    copy = corrupt_copy(interrupted_run, tmp_path, lambda c: None)
    (copy / "run.json").write_text("[1]")
    refused(["generate", "a head", "--out", copy], capsys, "holds an unfinished run")
