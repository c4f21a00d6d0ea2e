"""How far psi is from the scores it is meant to learn, measured against exact values.

For a deterministic renderer both targets of psi are known in closed form:

- **camera-conditional**: q(x | c, y) is a Dirac at the render g(theta, c), so at x_t = alpha_t g(theta, c) +
  sigma_t eps the exact noise prediction is the injected noise eps itself;
- **null camera**: q_t(x | y), the noised distribution of renders over the training cameras, is estimated by the
  noised empirical distribution of a large fresh bank of renders of the current scene, whose noise prediction is
  exact (``diffusion.mixture_eps``).

On held-out renders (cameras and noise drawn from the diagnostic's own generators, so training is unchanged) and at
a fixed grid of timesteps, the relative error of an estimate ``e`` against the exact ``e*`` is
``||e - e*|| / ||e*||`` over the batch (0: exact; 1: no better than predicting zero), for the null score, the
camera score and their difference (the direction of ESD's entropy term, eq. 9). The training-free particle
estimator, with a bank the size training uses, is scored beside the run's psi as the baseline.

The **update error** is what decides whether psi guides the scene: the relative error of eq. 9's whole bracket
eps_phi - lambda eps_psi(null) - (1 - lambda) eps_psi(c) at the run's lambda, against the same bracket with the exact
scores (phi's plain prediction, without text guidance, which cancels from the numerator). The bracket is the
difference between two close scores, so an estimate with a small error in the score can still have an update
error near 1: a psi equal to phi (Algorithm 1's initialisation) has exactly 1 at lambda = 1, pushing nothing.

With the exact synthetic prior the diagnostic also measures what the update should descend: Theorem 1's KL
terms of the bank against the prior's images (``monitors.objective``), the marginal one bracketed. A run whose
KL at the t it trains at rises by more than the bank's noise is not descending its objective there: its update
(the estimator's error, or a step too large for the gradient) moves the scene (see research/janus.md). With the
diagnostic's bank of 128 renders the bracket is tight at high t only.

The mixture's posterior collapses onto the nearest bank image at small t, so there the "exact" null value is
itself a finite-bank estimate: read the small-t errors with that in mind.

In a run (``generate --diagnose.enabled``) the diagnostic is a training callback, ``PsiDiagnosticCallback``: the
measurements go into metrics.jsonl (``psi_error``) and the picture to psi_error.png (``plot_psi_errors``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..atomic import atomic_path
from ..diffusion import alpha_sigma, mixture_eps
from ..errors import ConfigError, public_names
from ..estimators import ParticleEstimator, ScoreEstimator
from ..priors import Prior, SyntheticPrior
from ..progress import console
from ..training.callbacks import TrainingCallback
from ..training.callbacks import every as every_steps
from .objective import kl_terms

if TYPE_CHECKING:
    from ..training.trainer import Trainer


@dataclass
class PsiDiagnosticConfig:
    """Measure psi against the exact scores during a run, and with the exact synthetic prior the objective ESD
    descends, KL(q_t || p_t) (written to metrics.jsonl and psi_error.png)."""

    enabled: bool = False
    """Measure psi's error every --diagnose.every of the run (off by default: each one renders a fresh bank)."""
    every: float = 0.1
    """Fraction of the run between two measurements."""
    holdout: int = 16
    """Held-out renders the errors are measured on."""
    bank_size: int = 128
    """Fresh renders whose mixture score is the exact null-camera score (and over which the KL is measured)."""
    timesteps: tuple[int, ...] = (100, 300, 500, 700, 900)
    """Timesteps the errors are measured at."""
    baseline_bank: int = 32
    """Renders in the particle estimator a learned psi is compared with (a particle psi is its own baseline)."""
    seed: int = 12345
    """Seed of the diagnostic's own cameras and noise."""

    def __post_init__(self) -> None:
        if not 0 < self.every <= 1:
            raise ConfigError(f"--diagnose.every must be a fraction of the run in (0, 1], got {self.every}")
        if self.holdout < 1 or self.bank_size < 1 or self.baseline_bank < 1 or not self.timesteps:
            raise ConfigError(
                "--diagnose.holdout, --diagnose.bank-size and --diagnose.baseline-bank must be at least 1, and "
                "--diagnose.timesteps needs at least one timestep"
            )
        if not 0 <= self.seed < 2**62:
            raise ConfigError(f"--diagnose.seed must be in [0, 2**62), got {self.seed}")
        if not all(0 <= t < 1000 for t in self.timesteps):
            raise ConfigError(f"--diagnose.timesteps must be in 0..999, got {self.timesteps}")


def relative_error(estimate: Tensor, exact: Tensor) -> float:
    """||estimate - exact|| / ||exact|| over the whole batch."""
    return float((estimate.float() - exact.float()).norm() / exact.float().norm().clamp_min(1e-12))


