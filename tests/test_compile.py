"""``--compile``: phi's and psi's UNet passes through torch.compile give the update eager gives (to float rounding),
compile once per kind of pass (the shared UNet's role switches do not recompile), train psi's LoRA, fall back to
eager in one line when the compiler fails, and run from the command line.

The compiled test is the one slow test here: Inductor writes and builds C++ kernels for three graphs and a backward
(minutes on a cold cache on 2 cores, seconds from Inductor's on-disk cache; BENCHMARKS.md, "Compiled UNet passes").
The command line is tested to the parts it builds, without a compile of its own.
"""

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml
from small_runs import small_synthetic_config

from esd_gs.cameras import OrbitSampler
from esd_gs.cli.main import parse_args
from esd_gs.configs.generate import GenerateConfig
from esd_gs.configs.yaml_io import load_yaml_config, run_config_text, run_settings
from esd_gs.distillation import DistillationConfig, ScoreDistillation
from esd_gs.distillation.timesteps import TimestepSchedule
from esd_gs.estimators import CameraLoRAEstimator, LoRAPsiConfig
from esd_gs.pipeline.build import build_parts, compile_unet_passes
from esd_gs.priors import StableDiffusionPrior
from esd_gs.priors import compile as compile_module
from esd_gs.testing.tiny_sd import build_tiny_stable_diffusion

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a head"
BATCH = 2
"""Views per step, here and in the command-line run (so that both compile the same graphs)."""


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_stable_diffusion(tmp_path_factory.mktemp("sd") / "tiny", "epsilon", seed=0)


def unique_graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def esd_steps(model, compiled: bool, steps: int = 2, announce=None, device: str = "cpu"):
    """``steps`` ESD steps on fixed renders, as the Trainer runs them: the distillation step (phi's pass and psi's
    two scores), its gradient on the renders (what reaches theta), then psi's update, in float32 on ``device``.
    Returns the renders' gradient of each step, psi's gradients and weights after each update, the number of graphs
    compiled after each step, and psi's LoRA B matrices at the end."""
    torch.manual_seed(0)
    prior = StableDiffusionPrior.from_pretrained(
        str(model), device=device, precision="fp32", announce=lambda line: None
    )
    psi = CameraLoRAEstimator.create(prior, LoRAPsiConfig(p_null_camera=0.0))
    if compiled:
        torch._dynamo.reset()  # as in a new process: earlier tests' graphs do not count towards Dynamo's limit
        compile_unet_passes(prior, psi, announce)
    distill = ScoreDistillation(
        prior, prior.text_embeddings(PROMPT), DistillationConfig(method="esd"), TimestepSchedule(), psi
    )
    gen = torch.Generator().manual_seed(0)
    renders = torch.rand(BATCH, 3, 64, 64, generator=gen).to(device)
    cameras = OrbitSampler().sample(BATCH, generator=gen)
    trained = [p for p in psi.trainable_parameters if p.requires_grad]
    results = []
    for _ in range(steps):
        images = renders.clone().requires_grad_()
        out = distill.step(images, cameras, progress=0.5, generator=gen)
        out.loss.backward()
        distill.update_psi(out.latents, cameras, gen, out.timesteps)
        results.append(
            {
                "theta_grad": images.grad.to("cpu", copy=True),
                "psi_grads": [p.grad.to("cpu", copy=True) for p in trained],
                "psi_weights": [p.detach().to("cpu", copy=True) for p in trained],
                "graphs": unique_graphs(),
            }
        )
    lora_b = [p.detach().cpu() for name, p in psi.unet.named_parameters() if "lora_B" in name]
    return results, lora_b


