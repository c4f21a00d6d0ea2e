"""The generate loop (Algorithm 1 with Gaussians): sample cameras, render, distil, step theta, densify, step psi.

``Trainer`` keeps the step and the loop, and what running the loop safely takes: the NaN policy (a step with a
non-finite loss or gradient is skipped; ``max_bad_steps`` in a row end the run), signals (SIGINT / SIGTERM stop the
run after it saved a checkpoint and the scene), the final checkpoint and export, and run.json's status. It is
handed phi, psi and the update rule built (``RunParts``; ``esd_gs.pipeline.build`` builds them from a run's config)
and talks to them only through ``Prior``, ``ScoreEstimator`` and ``ScoreDistillation``; its own settings are a
``config.TrainingConfig``. Everything else a run does around its steps is a callback
(``callbacks.py``: metrics rows, previews and checkpoints on schedule; above training, the psi diagnostic and the live
view), called in the order of ``Trainer.callbacks``; ``esd_gs.pipeline.build`` gives a run its callbacks from its
config, and a Trainer made without callbacks is the bare loop. The run directory (``run_dir.py``), what a run shows
(``outputs.py``), checkpoints (``checkpoint.py``), theta (``theta.py``), densification (``densify.py``) and the
random streams (``streams.py``) live beside it; each part saves and restores its own checkpoint state, and the
Trainer files them by prefix (``save``).

Determinism: every random draw comes from generators seeded by ``seed`` (``streams.RandomStreams``; the random ball
from its own), all saved in checkpoints, so an interrupted and resumed CPU run ends with the same scene as an
uninterrupted one.
"""

from __future__ import annotations

import functools
import signal
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..distillation import ScoreDistillation
from ..estimators import ScoreEstimator
from ..priors import Prior, TextEmbeddings
from ..progress import console, make_progress
from ..render import render
from ..render.views import render_batches
from ..scene import GaussianScene
from .callbacks import TrainingCallback
from .checkpoint import (
    check_checkpoint,
    checkpoint_part,
    has_checkpoint,
    load_checkpoint,
    psi_checkpoint_state,
    save_checkpoint,
)
from .config import TrainingConfig
from .densify import Densifier
from .outputs import export_mesh, export_scene
from .run_dir import RunDir
from .streams import RandomStreams
from .theta import Theta
from .views import TrainingViews


@dataclass
class RunParts:
    """What the loop is handed, built (``pipeline.build.build_parts``): the renderer's name, phi and the prompt's text
    conditions, psi (None for SDS), the update rule over them, the random streams (made before psi, whose
    initialisation draws from torch's global generator they seed), and the initial Gaussians (``--init``; None for a
    run that ``restore`` continues from its checkpoint)."""

    backend: str
    prior: Prior
    text: TextEmbeddings
    psi: ScoreEstimator | None
    distill: ScoreDistillation
    random: RandomStreams
    initial: GaussianScene | None


PROGRESS_FIELDS = ("grad", "psi", "skipped", "gaussians")
"""What ``generate``'s progress line shows after the ETA (``progress_fields``), in the order it gives way on a narrow
terminal: the gradient's size, psi's own loss, the steps skipped for NaN/Inf, the Gaussians."""


def progress_fields(row: dict) -> dict:
    """The progress line's fields of a metrics row: ``grad`` its ``grad_rms`` (``nan`` for a skipped step), ``psi``
    its ``psi_loss`` (hidden without a psi update), ``skipped`` (hidden while 0), ``gaussians``."""
    return {
        "grad": row["grad_rms"] if row["grad_rms"] is not None else float("nan"),
        "psi": row["psi_loss"],
        "skipped": row["skipped"] or None,
        "gaussians": row["gaussians"],
    }


class TrainingError(RuntimeError):
    """The optimisation itself failed (e.g. persistent NaNs): reported in one line, exit code 1."""


class Interrupted(Exception):
    """SIGINT / SIGTERM stopped the run, after it saved what it could. ``resumable``: whether a complete checkpoint
    exists for ``--resume`` (None until the run has tried to save one)."""

    def __init__(self, signum: int, resumable: bool | None = None):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.resumable = resumable


