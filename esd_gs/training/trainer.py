"""The generate loop (Algorithm 1 with Gaussians): sample cameras, render, distil, step theta, densify, step psi.

``Trainer`` keeps the step and the loop; it builds phi and psi through their registries (``priors.build_prior``,
``estimators.build_estimator``) and talks to them only through ``Prior`` and ``ScoreEstimator``. The run directory
(``run_dir.py``), what a run shows (``outputs.py``), checkpoints (``checkpoint.py``) and densification
(``densify.py``) live beside it.

Determinism: every random draw comes from generators seeded by ``seed`` (cameras and backgrounds; diffusion noise
and psi; torch's global RNG, which gsplat's split uses), all saved in checkpoints, so an interrupted and resumed CPU
run ends with the same scene as an uninterrupted one.
"""

from __future__ import annotations

import functools
import json
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..distillation import ScoreDistillation
from ..errors import ConfigError, public_names
from ..evaluation.psi_error import PsiDiagnostic, plot_psi_errors
from ..optim_state import optimizer_from_flat, optimizer_to_flat
from ..priors import Prior
from ..progress import console, make_progress
from ..render import render, resolve_backend
from ..render.views import render_batches
from ..scene import PARAM_KEYS, GaussianScene
from .checkpoint import (
    check_checkpoint,
    has_checkpoint,
    load_checkpoint,
    psi_checkpoint_state,
    rng_tensor,
    save_checkpoint,
)
from .densify import Densifier, resolve_grad_threshold
from .outputs import export_scene, write_preview
from .run_dir import RunDir

if TYPE_CHECKING:
    from ..configs.generate import GenerateConfig


@dataclass
class OptimConfig:
    """Adam learning rates of the Gaussian parameters (one optimiser per parameter, as gsplat's strategies expect)."""

    means: float = 1e-3
    """Learning rate of the centres at the start of the run (decays exponentially to means_end)."""
    means_end: float = 2e-5
    """Learning rate of the centres at the end of the run."""
    scales: float = 5e-3
    """Learning rate of the log-scales."""
    quats: float = 1e-3
    """Learning rate of the quaternions."""
    opacities: float = 5e-2
    """Learning rate of the opacity logits."""
    sh0: float = 1e-2
    """Learning rate of the DC colour."""
    shN: float = 5e-4
    """Learning rate of the higher SH bands."""

    def __post_init__(self) -> None:
        for key in ("means", "means_end", *PARAM_KEYS[1:]):
            rate = getattr(self, key)
            if not (math.isfinite(rate) and rate > 0):
                raise ConfigError(f"--optim.{key.replace('_', '-')} must be a positive learning rate, got {rate}")


class TrainingError(RuntimeError):
    """The optimisation itself failed (e.g. persistent NaNs): reported in one line, exit code 1."""


class Interrupted(Exception):
    """SIGINT / SIGTERM stopped the run, after it saved what it could. ``resumable``: whether a complete checkpoint
    exists for ``--resume`` (None until the run has tried to save one)."""

    def __init__(self, signum: int, resumable: bool | None = None):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.resumable = resumable


LIVE_REFRESH_S = 3.0
"""Seconds between two refreshes of the live view (generate --viewer)."""


def _read_png(path):
    import imageio.v3 as iio

    return iio.imread(path)


