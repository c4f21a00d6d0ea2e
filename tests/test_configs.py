"""The configuration API: the named presets (values in code), their YAML round trip, esd-gs 0.1's layouts, YAML
files over a preset, and the command line's presets, prior:NAME / psi:NAME choices and refused old spellings."""

import os
import re
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from cli_process import run_cli

from esd_gs.cli.main import parse_args
from esd_gs.configs.generate import GenerateConfig
from esd_gs.configs.presets import PRESETS
from esd_gs.configs.yaml_io import config_from_dict, config_to_dict, dump_yaml_config, load_yaml_config
from esd_gs.distillation import TimestepSchedule
from esd_gs.errors import UserError
from esd_gs.estimators import LoRAPsiConfig, ParticlePsiConfig, ResidualPsiConfig
from esd_gs.priors import StableDiffusionConfig, SyntheticPriorConfig, SyntheticUNetConfig

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="100", OMP_NUM_THREADS="1")


# ---------------------------------------------------------------------------------------------- presets
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_round_trips_through_yaml_and_validates(name):
    config = PRESETS[name].config
    assert config.preset == name
    text = dump_yaml_config(config)
    assert config_from_dict(yaml.safe_load(text)) == config
    assert config_from_dict(config_to_dict(config)) == config
    replace(config, prompt="a head").validate()
    for option in PRESETS[name].psi_options:  # the preset with each of its other estimators, too
        with_psi = PRESETS[name].with_psi(option.name)
        assert with_psi.psi == option
        assert config_from_dict(yaml.safe_load(dump_yaml_config(with_psi))) == with_psi
        replace(with_psi, prompt="a head").validate()


def test_the_shipped_config_files_equal_their_presets():
    files = sorted((ROOT / "configs").glob("*.yaml"))
    assert {f.stem for f in files} == {"esd", "vsd", "sds", "preview"}
    for path in files:
        assert path.stem in PRESETS, path
        assert f"preset: {path.stem}" in path.read_text()
        assert load_yaml_config(path) == PRESETS[path.stem].config, path
        assert load_yaml_config(path, base=PRESETS[path.stem].config) == PRESETS[path.stem].config, path


def test_the_synthetic_presets_psi_and_schedule():
    """The exact prior's preset runs the learned psi's best setting (the residual psi at 1e-3 with x0 weighting and
    four updates a step, DreamTime's schedule; research/janus.md, Finding 19), and ``with_psi("particle")`` changes its
    psi and nothing else; the fitted UNet's keeps the particle psi and the uniform schedule, its LoRA at 1e-3 with the
    prediction loss (esd-gs 0.1's); Stable Diffusion's LoRA trains at 1e-4, one update a step."""
    synthetic = PRESETS["synthetic"].config
    assert synthetic.psi == ResidualPsiConfig(lr=1e-3, loss_weighting="x0", train_steps_per_iter=4)
    assert synthetic.timesteps == TimestepSchedule(name="dreamtime")
    assert PRESETS["synthetic"].with_psi("residual") == synthetic
    assert PRESETS["synthetic"].with_psi("particle") == replace(synthetic, psi=ParticlePsiConfig())
    unet = PRESETS["synthetic-unet"]
    assert unet.config.psi == ParticlePsiConfig() and unet.config.timesteps == TimestepSchedule(name="uniform")
    assert unet.with_psi("lora").psi == LoRAPsiConfig(lr=1e-3, loss_weighting="prediction", train_steps_per_iter=1)
    assert PRESETS["esd"].config.psi == LoRAPsiConfig() and LoRAPsiConfig().lr == 1e-4
    assert LoRAPsiConfig().train_steps_per_iter == 1 and PRESETS["esd"].config.timesteps.name == "uniform"
    assert PRESETS["esd"].with_psi("particle").psi == ParticlePsiConfig()
    assert isinstance(synthetic.prior, SyntheticPriorConfig)
    assert isinstance(unet.config.prior, SyntheticUNetConfig)
    assert PRESETS["esd"].config == replace(GenerateConfig(), preset="esd")


# ---------------------------------------------------------------------------------------------- esd-gs 0.1 layouts
def test_a_0_1_layout_of_the_synthetic_unet_loads_as_its_new_config():
    old = {
        "prior": "synthetic-unet",
        "model": "x",
        "synthetic": {"p_front": 0.8},
        "synthetic_unet": {"steps": 7},
        "psi": {"estimator": "learned", "lr": 0.003, "bank_size": 5},
    }
    config = config_from_dict(old)
    assert config.prior == SyntheticUNetConfig(images=SyntheticPriorConfig(p_front=0.8), steps=7)
    assert config.psi == LoRAPsiConfig(lr=0.003)
    # 0.1's bank size also sized the particle baseline of a learned psi's diagnostic; nothing else changed
    assert config.diagnose == replace(GenerateConfig().diagnose, baseline_bank=5)
    assert config == replace(GenerateConfig(), prior=config.prior, psi=config.psi, diagnose=config.diagnose)
    assert config_from_dict(config_to_dict(config)) == config  # and it saves in this version's layout
    assert (
        config_to_dict(config)["prior"]["name"] == "synthetic-unet" and config_to_dict(config)["psi"]["name"] == "lora"
    )