class Trainer:
    """One generate run in ``run_dir`` (see the module docstring)."""

    def __init__(
        self,
        config: TrainingConfig,
        run_dir: Path,
        device: torch.device,
        parts: RunParts,
        *,
        callbacks: Iterable[TrainingCallback] = (),
    ):
        """``parts``: phi, psi and the update rule, built (``pipeline.build.build_parts``); ``callbacks``: what
        ``run`` calls around the steps, in this order (``callbacks.py``; ``self.callbacks`` may be extended before
        ``run``)."""
        self.cfg, self.run_dir, self.device = config, Path(run_dir), device
        self.files = RunDir(self.run_dir)
        self.callbacks: list[TrainingCallback] = list(callbacks)
        self.find_front: Callable[[GaussianScene], float] | None = None
        """Where the finished scene's own front is (azimuth, degrees; ``export``'s turntable starts there), when the
        prior knows it (``pipeline.build``); None: azimuth 0."""
        self.backend, self.prior, self.text = parts.backend, parts.prior, parts.text
        self.psi, self.distill, self.random = parts.psi, parts.distill, parts.random
        initial = parts.initial
        if initial is None:  # a resumed run: a stand-in of one Gaussian until restore() reads the checkpoint's scene
            initial = GaussianScene.random_ball(1, radius=0.1, opacity=0.1)
        self.theta = Theta(initial, config.optim, device)
        self.views = TrainingViews(config, at_latent_size=self.prior.approximate_encoder)
        scene_scale = 1.1 * max(config.cameras.radius)
        self.densifier = Densifier(config.densify, config.steps, scene_scale, device)
        self.densifier.check(self.scene.params, self.optimizers)
        self.step = 0
        self.skipped = 0
        self.bad_in_a_row = 0
        self._stop_signal: int | None = None
        self._finishing = False
        self._settling = False
        self._hurrying = False

    @property
    def scene(self) -> GaussianScene:
        """The Gaussians being trained (``theta.scene``)."""
        return self.theta.scene

    @scene.setter
    def scene(self, scene: GaussianScene) -> None:
        """Replace the scene, keeping the optimisers as they are (``start_from`` gives it fresh ones)."""
        self.theta.scene = scene

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The scene's optimisers by parameter key (``theta.optimizers``)."""
        return self.theta.optimizers

    @property
    def camera_gen(self) -> torch.Generator:
        """The camera and background generator (``random.camera``)."""
        return self.random.camera

    @property
    def noise_gen(self) -> torch.Generator:
        """The diffusion-noise generator (``random.noise``)."""
        return self.random.noise

    def start_from(self, scene: GaussianScene) -> None:
        """Start the run at ``scene`` (a copy) instead of the random ball, with fresh optimisers for it: how
        ``research/scripts/fixed_point.py`` asks whether a method keeps a known object. Call it before the first
        step."""
        if self.step != 0:
            raise RuntimeError("start_from() must be called before the first step")
        self.theta.reset(GaussianScene(scene.raw()))
        self.densifier.check(self.scene.params, self.optimizers)

    def resolution(self, progress: float) -> int:
        """Render size at ``progress`` (``views.TrainingViews.size``)."""
        return self.views.size(progress)

    def _backgrounds(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``batch`` background colours drawn from ``generator`` (default: the camera stream)."""
        return self.views.backgrounds(batch, generator or self.random.camera)

    # ------------------------------------------------------------------ one step
    def train_step(self) -> dict:
        """One step; returns its metrics row: ``step`` (steps done), ``loss`` (the target trick's 0.5 ||g||^2 / B,
        ``rule.distillation_loss``: the gradient's size squared, not a score of quality; None for a skipped step),
        ``grad_rms`` (the root mean square of the distillation gradient g = w(t) * the bracket of eq. 1 / 2 / 9, per
        latent value; None for a skipped step), ``t`` (the mean timestep), ``gaussians``, ``resolution`` (of the
        renders), ``psi_loss`` (psi's own denoising loss; None without a psi update),
        ``psi_scaler_skipped`` (psi's updates its fp16 loss scaler skipped so far; None without a learned psi),
        ``skipped`` (steps skipped so far), ``renderer`` (the backend that rendered: gsplat, torch, ...) and on CUDA
        ``gpu_mem_gb`` (peak so far)."""
        cfg = self.cfg
        progress = self.step / cfg.steps
        self.theta.schedule(progress)
        if self.densifier.remove_degenerate(self.scene.params, self.optimizers) < 0:
            raise TrainingError(
                f"every Gaussian has a NaN/Inf parameter or a scale above --densify.max-scale at step {self.step}: "
                "try --prior.precision fp32, a smaller --optim.means or a larger --densify.max-scale"
            )
        size = self.views.size(progress)
        if self.psi is not None:
            self.psi.before_step(self.step, lambda count: self.render_latents(count, size)[0])
        cams = self.views.cameras(cfg.batch_size, self.random.camera)
        out = render(
            self.scene,
            cams,
            size,
            size,
            background=self._backgrounds(cfg.batch_size).to(self.device),
            backend=self.backend,
        )
        self.densifier.pre_backward(self.scene.params, self.optimizers, self.step, out.info)
        result = self.distill.step(out.rgb, cams, progress, generator=self.random.noise)
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
            psi_loss = self.distill.update_psi(result.latents, cams, self.random.noise, result.timesteps, progress)
        else:
            self.skipped += 1
            self.bad_in_a_row += 1
            if self.bad_in_a_row >= cfg.max_bad_steps:
                raise TrainingError(
                    f"the loss or gradient was NaN/Inf for {self.bad_in_a_row} steps in a row (step {self.step}): "
                    "try --prior.precision fp32, a smaller --optim.means, or --grad-clip"
                )
        self.step += 1
        row = {
            "step": self.step,
            "loss": float(result.loss.detach()) if finite else None,
            "grad_rms": float(result.grad.float().square().mean().sqrt()) if finite else None,
            "t": float(result.timesteps.float().mean()),
            "gaussians": self.scene.num_gaussians,
            "resolution": size,
            "psi_loss": psi_loss,
            "psi_scaler_skipped": self.psi.scaler_skipped if self.psi is not None else None,
            "skipped": self.skipped,
            "renderer": self.backend,
        }
        if self.device.type == "cuda":
            row["gpu_mem_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30  # peak so far
        return row

    @torch.no_grad()
    def render_latents(
        self, count: int, size: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(latents, camera embeddings [count, 16]) of ``count`` fresh renders at cameras from the training
        distribution, with the training backgrounds, all drawn from ``generator`` (default: the camera generator).
        psi's ``before_step`` gets the latents (``estimators.RenderLatents``)."""
        generator = generator or self.random.camera
        cams = self.views.cameras(count, generator)
        backgrounds = functools.partial(self.views.backgrounds, generator=generator)
        images = list(render_batches(self.scene, cams, size, backgrounds, batch=16, backend=self.backend))
        approximate = self.prior.approximate_encoder
        latents = torch.cat([self.prior.encode(batch, approximate=approximate) for batch in images])
        return latents, cams.embedding().to(latents.device)

    # ------------------------------------------------------------------ the run
    def run(self) -> None:
        """Run from ``self.step`` to ``steps``, calling the callbacks (``callbacks.py``), then save the final
        checkpoint and export; run.json says how it ended. Raises ``Interrupted`` on SIGINT / SIGTERM (after saving),
        ``TrainingError`` when the optimisation fails (after exporting what there is), and
        ``torch.cuda.OutOfMemoryError`` when the device runs out of memory (after saving a checkpoint where the step
        failed, and the scene)."""
        cfg = self.cfg
        self._write_status("running")
        old_handlers = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for callback in self.callbacks:
                callback.on_start(self)
            with make_progress(*PROGRESS_FIELDS) as progress:
                task = progress.add_task(
                    "generating", total=cfg.steps, completed=self.step, unit="step", gaussians=self.scene.num_gaussians
                )
                while self.step < cfg.steps:
                    if self._stop_signal is not None:
                        raise Interrupted(self._stop_signal)
                    for callback in self.callbacks:
                        callback.before_step(self)
                    row = self.train_step()
                    for callback in self.callbacks:
                        callback.after_step(self, row)
                    progress.update(task, completed=self.step, **progress_fields(row))
            if self._stop_signal is not None:
                raise Interrupted(self._stop_signal)
            self._finishing = True  # from here a signal interrupts at once: the loop no longer polls for it
            self.save()
            self.export(final=True)
            for callback in self.callbacks:
                callback.on_finish(self)
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
        except torch.cuda.OutOfMemoryError as error:  # keep the work: free the failed step's tensors, then save
            traceback.clear_frames(error.__traceback__)
            try:
                self._attempt(self.save, "save a checkpoint")
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
            for callback in self.callbacks:
                self._attempt(functools.partial(callback.on_close, self), f"close {type(callback).__name__}")

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
        self.files.write_status(status, self.step, self.cfg.steps, renderer=self.backend)

    # ------------------------------------------------------------------ outputs
    def export(self, final: bool) -> None:
        """scene.ply and scene.splat always; the turntable video and contact sheet at the end of the run."""
        front = 0.0
        if final and self.find_front is not None:
            try:
                front = self.find_front(self.scene)
            except Interrupted:  # a signal during the final export: stop now, as everywhere in it
                raise
            except Exception as exc:  # a nicety: never a reason to lose the scene, which is written next
                console.print(f"[yellow]could not find the run's front ({exc}); the turntable starts at 0[/yellow]")
        export_scene(self.scene, self.files, self.cfg.output, self.backend, final, front)
        if final and self.cfg.mesh:
            export_mesh(self.scene, self.files)

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> None:
        """A checkpoint of the run (``checkpoint.save_checkpoint``): the counters, then each part's own state
        (``checkpoint_state``), its tensors under its prefix and its settings under its meta.json key
        (``_checkpoint_parts``)."""
        # The next step would remove Gaussians with a non-finite parameter first thing; removing them now keeps every
        # checkpoint esd-gs writes one that check_checkpoint accepts (a step's result is unchanged).
        self.densifier.remove_degenerate(self.scene.params, self.optimizers)
        tensors, meta = {}, {"step": self.step, "skipped": self.skipped, "bad_in_a_row": self.bad_in_a_row}
        for prefix, key, part in self._checkpoint_parts():
            part_tensors, settings = part.checkpoint_state() if part is not None else ({}, None)
            tensors.update({prefix + name: value for name, value in part_tensors.items()})
            if key is not None:
                meta[key] = settings
        save_checkpoint(self.files.checkpoint, tensors, meta)

    def _checkpoint_parts(self) -> tuple:
        """(tensor prefix, meta.json key or None, part or None) of each part of a checkpoint, in the order they are
        written (checkpoint.py's layout): theta names its tensors ``scene.*`` and ``optim.*`` itself; the densifier
        has no settings; an SDS run has no psi (its settings are saved as null)."""
        return (
            ("", "optimizers", self.theta),
            ("densify.", None, self.densifier),
            ("psi.", "psi", self.psi),
            ("rng.", "device", self.random),
        )

    def restore(self, checkpoint: tuple[dict, dict] | None = None) -> None:
        """Continue from the run directory's checkpoint, read and checked here (``check_checkpoint``), or from
        ``checkpoint``: its (tensors, meta), which the caller has already read and checked (``generate`` does so before
        any model loads). Each part reads back what ``save`` filed for it; psi also reads esd-gs 0.1's layout
        (``psi_checkpoint_state``)."""
        if checkpoint is None:
            checkpoint = load_checkpoint(self.files.checkpoint)
            check_checkpoint(*checkpoint, self.cfg.steps)
        tensors, meta = checkpoint
        self.theta.load_checkpoint_state(tensors, meta["optimizers"])
        self.densifier.load_checkpoint_state(checkpoint_part(tensors, "densify."))
        if self.psi is not None:
            self.psi.load_checkpoint_state(*psi_checkpoint_state(tensors, meta))
        self.step, self.skipped, self.bad_in_a_row = meta["step"], meta["skipped"], meta["bad_in_a_row"]
        saved_device = meta.get("device")
        if not self.random.load_checkpoint_state(checkpoint_part(tensors, "rng."), saved_device):
            # A generator's state cannot move between CPU and CUDA: draw the diffusion noise from a fresh stream.
            self.random.noise.manual_seed(self.cfg.seed + 1 + self.step)
            console.print(
                f"[yellow]this run was checkpointed on {saved_device or 'another device'} and resumes on "
                f"{self.device.type}: the diffusion noise is re-seeded, so the result differs from an uninterrupted "
                "run[/yellow]"
            )
