"""The generate loop (Algorithm 1 with Gaussians): sample cameras, render, distil, step theta, densify, step psi.

Run directory layout (everything written atomically):

    config.yaml            the resolved configuration (what --resume reads back)
    run.json               status: running | interrupted | finished | failed, and the step reached
    metrics.jsonl          one line per step: loss, t, Gaussians, it/s, psi loss, skipped steps
    previews/step_*.png    4-view preview grids during training (azimuth 0, 90, 180, 270)
    checkpoint/            the last checkpoint (checkpoint.py)
    scene.ply, scene.splat the result (standard 3DGS, viewer up axis)
    turntable.mp4, contact_sheet.png

Determinism: every random draw comes from generators seeded by ``seed`` (cameras and backgrounds; diffusion noise
and psi; torch's global RNG, which gsplat's split uses), all saved in checkpoints, so an interrupted and resumed CPU
run ends with the same scene as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_path
from .cameras import orbit_cameras, turntable
from .checkpoint import (
    has_checkpoint,
    load_checkpoint,
    optimizer_from_flat,
    optimizer_to_flat,
    rng_tensor,
    save_checkpoint,
)
from .configs.generate import GenerateConfig, dump_yaml_config
from .densify import Densifier, resolve_grad_threshold
from .guidance.prior import StableDiffusionPrior
from .guidance.particle import ParticleEstimator
from .guidance.psi import CameraLoRAEstimator
from .guidance.score_distillation import DistillationConfig, ScoreDistillation
from .io import write_ply, write_splat
from .progress import console, make_progress
from .render import render, resolve_backend
from .render.views import render_views
from .scene import GaussianScene
from .synthetic.estimator import SyntheticResidualEstimator
from .synthetic.prior import SyntheticPrior
from .video import contact_sheet, write_png, write_turntable

PARAM_KEYS = ("means", "scales", "quats", "opacities", "sh0", "shN")


class TrainingError(RuntimeError):
    """The optimisation itself failed (e.g. persistent NaNs): reported in one line, exit code 1."""


class Interrupted(Exception):
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Trainer:
    def __init__(self, config: GenerateConfig, run_dir: Path, device: torch.device, prior=None):
        """``prior``: an already built prior to reuse (the Janus benchmark shares one across runs)."""
        self.cfg, self.run_dir, self.device = config, run_dir, device
        self.backend = resolve_backend(config.backend, device)  # before any model loads: a bad choice fails at once
        if prior is not None:
            self.prior = prior
        elif config.prior == "synthetic":
            background = {"white": 1.0, "black": 0.0}.get(config.background, 1.0)
            self.prior = SyntheticPrior.build(config.synthetic, config.prompt, config.resolution, config.cameras, device, background)
        else:
            self.prior = StableDiffusionPrior.from_pretrained(
                config.model, device=device, precision=config.precision, resize_to_native=config.resize_to_native
            )
        self.text = self.prior.text_embeddings(config.prompt, config.negative_prompt, config.view_dependent_prompt)
        distill_cfg = DistillationConfig(
            method=config.method,
            lambda_entropy=config.lambda_entropy,
            guidance_scale=config.guidance_scale,
            weighting=config.weighting,
            grad_clip=config.grad_clip,
            encoder=config.encoder,
        )
        torch.manual_seed(config.seed)  # psi's camera MLP initialisation and gsplat's split draws
        self.psi = make_estimator(self.prior, config) if distill_cfg.needs_psi else None
        self.distill = ScoreDistillation(self.prior, self.text, distill_cfg, config.timesteps, self.psi)
        self.camera_gen = torch.Generator().manual_seed(config.seed)
        self.noise_gen = torch.Generator(device=device).manual_seed(config.seed + 1)
        self.scene = GaussianScene.random_ball(config.init, generator=torch.Generator().manual_seed(config.seed + 2)).to(device)
        self.optimizers = self._make_optimizers()
        scene_scale = 1.1 * max(config.cameras.radius)
        self.densifier = Densifier(resolve_grad_threshold(config.densify, config.method), config.steps, scene_scale)
        self.densifier.check(self.scene.params, self.optimizers)
        self.step = 0
        self.skipped = 0
        self.bad_in_a_row = 0
        self._stop_signal: int | None = None
        self._finishing = False

    # ------------------------------------------------------------------ optimisation pieces
    def _make_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        rates = self.cfg.optim
        return {
            key: torch.optim.Adam([self.scene.params[key]], lr=getattr(rates, key), eps=1e-15)
            for key in PARAM_KEYS
        }

    def _means_lr(self, progress: float) -> float:
        """Exponential decay from optim.means to optim.means_end over the run (3DGS's position schedule)."""
        start, end = self.cfg.optim.means, self.cfg.optim.means_end
        return math.exp(math.log(start) + (math.log(end) - math.log(start)) * min(max(progress, 0.0), 1.0))

    def resolution(self, progress: float) -> int:
        cfg = self.cfg
        early = cfg.resolution_start is not None and progress < cfg.resolution_switch
        size = min(cfg.resolution_start, cfg.resolution) if early else cfg.resolution
        return size // 8 if cfg.encoder == "linear" else size

    def _backgrounds(self, batch: int) -> torch.Tensor:
        """Per view: white, black or a random colour (random mode), drawn from the camera generator."""
        mode = self.cfg.background
        if mode == "white":
            return torch.ones(batch, 3)
        if mode == "black":
            return torch.zeros(batch, 3)
        choice = torch.randint(0, 3, (batch,), generator=self.camera_gen)
        colour = torch.rand(batch, 3, generator=self.camera_gen)
        return torch.where((choice == 0)[:, None], 1.0, torch.where((choice == 1)[:, None], 0.0, colour))

    # ------------------------------------------------------------------ one step
    def train_step(self) -> dict:
        cfg = self.cfg
        progress = self.step / cfg.steps
        for group in self.optimizers["means"].param_groups:
            group["lr"] = self._means_lr(progress)
        self.densifier.remove_degenerate(self.scene.params, self.optimizers)
        size = self.resolution(progress)
        if isinstance(self.psi, ParticleEstimator) and self.psi.needs_refresh(self.step):
            self.refresh_bank(size)
        cams = cfg.cameras.sample(cfg.batch_size, generator=self.camera_gen)
        out = render(
            self.scene, cams, size, size, background=self._backgrounds(cfg.batch_size).to(self.device), backend=self.backend
        )
        self.densifier.pre_backward(self.scene.params, self.optimizers, self.step, out.info)
        result = self.distill.step(out.rgb, cams, progress, generator=self.noise_gen)
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        result.loss.backward()
        finite = bool(torch.isfinite(result.loss)) and all(
            p.grad is None or bool(torch.isfinite(p.grad).all()) for p in self.scene.params.values()
        )
        psi_loss = None
        if finite:
            self.bad_in_a_row = 0
            for optimizer in self.optimizers.values():
                optimizer.step()
            self.densifier.post_backward(self.scene.params, self.optimizers, self.step, out.info)
            psi_loss = self.distill.update_psi(result.latents, cams, generator=self.noise_gen)
        else:
            self.skipped += 1
            self.bad_in_a_row += 1
            if self.bad_in_a_row >= cfg.max_bad_steps:
                raise TrainingError(
                    f"the loss or gradient was NaN/Inf for {self.bad_in_a_row} steps in a row (step {self.step}): "
                    "try --precision fp32, a smaller --optim.means, or --grad-clip"
                )
        self.step += 1
        row = {
            "step": self.step,
            "loss": float(result.loss.detach()) if finite else None,
            "t": float(result.timesteps.float().mean()),
            "gaussians": self.scene.num_gaussians,
            "resolution": size,
            "psi_loss": psi_loss,
            "skipped": self.skipped,
        }
        if self.device.type == "cuda":
            row["gpu_mem_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30  # peak so far
        return row

    @torch.no_grad()
    def refresh_bank(self, size: int) -> None:
        """Re-render the particle bank at fresh cameras from the training distribution."""
        cams = self.cfg.cameras.sample(self.psi.bank_size, generator=self.camera_gen)
        images = []
        for start in range(0, len(cams), 16):
            chunk = cams[start : start + 16]
            background = self._backgrounds(len(chunk)).to(self.device)
            images.append(render(self.scene, chunk, size, size, background=background, backend=self.backend).rgb)
        encode = self.prior.encode_images if self.cfg.encoder == "vae" else self.prior.encode_images_linear
        self.psi.refresh(torch.cat([encode(batch) for batch in images]))

    # ------------------------------------------------------------------ the run
    def run(self) -> None:
        cfg = self.cfg
        self._write_status("running")
        metrics_path = self.run_dir / "metrics.jsonl"
        preview_every = max(1, round(cfg.output.preview_every * cfg.steps)) if cfg.output.preview_every > 0 else 0
        checkpoint_every = max(1, round(cfg.output.checkpoint_every * cfg.steps)) if cfg.output.checkpoint_every > 0 else 0
        old_handlers = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            with make_progress("loss", "gaussians") as progress, open(metrics_path, "a") as metrics:
                task = progress.add_task("generating", total=cfg.steps, completed=self.step, loss="-", gaussians=self.scene.num_gaussians)
                while self.step < cfg.steps:
                    if self._stop_signal is not None:
                        raise Interrupted(self._stop_signal)
                    start = time.perf_counter()
                    row = self.train_step()
                    row["it_s"] = 1.0 / max(time.perf_counter() - start, 1e-9)
                    metrics.write(json.dumps(row) + "\n")
                    metrics.flush()
                    loss_text = f"{row['loss']:.4f}" if row["loss"] is not None else "nan"
                    progress.update(task, completed=self.step, loss=loss_text, gaussians=row["gaussians"])
                    if preview_every and (self.step % preview_every == 0 or self.step == cfg.steps):
                        self.write_preview()
                    if checkpoint_every and self.step % checkpoint_every == 0 and self.step < cfg.steps:
                        self.save()
            if self._stop_signal is not None:
                raise Interrupted(self._stop_signal)
            self._finishing = True  # from here a signal interrupts at once: the loop no longer polls for it
            self.save()
            self.export(final=True)
            self._write_status("finished")
        except Interrupted as stop:
            console.print(f"[yellow]{stop}: saving a checkpoint and the scene at step {self.step}[/yellow]")
            saved = self._attempt(self.save, "save a checkpoint")
            self._attempt(lambda: self.export(final=False), "export the scene")
            # Truthful: "interrupted" only when a complete checkpoint (this one or an earlier one) can be resumed.
            resumable = saved or has_checkpoint(self.run_dir / "checkpoint")
            self._attempt(lambda: self._write_status("interrupted" if resumable else "failed"), "update run.json")
            raise
        except TrainingError:
            self._attempt(lambda: self.export(final=False), "export the scene")
            self._attempt(lambda: self._write_status("failed"), "update run.json")
            raise
        except BaseException as error:  # a full disk, a vanished folder, a second Ctrl-C: say so in run.json
            resumable = isinstance(error, KeyboardInterrupt) and has_checkpoint(self.run_dir / "checkpoint")
            self._attempt(lambda: self._write_status("interrupted" if resumable else "failed"), "update run.json")
            raise
        finally:
            self._finishing = False
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)

    @staticmethod
    def _attempt(action, what: str) -> bool:
        """Run ``action``; on a file error print one line and go on (used while already stopping)."""
        try:
            action()
        except OSError as exc:
            console.print(f"[red]could not {what}: {exc.strerror or exc}[/red]")
            return False
        return True

    def _on_signal(self, signum, frame) -> None:
        if self._stop_signal is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._stop_signal = signum
        if self._finishing:  # the final save and export: stop them now (every file is written atomically)
            raise Interrupted(signum)

    def _write_status(self, status: str) -> None:
        with atomic_path(self.run_dir / "run.json") as tmp:
            tmp.write_text(json.dumps({"status": status, "step": self.step, "steps": self.cfg.steps}, indent=1))

    # ------------------------------------------------------------------ outputs
    def write_preview(self) -> None:
        size = max(64, min(256, self.cfg.resolution))
        cams = orbit_cameras(
            torch.tensor([0.0, 90.0, 180.0, 270.0]), torch.full((4,), 15.0), torch.full((4,), 2.5), torch.full((4,), 50.0)
        )
        frames = render_views(self.scene, cams, size, background=1.0, backend=self.backend)
        write_png(contact_sheet(frames, columns=4), self.run_dir / "previews" / f"step_{self.step:06d}.png")

    def export(self, final: bool) -> None:
        """scene.ply and scene.splat always; the turntable video and contact sheet at the end of the run."""
        up = self.cfg.output.up
        scene = GaussianScene(self.scene.raw()).cpu()
        write_ply(scene, self.run_dir / "scene.ply", up=up)
        write_splat(scene, self.run_dir / "scene.splat", up=up)
        if final:
            out = self.cfg.output
            frames = render_views(
                self.scene, turntable(out.turntable_views), out.turntable_size, background=1.0, progress_label="turntable",
                backend=self.backend,
            )
            write_turntable(frames, self.run_dir, stem="turntable", formats=out.video_formats, fps=30)
            picks = np.linspace(0, len(frames), num=min(16, len(frames)), endpoint=False).astype(int)
            write_png(contact_sheet(frames[picks], columns=min(8, len(picks))), self.run_dir / "contact_sheet.png")

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> None:
        tensors = {f"scene.{k}": v.detach() for k, v in self.scene.params.items()}
        optim_meta = {}
        for key, optimizer in self.optimizers.items():
            flat, meta = optimizer_to_flat(key, optimizer)
            tensors.update(flat)
            optim_meta[key] = meta
        for key, value in self.densifier.state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"densify.{key}"] = value
        if self.psi is not None:
            tensors.update({f"psi.{k}": v for k, v in self.psi.state_dict().items()})
            if self.psi.optimizer is not None:
                flat, psi_meta = optimizer_to_flat("psi", self.psi.optimizer)
                tensors.update({f"psi_{k}": v for k, v in flat.items()})
                optim_meta["psi"] = psi_meta
        tensors["rng.global"] = rng_tensor(torch.get_rng_state())
        tensors["rng.camera"] = rng_tensor(self.camera_gen.get_state())
        tensors["rng.noise"] = rng_tensor(self.noise_gen.get_state())
        meta = {
            "step": self.step,
            "skipped": self.skipped,
            "bad_in_a_row": self.bad_in_a_row,
            "optimizers": optim_meta,
            "null_rate_counter": getattr(self.psi, "null_rate_counter", None),
            "device": self.device.type,
        }
        scaler = getattr(self.psi, "grad_scaler", None)
        if scaler is not None and scaler.is_enabled():
            meta["psi_grad_scaler"] = scaler.state_dict()
        if self.device.type == "cuda":
            tensors["rng.cuda"] = rng_tensor(torch.cuda.get_rng_state(self.device))
        save_checkpoint(self.run_dir / "checkpoint", tensors, meta)

    def restore(self) -> None:
        tensors, meta = load_checkpoint(self.run_dir / "checkpoint")
        check_checkpoint(tensors, meta, self.cfg.steps)
        params = {k: tensors[f"scene.{k}"] for k in PARAM_KEYS}
        self.scene = GaussianScene(params).to(self.device)
        self.optimizers = self._make_optimizers()
        for key, optimizer in self.optimizers.items():
            optimizer_from_flat(key, optimizer, tensors, meta["optimizers"][key], self.device)
        for key in list(self.densifier.state):
            if f"densify.{key}" in tensors:
                self.densifier.state[key] = tensors[f"densify.{key}"].to(self.device)
        if self.psi is not None:
            self.psi.load_state_dict({k[len("psi."):]: v for k, v in tensors.items() if k.startswith("psi.")})
            if self.psi.optimizer is not None:
                psi_flat = {k[len("psi_"):]: v for k, v in tensors.items() if k.startswith("psi_optim.")}
                optimizer_from_flat("psi", self.psi.optimizer, psi_flat, meta["optimizers"]["psi"], self.device)
                self.psi.null_rate_counter = list(meta["null_rate_counter"])
                scaler = getattr(self.psi, "grad_scaler", None)
                if scaler is not None and scaler.is_enabled() and "psi_grad_scaler" in meta:
                    scaler.load_state_dict(meta["psi_grad_scaler"])
        self.step, self.skipped, self.bad_in_a_row = meta["step"], meta["skipped"], meta["bad_in_a_row"]
        torch.set_rng_state(tensors["rng.global"])
        self.camera_gen.set_state(tensors["rng.camera"])
        saved_device = meta.get("device")
        noise_state = tensors["rng.noise"]
        same_kind = noise_state.numel() == self.noise_gen.get_state().numel()  # CPU and CUDA states differ in size
        if (saved_device is None or saved_device == self.device.type) and same_kind:
            self.noise_gen.set_state(noise_state.to(self.noise_gen.get_state().device))
            if "rng.cuda" in tensors and self.device.type == "cuda":
                torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        else:
            # A generator's state cannot move between CPU and CUDA: draw the diffusion noise from a fresh stream.
            self.noise_gen.manual_seed(self.cfg.seed + 1 + self.step)
            console.print(
                f"[yellow]this run was checkpointed on {saved_device or 'another device'} and resumes on "
                f"{self.device.type}: the diffusion noise is re-seeded, so the result differs from an uninterrupted run[/yellow]"
            )