def test_a_0_1_layout_of_the_particle_psi_keeps_only_its_own_settings():
    config = config_from_dict({"prior": "synthetic", "psi": {"estimator": "particle", "bank_size": 5, "lr": 1}})
    assert config.psi == ParticlePsiConfig(bank_size=5)
    assert config.prior == SyntheticPriorConfig()


def test_other_0_1_layouts_load_as_their_new_configs():
    """Stable Diffusion's settings at the top go under prior:; a learned psi is the prior's learned estimator."""
    sd = config_from_dict(
        {
            "model": "sd1.5",
            "precision": "fp32",
            "encoder": "linear",
            "negative_prompt": "blurry",
            "view_dependent_prompt": False,
            "psi": {"estimator": "learned", "lora_rank": 2, "bank_size": 8},
        }
    )
    assert sd.prior == StableDiffusionConfig(
        model="sd1.5", precision="fp32", encoder="linear", negative_prompt="blurry", view_dependent_prompt=False
    )
    assert sd.psi == LoRAPsiConfig(lora_rank=2)
    synthetic = config_from_dict({"prior": "synthetic", "psi": {"estimator": "learned", "lr": 0.002}})
    assert synthetic.psi == ResidualPsiConfig(lr=0.002, loss_weighting="prediction")  # 0.1 meant prediction
    sections = config_from_dict({"synthetic": {"num_images": 8}})  # a 0.1 preset named its prior by its sections
    assert sections.prior == SyntheticPriorConfig(num_images=8)


# ---------------------------------------------------------------------------------------------- YAML over a preset
def test_a_file_over_a_preset_keeps_what_it_does_not_give(tmp_path):
    base = PRESETS["synthetic"].config
    path = tmp_path / "mine.yaml"
    path.write_text("steps: 300\nprior:\n  p_front: 0.9\n")
    config = load_yaml_config(path, base=base)
    assert config == replace(base, steps=300, prior=replace(base.prior, p_front=0.9))
    assert isinstance(config.prior, SyntheticPriorConfig) and config.prior.num_images == base.prior.num_images
    assert (config.resolution, config.background, config.psi) == (32, "white", base.psi)
    path.write_text("psi:\n  lr: 0.002\n")  # the base's estimator, one setting changed: the preset's others kept
    assert load_yaml_config(path, base=base).psi == replace(base.psi, lr=0.002) and base.psi.train_steps_per_iter == 4
    path.write_text("psi:\n  name: particle\n  bank_size: 4\n")  # another estimator: its defaults under the file's
    assert load_yaml_config(path, base=base).psi == ParticlePsiConfig(bank_size=4)
    path.write_text("prior:\n  name: sd\n")  # another prior: Stable Diffusion's defaults
    assert load_yaml_config(path, base=base).prior == StableDiffusionConfig()
    path.write_text("")
    assert load_yaml_config(path, base=base) == base


# ---------------------------------------------------------------------------------------------- the command line
def one_error_line(result, expected: str) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("esd-gs: error: ") and expected in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--prior", "synthetic"], "--preset synthetic"),
        (["--prior=synthetic-unet"], "--preset synthetic"),
        (["--model", "x"], "--prior.model"),
        (["--precision", "fp32"], "--prior.precision"),
        (["--encoder", "linear"], "--prior.encoder"),
        (["--negative-prompt", "blurry"], "--prior.negative-prompt"),
        (["--no-view-dependent-prompt"], "--prior.no-view-dependent-prompt"),
        (["--synthetic.num-images", "8"], "--prior.* (with --preset synthetic)"),
        (["--synthetic-unet.steps", "8"], "--preset synthetic-unet"),
        (["--psi.estimator", "particle"], "psi:particle"),
    ],
)
def test_old_spellings_are_one_line_naming_the_new_one(args, expected):
    line = one_error_line(run_cli("generate", "a head", *args, env=ENV), expected)
    assert f"{args[0].split('=')[0]} is no longer an option of esd-gs generate" in line


def test_an_unknown_preset_is_one_line_listing_the_presets():
    line = one_error_line(run_cli("generate", "a head", "--preset", "nope", env=ENV), "nope")
    assert all(name in line for name in PRESETS)


def help_text(*args) -> str:
    result = run_cli("generate", *args, "--help", env=ENV)
    assert result.returncode == 0, result.stderr
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.stdout).split())