CUDA = pytest.param(
    "cuda",
    marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")],
)


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_compiled_passes_give_eager_update_compile_once_and_train_the_lora(tiny_model, device, monkeypatch):
    if device == "cuda":  # TF32 convolutions pick other algorithms for the compiled (channels-last) layout
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
        monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    lines = []
    before = unique_graphs()
    compiled, compiled_b = esd_steps(tiny_model, compiled=True, announce=lines.append, device=device)
    eager, eager_b = esd_steps(tiny_model, compiled=False, device=device)
    assert not any("failed" in line for line in lines), lines
    # three graphs, compiled in the first step (phi's pass, psi's scores, psi's training pass), none after: the role
    # switches of the shared UNet pick them through the guards
    assert compiled[0]["graphs"] - before == 3
    assert compiled[1]["graphs"] == compiled[0]["graphs"]
    assert eager[1]["graphs"] == compiled[1]["graphs"]  # eager compiles nothing
    for step, (fast, slow) in enumerate(zip(compiled, eager)):
        scale = float(slow["theta_grad"].abs().max())
        assert scale > 0
        torch.testing.assert_close(fast["theta_grad"], slow["theta_grad"], rtol=1e-4, atol=1e-5 * scale, msg=step)
        # psi's gradients are sums over the batch and the UNet's reductions, which Inductor orders otherwise: float32
        # rounding of ~1e-3 of a tensor's largest entry (seen: 3e-4); a gradient the compiled backward loses is 100%
        for fast_grad, slow_grad in zip(fast["psi_grads"], slow["psi_grads"]):
            scale = float(slow_grad.abs().max())
            torch.testing.assert_close(fast_grad, slow_grad, rtol=1e-3, atol=1e-3 * scale + 1e-12, msg=step)
        for fast_weight, slow_weight in zip(fast["psi_weights"], slow["psi_weights"]):
            torch.testing.assert_close(fast_weight, slow_weight, rtol=1e-4, atol=1e-6, msg=step)
    # the LoRA trains through the compiled forward and backward: every B matrix moved from its initial zero
    assert compiled_b and all(float(b.abs().max()) > 0 for b in compiled_b)
    for fast_b, slow_b in zip(compiled_b, eager_b):
        torch.testing.assert_close(fast_b, slow_b, rtol=1e-4, atol=1e-6)


def test_the_command_line_flag_routes_every_unet_pass_through_one_compiled_forward(tiny_model, capsys):
    """``generate --compile`` as parsed, built as a run builds it: phi's passes and the shared psi's go through one
    compiled forward (compiled at its first call, which the test above makes), and without the flag through the UNet."""
    config = parse_args(["generate", PROMPT, "--prior.model", str(tiny_model), "--compile"])
    assert config.compile is True
    parts = build_parts(config, torch.device("cpu"))
    assert "--compile: UNet passes through torch.compile" in capsys.readouterr().err
    assert parts.psi.shared and parts.psi.unet is parts.prior.unet
    assert parts.prior.unet_forward is not parts.prior.unet
    assert parts.psi.unet_forward is parts.prior.unet_forward
    parts.prior.restore()
    assert parts.prior.unet_forward is parts.prior.unet  # restored for the next run of a batch, eager
    eager = build_parts(parse_args(["generate", PROMPT, "--prior.model", str(tiny_model)]), torch.device("cpu"))
    assert eager.prior.unet_forward is eager.prior.unet and eager.psi.unet_forward is eager.psi.unet


def backend_failing_on_backward():
    """A torch.compile backend whose forward graphs run as traced and whose backward compiler fails, as Inductor's
    does without a C++ compiler."""
    from torch._dynamo.backends.common import aot_autograd
    from torch._dynamo.backends.debugging import boxed_nop

    def failing(graph, example_inputs):
        raise RuntimeError("no working C++ compiler\nsecond line")

    return aot_autograd(fw_compiler=boxed_nop, bw_compiler=failing)


def test_a_compiler_failure_is_one_line_and_the_run_goes_on_eager(tiny_model, monkeypatch):
    """The failure comes from psi's backward, which is compiled with its forward: it is caught at the forward call,
    not raised from psi's ``loss.backward()``."""
    real_compile = torch.compile

    def compile_failing(model, options=None, **kw):
        return real_compile(model, backend=backend_failing_on_backward(), **kw)

    monkeypatch.setattr(compile_module.torch, "compile", compile_failing)
    lines = []
    failed, failed_b = esd_steps(tiny_model, compiled=True, announce=lines.append)
    monkeypatch.undo()
    eager, eager_b = esd_steps(tiny_model, compiled=False)
    assert len(lines) == 2, lines  # the compile line, then the failure, once for the run
    assert "torch.compile failed (RuntimeError: no working C++ compiler)" in lines[1]
    assert "second line" not in lines[1] and "run eager" in lines[1]
    for fast, slow in zip(failed, eager):  # phi's and psi's scores ran traced, psi's training eager: the same update
        torch.testing.assert_close(fast["theta_grad"], slow["theta_grad"])
        for fast_weight, slow_weight in zip(fast["psi_weights"], slow["psi_weights"]):
            torch.testing.assert_close(fast_weight, slow_weight)
    for fast_b, slow_b in zip(failed_b, eager_b):
        torch.testing.assert_close(fast_b, slow_b)


def test_compile_without_a_unet_says_so_and_runs_eager(capsys):
    config = small_synthetic_config(steps=1, compile=True)
    parts = build_parts(config, torch.device("cpu"))
    assert "--compile: SyntheticPrior has no UNet to compile; the run is eager" in capsys.readouterr().err
    assert not hasattr(parts.prior, "unet_forward")