@torch.no_grad()
def psi_errors(
    estimators: dict[str, ScoreEstimator],
    prior: Prior,
    text: Tensor,
    latents: Tensor,
    cameras: Tensor,
    bank: Tensor,
    timesteps: tuple[int, ...],
    generator: torch.Generator,
    entropy_weight: float = 1.0,
    prior_images: Tensor | None = None,
) -> list[dict]:
    """One row per timestep: ``{"t", "<name>_null", "<name>_camera", "<name>_entropy", "<name>_update"}`` relative
    errors of each estimator (``entropy``: of eps_psi(x_t, t, c) - eps_psi(x_t, t, null), the direction of ESD's
    entropy term; ``update``: of the whole bracket of eq. 9 at lambda = ``entropy_weight``, see module docstring).

    ``latents`` [B, C, h, w] and ``cameras`` [B, 16] are held-out renders; ``bank`` [M, C, h, w] fresh renders of the
    same scene (its mixture score is the exact null score); ``text`` psi's plain text condition. With the prior's
    images (``prior_images``: an exact-density prior, in latent space) each row also has the objective the update
    should descend, Theorem 1's KL terms over the bank (``monitors.objective.kl_terms``): ``kl_marginal_lower``,
    ``kl_marginal_upper`` (the bracket of KL(q_t || p_t)) and ``kl_conditional``."""
    rows = []
    for t in timesteps:
        steps = torch.full((latents.shape[0],), int(t), dtype=torch.long, device=latents.device)
        noise = torch.randn(latents.shape, generator=generator).to(latents.device)
        x_t = prior.add_noise(latents, noise, steps)
        exact_null = mixture_eps(x_t, bank, prior.alphas_cumprod, steps)
        phi = prior.eps(x_t, steps, text.expand(x_t.shape[0], *text.shape[1:]), text[:1], 1.0)
        lam = entropy_weight
        exact_update = phi - lam * exact_null - (1.0 - lam) * noise  # eq. 9's bracket with the exact psi
        row = {"t": int(t)}
        for name, psi in estimators.items():
            camera, null = psi.eps_camera_and_null(x_t, steps, text, cameras, noise)
            row[f"{name}_null"] = relative_error(null, exact_null)
            row[f"{name}_camera"] = relative_error(camera, noise)
            # what ESD adds to VSD (eq. 9): the camera-minus-null difference, the entropy term's direction
            row[f"{name}_entropy"] = relative_error(camera - null, noise - exact_null)
            row[f"{name}_update"] = relative_error(phi - lam * null - (1.0 - lam) * camera, exact_update)
        if prior_images is not None and bank.shape[0] >= 2:
            alpha, sigma = alpha_sigma(prior.alphas_cumprod, steps[:1])
            same_noise = torch.Generator().manual_seed(int(t))  # the same at every measurement; the errors' untouched
            kl = kl_terms(bank.cpu(), prior_images.cpu(), float(alpha), float(sigma), same_noise)
            row.update(
                kl_marginal_lower=kl.marginal_lower,
                kl_marginal_upper=kl.marginal_upper,
                kl_conditional=kl.conditional,
            )
        rows.append(row)
    return rows


class PsiDiagnostic:
    """Measures a run's psi (and the particle baseline) against the exact scores, on its own random streams."""

    def __init__(self, config: PsiDiagnosticConfig, prior: Prior, particle_bank_size: int, entropy_weight: float = 1.0):
        """``entropy_weight``: the run's lambda of eq. 9 (for the update error)."""
        self.config, self.prior, self.entropy_weight = config, prior, entropy_weight
        self.camera_gen = torch.Generator().manual_seed(config.seed)
        self.noise_gen = torch.Generator().manual_seed(config.seed + 1)
        self.particle = ParticleEstimator(prior, bank_size=particle_bank_size)

    def measure(
        self,
        psi: ScoreEstimator,
        text: Tensor,
        render_latents: Callable[[int, torch.Generator], tuple[Tensor, Tensor]],
    ) -> list[dict]:
        """``render_latents(count, generator)`` -> (latents, camera embeddings) of fresh renders of the current
        scene at training cameras drawn from ``generator``."""
        cfg = self.config
        latents, cameras = render_latents(cfg.holdout, self.camera_gen)
        bank, _ = render_latents(cfg.bank_size, self.camera_gen)
        if isinstance(psi, ParticleEstimator):  # the run's psi is the baseline itself
            estimators = {"psi": psi}
        else:
            self.particle.refresh(render_latents(self.particle.bank_size, self.camera_gen)[0])
            estimators = {"psi": psi, "particle": self.particle}
        exact_images = None
        if isinstance(self.prior, SyntheticPrior):  # the prompt's own reference: p(x | y), not the union of all
            exact_images = self.prior.reference_latents(int(text.flatten()[0]))
        return psi_errors(
            estimators,
            self.prior,
            text,
            latents,
            cameras,
            bank,
            cfg.timesteps,
            self.noise_gen,
            self.entropy_weight,
            exact_images,
        )