def test_help_shows_the_preset_s_defaults():
    unet = help_text("--preset", "synthetic-unet")
    assert "--steps INT Number of optimisation steps. (default: 1200)" in unet
    assert "(default: prior:synthetic-unet)" in unet and "(default: psi:particle)" in unet
    assert "(default: synthetic-unet)" in unet
    plain = help_text()
    assert "--steps INT Number of optimisation steps. (default: 2500)" in plain
    assert "(default: prior:sd)" in plain and "(default: psi:lora)" in plain


def test_a_learned_psi_chosen_on_the_command_line_has_the_preset_s_defaults():
    config = parse_args(["generate", "a head", "--preset", "synthetic-unet", "psi:lora"])
    assert isinstance(config.psi, LoRAPsiConfig) and config.psi.lr == 1e-3
    assert config == replace(PRESETS["synthetic-unet"].with_psi("lora"), prompt="a head")
    tweaked = parse_args(
        ["generate", "a head", "--preset", "synthetic-unet", "--prior.steps", "5", "psi:lora", "--psi.lora-rank", "2"]
    )
    assert isinstance(tweaked.prior, SyntheticUNetConfig) and tweaked.prior.steps == 5
    assert (tweaked.psi.lora_rank, tweaked.psi.lr) == (2, 1e-3)
    assert tweaked.prior.images == PRESETS["synthetic-unet"].config.prior.images  # the rest: the preset's
    images = parse_args(["generate", "a head", "--preset", "synthetic-unet", "--prior.images.p-front", "0.9"])
    assert images.prior.images.p_front == 0.9 and isinstance(images.psi, ParticlePsiConfig)
    residual = parse_args(["generate", "a head", "--preset", "synthetic", "psi:residual"])
    assert residual.psi == ResidualPsiConfig(lr=1e-3, loss_weighting="x0", train_steps_per_iter=4)
    particle = parse_args(["generate", "a head", "--preset", "synthetic", "psi:particle"])
    assert particle == replace(PRESETS["synthetic"].config, prompt="a head", psi=ParticlePsiConfig())


def test_prior_and_psi_tokens_choose_the_parts():
    config = parse_args(["generate", "a head", "prior:synthetic", "--prior.p-front", "0.9", "psi:particle"])
    assert config.prior == SyntheticPriorConfig(p_front=0.9) and config.psi == ParticlePsiConfig()
    assert config.resolution == GenerateConfig.resolution  # the esd preset's other values
    sd = parse_args(["generate", "a head", "--prior.model", "sd1.5", "--prior.encoder", "linear"])
    assert sd.prior == StableDiffusionConfig(model="sd1.5", encoder="linear") and sd.psi == LoRAPsiConfig()


def test_the_default_parts_take_their_negated_flags_without_naming_them():
    """A flag of the default prior or psi needs no prior:NAME / psi:NAME, the --no- form of a switch included (the
    new spelling that the refusal of --no-view-dependent-prompt names)."""
    assert parse_args(["generate", "a head", "--psi.shared-unet"]).psi.shared_unet
    assert not parse_args(["generate", "a head", "--psi.no-shared-unet"]).psi.shared_unet
    assert not parse_args(["generate", "a head", "--prior.no-view-dependent-prompt"]).prior.view_dependent_prompt
    assert not parse_args(["generate", "a head", "--prior.no-resize-to-native"]).prior.resize_to_native


def test_a_config_file_applies_over_the_preset_and_flags_over_both(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("steps: 300\nprior:\n  p_front: 0.9\n")
    config = parse_args(["generate", "a head", "--preset", "synthetic", "--config", str(path), "--steps", "20"])
    base = PRESETS["synthetic"].config
    assert config == replace(base, prompt="a head", config=path, steps=20, prior=replace(base.prior, p_front=0.9))
    missing = run_cli("generate", "a head", "--config", tmp_path / "nope.yaml", env=ENV)
    one_error_line(missing, f"config file {tmp_path / 'nope.yaml'} does not exist (an example: configs/preview.yaml)")


@pytest.mark.parametrize(
    ("line", "hint", "named"),
    [
        (["--psi.bank-size", "8"], "--psi.bank-size belongs to psi:particle: name it first", "psi:particle"),
        (["--prior.p-front", "0.3"], "--prior.p-front belongs to prior:synthetic: name it first", "prior:synthetic"),
        (["--psi.lora-rank", "2"], "--psi.lora-rank belongs to psi:lora: name it first", "psi:lora"),
    ],
)
def test_an_option_of_a_part_not_chosen_names_the_part(line, hint, named):
    """The option exists, on another prior or estimator than the one in force: the error says which to name, and
    with that part named first the same option is taken."""
    preset = ["--preset", "synthetic"] if named == "psi:lora" else []  # the synthetic preset's psi is the particle
    with pytest.raises(UserError, match=re.escape(hint)):
        parse_args(["generate", "a head", *preset, *line])
    config = parse_args(["generate", "a head", *preset, named, *line])
    part = config.psi if named.startswith("psi") else config.prior
    assert part.name == named.split(":")[1]