def test_compile_is_saved_with_the_run_and_old_configs_load_without_it(tmp_path):
    old = load_yaml_config(ROOT / "tests" / "data" / "flat-config-runs" / "particle-esd" / "config.yaml")
    assert old.compile is False  # written before the option existed
    compiled = dataclasses.replace(GenerateConfig(prompt=PROMPT), compile=True)
    (tmp_path / "config.yaml").write_text(run_config_text(compiled))
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["compile"] is True
    assert load_yaml_config(tmp_path / "config.yaml").compile is True
    # the same run compiled or not (as on another device): a batch does not call it a run of other settings
    assert run_settings(compiled) == run_settings(dataclasses.replace(compiled, compile=False))


@pytest.mark.parametrize("compiled_before", [False, True])
def test_a_resume_compiles_as_its_own_command_line_says(tmp_path, monkeypatch, compiled_before):
    """``--compile`` steers one invocation: ``--resume DIR --compile`` compiles a run started eager, and a resume
    without it runs eager a run started compiled (a batch's interrupted job resumes as the batch says)."""
    from esd_gs.pipeline import generate as generate_module
    from esd_gs.pipeline.build import build_trainer

    config = small_synthetic_config(steps=4, compile=compiled_before)
    trainer = build_trainer(config, tmp_path, torch.device("cpu"))
    trainer.train_step()
    trainer.save()
    (tmp_path / "config.yaml").write_text(run_config_text(config))
    built = []

    class Built(Exception):
        pass

    def record(saved, *args, **kwargs):
        built.append(saved.compile)
        raise Built

    monkeypatch.setattr(generate_module, "build_trainer", record)
    with pytest.raises(Built):
        generate_module.generate(dataclasses.replace(config, resume=tmp_path, compile=not compiled_before))
    assert built == [not compiled_before]


def test_the_shared_unets_roles_each_run_their_own_compiled_graph(tiny_model, monkeypatch):
    """phi (adapters off, no camera MLP) and psi (adapters on, the camera MLP) are one module whose role switches
    between passes of the same shapes: each compiled call must give that role's eager answer, in any order. psi's
    LoRA B and camera MLP are made large first (at the start psi equals phi, which would hide a mix-up). The guards
    are Dynamo's, so the ``aot_eager`` backend (no kernel builds) tests them."""
    real_compile = torch.compile
    monkeypatch.setattr(
        compile_module.torch,
        "compile",
        lambda model, options=None, **kw: real_compile(model, backend="aot_eager", **kw),
    )
    torch.manual_seed(0)
    prior = StableDiffusionPrior.from_pretrained(str(tiny_model), precision="fp32", announce=lambda line: None)
    psi = CameraLoRAEstimator.create(prior, LoRAPsiConfig())
    with torch.no_grad():
        for name, p in psi.unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
        for p in psi.camera_embedding.parameters():
            p.normal_(0, 0.2)
    gen = torch.Generator().manual_seed(1)
    x_t = torch.randn(2, 4, 8, 8, generator=gen)
    t = torch.tensor([300, 700])
    text = prior.text_embeddings(PROMPT).plain
    cams = OrbitSampler().sample(2, generator=gen).embedding()
    calls = [
        lambda: prior.eps(x_t, t, text.expand(2, -1, -1), text, 1.0),
        lambda: psi.eps(x_t, t, text, cams),
        lambda: psi.eps(x_t, t, text, None),
        lambda: prior.eps(x_t, t, text.expand(2, -1, -1), text, 1.0),
        lambda: psi.eps(x_t, t, text, cams),
    ]
    eager = [call() for call in calls]
    assert (eager[0] - eager[1]).abs().max() > 1e-2 and (eager[1] - eager[2]).abs().max() > 1e-3  # the roles differ
    torch._dynamo.reset()
    compile_unet_passes(prior, psi, announce=lambda line: None)
    compiled = [call() for call in calls]
    for index, (fast, slow) in enumerate(zip(compiled, eager)):
        torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5, msg=f"call {index}")


def test_a_torch_that_cannot_compile_the_backward_with_the_forward_runs_eager_in_one_line(tiny_model, monkeypatch):
    from esd_gs.pipeline import build

    assert compile_module.unsupported() is None  # this torch (the tested one) can
    monkeypatch.setattr(build, "compile_unsupported", lambda: "torch 2.1 compiles a backward only at its first use")
    prior = StableDiffusionPrior.from_pretrained(str(tiny_model), precision="fp32", announce=lambda line: None)
    lines = []
    compile_unet_passes(prior, None, announce=lines.append)
    assert lines == [
        "[yellow]--compile: torch 2.1 compiles a backward only at its first use; the run is eager[/yellow]"
    ]
    assert prior.unet_forward is prior.unet