class PsiDiagnosticCallback(TrainingCallback):
    """A run's psi measured by ``diagnostic`` (``PsiDiagnostic.measure``, on the diagnostic's own random streams, so
    training is unchanged) every ``every`` of the run's ``steps`` steps (``training.callbacks.every``) and at its last
    step, into the step's metrics row as ``psi_error``; renders at the step's resolution, at the run's training
    cameras (``Trainer.render_latents``). At the end of a finished run, psi_error.png from metrics.jsonl: a failure to
    draw it is one yellow line, never a failed run. Put it before ``MetricsWriter``, which writes the row."""

    def __init__(self, diagnostic: PsiDiagnostic, every: float, steps: int):
        self.diagnostic, self.every, self.steps = diagnostic, every_steps(every, steps), steps

    def due(self, step: int) -> bool:
        """Whether psi is measured after ``step`` (steps done)."""
        return step % self.every == 0 or step == self.steps

    def after_step(self, trainer: Trainer, row: dict) -> None:
        if trainer.psi is None or not self.due(trainer.step):
            return
        size = row["resolution"]
        row["psi_error"] = self.diagnostic.measure(
            trainer.psi, trainer.text.plain, lambda count, generator: trainer.render_latents(count, size, generator)
        )

    def on_finish(self, trainer: Trainer) -> None:
        try:  # a picture of the measurements: it never fails a finished run
            plot_psi_errors(trainer.files.metrics, trainer.files.psi_error_plot)
        except Exception as exc:  # noqa: BLE001 (matplotlib's own errors, a truncated metrics line)
            console.print(
                f"[yellow]could not plot psi_error.png: {type(exc).__name__}: {public_names(str(exc))}[/yellow]"
            )


def plot_psi_errors(metrics: Path, out: Path) -> Path | None:
    """psi_error.png from a run's metrics.jsonl: relative error over the run, one panel each for the null-camera
    score, the camera-conditional score, their difference and the update, a line per timestep (psi solid, the
    particle baseline dashed); with an exact prior, a fifth panel with the objective's KL(q_t || p_t).
    Without matplotlib (``pip install esd-gs[plots]``) it says so in one line and returns None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        console.print("[yellow]psi_error.png needs matplotlib: pip install 'esd-gs[plots]'[/yellow]")
        return None
    series = [json.loads(line) for line in Path(metrics).read_text().splitlines() if '"psi_error"' in line]
    if not series:
        return None
    steps = [row["step"] for row in series]
    timesteps = [entry["t"] for entry in series[0]["psi_error"]]
    with_kl = "kl_marginal_upper" in series[0]["psi_error"][0]
    figure = plt.figure(figsize=(19 + 4.8 * with_kl, 3.6))
    first = figure.add_subplot(1, 4 + with_kl, 1)
    axes = [first] + [figure.add_subplot(1, 4 + with_kl, i, sharey=first) for i in range(2, 5)]
    colours = plt.cm.viridis([i / max(1, len(timesteps) - 1) for i in range(len(timesteps))])
    titles = {
        "null": "eps_psi(x_t, t, null) vs exact",
        "camera": "eps_psi(x_t, t, c) vs exact",
        "entropy": "eps_psi(c) - eps_psi(null) vs exact",
        "update": "eq. 9 bracket at the run's lambda vs exact",
    }
    for ax, kind in zip(axes, titles):
        for i, t in enumerate(timesteps):
            for name, style in (("psi", "-"), ("particle", "--")):
                key = f"{name}_{kind}"
                if key in series[0]["psi_error"][i]:
                    values = [row["psi_error"][i][key] for row in series]
                    ax.plot(steps, values, style, color=colours[i], label=f"{name}, t={t}")
        ax.set_title(titles[kind])
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("relative error")
    axes[0].set_ylim(bottom=0)
    axes[-1].legend(fontsize=7, ncol=2)
    if with_kl:  # the objective, from the exact prior: one band (lower to upper estimate) per timestep
        ax = figure.add_subplot(1, 5, 5)
        for i, t in enumerate(timesteps):
            lower = [row["psi_error"][i]["kl_marginal_lower"] for row in series]
            upper = [row["psi_error"][i]["kl_marginal_upper"] for row in series]
            ax.fill_between(steps, lower, upper, color=colours[i], alpha=0.4, label=f"t={t}")
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_title("KL(q_t || p_t), exact prior (bracket)")
        ax.set_xlabel("step")
        ax.set_ylabel("nats per image")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    figure.tight_layout()
    with atomic_path(out) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    plt.close(figure)
    return Path(out)