def check_checkpoint(tensors: dict, meta: dict, steps: int) -> None:
    """Refuse a parseable but wrong checkpoint before anything is restored (KeyError/TypeError/ValueError, which
    the command turns into one line): counters, optimiser settings and the scene tensors' types."""
    def count(name: str, high: int | None = None) -> int:
        value = meta.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0 or (high is not None and value > high):
            raise ValueError(f"meta.json {name} = {value!r} is not a count" + (f" in 0..{high}" if high else ""))
        return value

    if not isinstance(meta, dict):
        raise TypeError("meta.json is not a mapping")
    count("step", steps)
    count("skipped")
    count("bad_in_a_row")
    optimizers = meta.get("optimizers")
    if not isinstance(optimizers, dict):
        raise KeyError("meta.json has no optimizers")
    for name, entry in optimizers.items():
        groups = entry.get("groups") if isinstance(entry, dict) else None
        if not isinstance(groups, list) or not groups or not isinstance(entry.get("scalars"), dict):
            raise ValueError(f"meta.json optimizers.{name} has no param groups")
        for group in groups:
            if not isinstance(group, dict):
                raise ValueError(f"meta.json optimizers.{name} has a param group that is not a mapping")
            numbers = [group.get(k) for k in ("lr", "eps", "weight_decay")] + list(group.get("betas") or [None])
            if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in numbers):
                raise ValueError(f"meta.json optimizers.{name} has a non-numeric setting")
            if not group["lr"] >= 0 or len(group["betas"]) != 2:
                raise ValueError(f"meta.json optimizers.{name} has a negative learning rate or bad betas")
    for key in PARAM_KEYS:
        tensor = tensors.get(f"scene.{key}")
        if tensor is None or tensor.dtype != torch.float32:
            raise ValueError(f"scene.{key} is missing or not float32")


def make_estimator(prior, config: GenerateConfig):
    """psi for this run: the particle bank, or the learned estimator of the prior's kind (LoRA / residual net)."""
    if config.psi.estimator == "particle":
        return ParticleEstimator(prior, config.psi.bank_size, config.psi.bank_refresh_every)
    if isinstance(prior, SyntheticPrior):
        return SyntheticResidualEstimator(prior, config.psi)
    return CameraLoRAEstimator.create(prior, config.psi)


def write_config(config: GenerateConfig, run_dir: Path) -> None:
    saved = replace(config, resume=None, overwrite=False, config=None, out=None)
    with atomic_path(run_dir / "config.yaml") as tmp:
        tmp.write_text(dump_yaml_config(saved))