class Trainer:
    """One generate run in ``run_dir`` (see the module docstring)."""

    def __init__(self, config: GenerateConfig, run_dir: Path, device: torch.device, prior: Prior | None = None):
        """``prior``: an already built prior to reuse (the Janus benchmark shares one across runs)."""
        self.cfg, self.run_dir, self.device = config, Path(run_dir), device
        self.files = RunDir(self.run_dir)
        self.backend = resolve_backend(config.backend, device)  # before any model loads: a bad choice fails at once
        self.prior = prior if prior is not None else config.prior.build(device, config.run_context)
        self.text = config.prior.text_embeddings(self.prior, config.prompt)
        distill_cfg = config.distill
        torch.manual_seed(config.seed)  # psi's camera MLP initialisation and gsplat's split draws
        self.psi = config.psi.build(self.prior) if distill_cfg.needs_psi else None
        self.distill = ScoreDistillation(self.prior, self.text, distill_cfg, config.timesteps, self.psi)
        self.diagnostic = None
        if config.diagnose.enabled and self.psi is not None:  # SDS has no psi to measure
            self.diagnostic = PsiDiagnostic(
                config.diagnose, self.prior, getattr(config.psi, "bank_size", 32), distill_cfg.effective_lambda
            )
        self.diagnose_every = max(1, round(config.diagnose.every * config.steps))
        self.camera_gen = torch.Generator().manual_seed(config.seed)
        self.noise_gen = torch.Generator(device=device).manual_seed(config.seed + 1)
        self.scene = GaussianScene.random_ball(
            config.init, generator=torch.Generator().manual_seed(config.seed + 2)
        ).to(device)
        self.optimizers = self._make_optimizers()
        scene_scale = 1.1 * max(config.cameras.radius)
        self.densifier = Densifier(
            resolve_grad_threshold(config.densify, distill_cfg.method), config.steps, scene_scale
        )
        self.densifier.check(self.scene.params, self.optimizers)
        self.step = 0
        self.skipped = 0
        self.bad_in_a_row = 0
        self._stop_signal: int | None = None
        self._finishing = False
        self._settling = False
        self._hurrying = False
        self.live_view = None  # generate --viewer: started by run(), so that building a Trainer serves nothing

    def start_from(self, scene: GaussianScene) -> None:
        """Start the run at ``scene`` (a copy) instead of the random ball, with fresh optimisers for it: how
        ``research/scripts/fixed_point.py`` asks whether a method keeps a known object. Call it before the first
        step."""
        if self.step != 0:
            raise RuntimeError("start_from() must be called before the first step")
        self.scene = GaussianScene(scene.raw()).to(self.device)
        self.optimizers = self._make_optimizers()
        self.densifier.check(self.scene.params, self.optimizers)

    # ------------------------------------------------------------------ optimisation pieces
    def _make_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        rates = self.cfg.optim
        return {
            key: torch.optim.Adam([self.scene.params[key]], lr=getattr(rates, key), eps=1e-15) for key in PARAM_KEYS
        }

    def _means_lr(self, progress: float) -> float:
        """Exponential decay from optim.means to optim.means_end over the run (3DGS's position schedule)."""
        start, end = self.cfg.optim.means, self.cfg.optim.means_end
        return math.exp(math.log(start) + (math.log(end) - math.log(start)) * min(max(progress, 0.0), 1.0))

    def resolution(self, progress: float) -> int:
        cfg = self.cfg
        early = cfg.resolution_start is not None and progress < cfg.resolution_switch
        size = min(cfg.resolution_start, cfg.resolution) if early else cfg.resolution
        return size // 8 if self.prior.approximate_encoder else size

    def _backgrounds(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Per view: white, black or a random colour (random mode), drawn from ``generator`` (default: the camera
        generator)."""
        mode, generator = self.cfg.background, generator or self.camera_gen
        if mode == "white":
            return torch.ones(batch, 3)
        if mode == "black":
            return torch.zeros(batch, 3)
        choice = torch.randint(0, 3, (batch,), generator=generator)
        colour = torch.rand(batch, 3, generator=generator)
        return torch.where((choice == 0)[:, None], 1.0, torch.where((choice == 1)[:, None], 0.0, colour))

    # ------------------------------------------------------------------ one step
    def train_step(self) -> dict:
        cfg = self.cfg
        progress = self.step / cfg.steps
        for group in self.optimizers["means"].param_groups:
            group["lr"] = self._means_lr(progress)
        if self.densifier.remove_degenerate(self.scene.params, self.optimizers) < 0:
            raise TrainingError(
                f"every Gaussian has a NaN/Inf parameter or a scale above --densify.max-scale at step {self.step}: "
                "try --precision fp32, a smaller --optim.means or a larger --densify.max-scale"
            )
        size = self.resolution(progress)
        if self.psi is not None:
            self.psi.before_step(self.step, lambda count: self.render_latents(count, size)[0])
        cams = cfg.cameras.sample(cfg.batch_size, generator=self.camera_gen)
        out = render(
            self.scene,
            cams,
            size,
            size,
            background=self._backgrounds(cfg.batch_size).to(self.device),
            backend=self.backend,
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
            if self.scene.num_gaussians == 0:
                raise TrainingError(
                    f"densification pruned every Gaussian at step {self.step} (opacity under "
                    f"--densify.prune-opacity {cfg.densify.prune_opacity}, or too large): lower --densify.prune-opacity"
                )
            psi_loss = self.distill.update_psi(result.latents, cams, self.noise_gen, result.timesteps)
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
        if self.diagnostic is not None and (self.step % self.diagnose_every == 0 or self.step == cfg.steps):
            row["psi_error"] = self.diagnostic.measure(
                self.psi, self.text.plain, lambda count, generator: self.render_latents(count, size, generator)
            )
        return row

    @torch.no_grad()
    def render_latents(
        self, count: int, size: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(latents, camera embeddings [count, 16]) of ``count`` fresh renders at cameras from the training
        distribution, with the training backgrounds, all drawn from ``generator`` (default: the camera generator).
        psi's ``before_step`` gets the latents (``estimators.RenderLatents``)."""
        generator = generator or self.camera_gen
        cams = self.cfg.cameras.sample(count, generator=generator)
        backgrounds = functools.partial(self._backgrounds, generator=generator)
        images = list(render_batches(self.scene, cams, size, backgrounds, batch=16, backend=self.backend))
        approximate = self.prior.approximate_encoder
        latents = torch.cat([self.prior.encode(batch, approximate=approximate) for batch in images])
        return latents, cams.embedding().to(latents.device)

    # ------------------------------------------------------------------ the run
    def run(self) -> None:
        cfg = self.cfg
        self._write_status("running")
        metrics_path = self.files.metrics
        preview_every = max(1, round(cfg.output.preview_every * cfg.steps)) if cfg.output.preview_every > 0 else 0
        checkpoint_every = (
            max(1, round(cfg.output.checkpoint_every * cfg.steps)) if cfg.output.checkpoint_every > 0 else 0
        )
        old_handlers = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.files.truncate_metrics(self.step)  # a resume from an earlier checkpoint repeats the later steps
            if cfg.viewer:
                from ..viewer.server import LiveView  # imported only with --viewer

                self.live_view = LiveView("127.0.0.1", cfg.viewer_port, LIVE_REFRESH_S, cfg.prompt)
                console.print(f"live view at {self.live_view.viewer.url}")
            with make_progress("loss", "gaussians") as progress, open(metrics_path, "a") as metrics:
                task = progress.add_task(
                    "generating", total=cfg.steps, completed=self.step, loss="-", gaussians=self.scene.num_gaussians
                )
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
                        if self.live_view is not None:
                            self.live_view.preview = _read_png(self.files.preview(self.step))
                    if self.live_view is not None:
                        self.live_view.update(
                            self.scene, self.step, cfg.steps, row["loss"], force=self.step == cfg.steps
                        )
                    if checkpoint_every and self.step % checkpoint_every == 0 and self.step < cfg.steps:
                        self.save()
            if self._stop_signal is not None:
                raise Interrupted(self._stop_signal)
            self._finishing = True  # from here a signal interrupts at once: the loop no longer polls for it
            self.save()
            self.export(final=True)
            if self.diagnostic is not None:
                try:  # a picture of the measurements: it never fails a finished run
                    plot_psi_errors(self.files.metrics, self.files.psi_error_plot)
                except Exception as exc:  # noqa: BLE001 (matplotlib's own errors, a truncated metrics line)
                    console.print(
                        f"[yellow]could not plot psi_error.png: {type(exc).__name__}: {public_names(str(exc))}[/yellow]"
                    )
            self._write_status("finished")
        except Interrupted as stop:
            console.print(f"[yellow]{stop}: saving a checkpoint and the scene at step {self.step}[/yellow]")
            saved = False
            try:
                saved = self._attempt(self.save, "save a checkpoint")
                self._attempt(lambda: self.export(final=False), "export the scene")
            except KeyboardInterrupt:  # a second signal: stop saving (every file is written atomically)
                console.print("[yellow]stopped saving at a second signal[/yellow]")
            # Truthful: "interrupted" only when a complete checkpoint (this one or an earlier one) can be resumed.
            stop.resumable = saved or has_checkpoint(self.files.checkpoint)
            self._settle("interrupted" if stop.resumable else "failed")
            raise
        except TrainingError:
            try:
                self._attempt(lambda: self.export(final=False), "export the scene")
            finally:
                self._settle("failed")
            raise
        except BaseException as error:  # a full disk, a vanished folder, a second Ctrl-C: say so in run.json
            resumable = isinstance(error, KeyboardInterrupt) and has_checkpoint(self.files.checkpoint)
            self._settle("interrupted" if resumable else "failed")
            raise
        finally:
            self._settling = False
            self._finishing = False
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            if self.live_view is not None:
                self._attempt(self.live_view.close, "close the live view")
                self.live_view = None

    def _refresh_live_view(self, loss: float | None, preview_every: int) -> None:
        """Send the scene to the live view when it is due; a viewer failure turns the viewer off, never the run."""
        try:
            if preview_every and (self.step % preview_every == 0 or self.step == self.cfg.steps):
                self.live_view.preview = _read_png(self.files.preview(self.step))
            self.live_view.update(self.scene, self.step, self.cfg.steps, loss, force=self.step == self.cfg.steps)
        except Exception as exc:  # noqa: BLE001 (whatever viser or a browser connection raises)
            console.print(
                f"[yellow]live view stopped: {type(exc).__name__}: {public_names(str(exc))}; training goes on[/yellow]"
            )
            self._attempt(self.live_view.close, "close the live view")
            self.live_view = None

    @staticmethod
    def _attempt(action, what: str) -> bool:
        """Run ``action``; on a file error print one line and go on (used while already stopping)."""
        try:
            action()
        except OSError as exc:
            console.print(f"[red]could not {what}: {exc.strerror or exc}[/red]")
            return False
        return True

    def _settle(self, status: str) -> None:
        """Write the run's closing status in run.json; signals are ignored meanwhile, so that a further Ctrl-C
        cannot leave it saying "running"."""
        self._settling = True
        self._attempt(lambda: self._write_status(status), "update run.json")

    def _on_signal(self, signum, frame) -> None:
        if self._settling:  # the closing status is being written: it is one small file, let it finish
            return
        if self._stop_signal is not None:  # a second Ctrl-C: stop now (once: a third changes nothing)
            if not self._hurrying:
                self._hurrying = True
                raise KeyboardInterrupt
            return
        self._stop_signal = signum
        if self._finishing:  # the final save and export: stop them now (every file is written atomically)
            raise Interrupted(signum)

    def _write_status(self, status: str) -> None:
        self.files.write_status(status, self.step, self.cfg.steps)

    # ------------------------------------------------------------------ outputs
    def write_preview(self) -> None:
        write_preview(self.scene, self.files, self.step, self.cfg.resolution, self.backend)

    def export(self, final: bool) -> None:
        """scene.ply and scene.splat always; the turntable video and contact sheet at the end of the run."""
        export_scene(self.scene, self.files, self.cfg.output, self.backend, final)
        if final and self.cfg.mesh:
            from ..mesh.extract import write_mesh

            write_mesh(self.scene, self.files.scene_glb)

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> None:
        # The next step would remove Gaussians with a non-finite parameter first thing; removing them now keeps every
        # checkpoint esd-gs writes one that check_checkpoint accepts (a step's result is unchanged).
        self.densifier.remove_degenerate(self.scene.params, self.optimizers)
        tensors = {f"scene.{k}": v.detach() for k, v in self.scene.params.items()}
        optim_meta = {}
        for key, optimizer in self.optimizers.items():
            flat, meta = optimizer_to_flat(key, optimizer)
            tensors.update(flat)
            optim_meta[key] = meta
        for key, value in self.densifier.state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"densify.{key}"] = value
        psi_meta = None
        if self.psi is not None:
            psi_tensors, psi_meta = self.psi.checkpoint_state()
            tensors.update({f"psi.{k}": v for k, v in psi_tensors.items()})
        tensors["rng.global"] = rng_tensor(torch.get_rng_state())
        tensors["rng.camera"] = rng_tensor(self.camera_gen.get_state())
        tensors["rng.noise"] = rng_tensor(self.noise_gen.get_state())
        meta = {
            "step": self.step,
            "skipped": self.skipped,
            "bad_in_a_row": self.bad_in_a_row,
            "optimizers": optim_meta,
            "psi": psi_meta,
            "device": self.device.type,
        }
        if self.device.type == "cuda":
            tensors["rng.cuda"] = rng_tensor(torch.cuda.get_rng_state(self.device))
        save_checkpoint(self.files.checkpoint, tensors, meta)

    def restore(self, checkpoint: tuple[dict, dict] | None = None) -> None:
        """Continue from the run directory's checkpoint, read and checked here (``check_checkpoint``), or from
        ``checkpoint``: its (tensors, meta), which the caller has already read and checked (``generate`` does so before
        any model loads)."""
        if checkpoint is None:
            checkpoint = load_checkpoint(self.files.checkpoint)
            check_checkpoint(*checkpoint, self.cfg.steps)
        tensors, meta = checkpoint
        params = {k: tensors[f"scene.{k}"] for k in PARAM_KEYS}
        self.scene = GaussianScene(params).to(self.device)
        self.optimizers = self._make_optimizers()
        for key, optimizer in self.optimizers.items():
            optimizer_from_flat(key, optimizer, tensors, meta["optimizers"][key], self.device)
        for key in list(self.densifier.state):
            if f"densify.{key}" in tensors:
                self.densifier.state[key] = tensors[f"densify.{key}"].to(self.device)
        if self.psi is not None:
            self.psi.load_checkpoint_state(*psi_checkpoint_state(tensors, meta))
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
                f"{self.device.type}: the diffusion noise is re-seeded, so the result differs from an uninterrupted "
                "run[/yellow]"
            )
