"""What every learned psi shares: camera dropout, the noise-prediction loss (eq. 3) and AdamW, run online on the
renders of each step (ESD Algorithm 1).

Training step: on detached rendered latents z, t ~ U[0, T) (or within ``timestep_window`` of the step's distillation
t, ``draw_timesteps``), x_t = alpha_t z + sigma_t eps, the MSE between the
network's output and its target (eps, or v = alpha_t eps - sigma_t z for a v-prediction network,
``diffusion.prediction_target``), each sample weighted by eq. 3's omega(t) of ``loss_weighting``
(``diffusion.loss_weight``: 1, or the MSE of the implied clean image). The whole batch's camera is replaced by the
null camera with probability ``p_null_camera``, so psi learns both q(x | c, y) and q(x | y) (the classifier-free
trick of eq. 9). With an fp16 network the loss is scaled (``torch.amp.GradScaler``) so that the gradients do not
underflow; a step whose scaled gradients overflowed (inf/nan) is skipped by the scaler, which halves its scale, and
counted in ``scaler_skipped`` (in the metrics rows as ``psi_scaler_skipped``, and in checkpoints).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..cameras import EMBEDDING_SIZE, null_embedding
from ..diffusion import LossWeighting, PredictionType, eps_from_prediction, loss_weight, prediction_target
from ..errors import ConfigError
from ..optim_state import optimizer_from_flat, optimizer_to_flat
from ..priors import Prior
from .base import EstimatorConfig, ScoreEstimator


@dataclass
class OnlineTrainingConfig(EstimatorConfig):
    """How a learned psi trains online on the renders (Alg. 1): the settings every learned estimator shares. The
    learned estimators' configs (``LoRAPsiConfig``, ``ResidualPsiConfig``) extend it, so these read ``--psi.lr`` etc.
    whichever one is chosen."""

    lr: float = 1e-4
    """AdamW learning rate for psi's trained weights and its camera MLP."""
    betas: tuple[float, float] = (0.9, 0.99)
    """AdamW betas."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    p_null_camera: float = 0.1
    """Probability of training a batch with the null camera (classifier-free camera dropout)."""
    train_steps_per_iter: int = 1
    """psi updates per 3D step (during --psi.train-steps-until of the run; one a step after it)."""
    # Several updates cost their number of psi passes; giving them only to the start of the run (where the scene
    # changes fastest, and DreamTime's t is highest) costs k u + (1 - u) updates a step on average.
    train_steps_until: float = 1.0
    """Share of the run, in (0, 1], with --psi.train-steps-per-iter updates a step, one after it; 1 = the whole run."""
    # A window w draws t uniformly from [t_d - w, t_d + w], clipped to [0, T), around each sample's distillation
    # timestep t_d of the step: psi is trained where the update reads it (see research/janus.md).
    timestep_window: int | None = None
    """Which t psi trains at: None = t ~ U[0, T) (Alg. 1); w = within w of each sample's distillation t."""
    # prediction is how ProlificDreamer trains its LoRA (eps or v, the network's own target); x0 weighs every t the
    # same, so the noisy low-t samples do not drown the high-t ones.
    loss_weighting: LossWeighting = "prediction"
    """omega(t) of psi's loss (eq. 3): prediction (MSE to eps or v) or x0 (clean image's MSE; synthetic default)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.p_null_camera <= 1.0:
            raise ConfigError(f"--psi.p-null-camera must be in [0, 1], got {self.p_null_camera}")
        if not (math.isfinite(self.lr) and self.lr > 0) or self.train_steps_per_iter < 1:
            raise ConfigError("--psi.lr must be > 0 and --psi.train-steps-per-iter at least 1")
        if not 0.0 < self.train_steps_until <= 1.0:
            raise ConfigError(f"--psi.train-steps-until must be in (0, 1], got {self.train_steps_until}")
        if self.timestep_window is not None and self.timestep_window < 0:
            raise ConfigError(f"--psi.timestep-window must be >= 0 (or None), got {self.timestep_window}")
        if not all(0 <= b < 1 for b in self.betas) or self.weight_decay < 0:
            raise ConfigError(
                f"--psi.betas must be in [0, 1) and --psi.weight-decay >= 0, got {self.betas}, {self.weight_decay}"
            )

    def check_run(self) -> None:
        if self.train_steps_until < 1.0 and self.train_steps_per_iter == 1:  # it would change nothing
            raise ConfigError(
                f"--psi.train-steps-until {self.train_steps_until:g} limits the extra updates of "
                "--psi.train-steps-per-iter, which is 1: give it a value above 1"
            )


class CameraEmbedding(nn.Module):
    """Camera embedding [B, 16] -> [B, width]: Linear(width, width)(SiLU(Linear(16, width)(c))), the last layer
    starting at zero (so a fresh psi ignores the camera)."""

    def __init__(self, width: int, in_features: int = EMBEDDING_SIZE):
        super().__init__()
        self.linear_1 = nn.Linear(in_features, width)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(width, width)
        nn.init.zeros_(self.linear_2.weight)
        nn.init.zeros_(self.linear_2.bias)

    def forward(self, camera: Tensor) -> Tensor:
        return self.linear_2(self.act(self.linear_1(camera.float())))


class OnlineEstimator(ScoreEstimator):
    """A learned psi (see the module docstring).

    Subclasses set ``prior``, ``config``, ``prediction_type`` and ``trainable_parameters``, call ``_init_training``,
    and provide ``_forward`` plus ``state_dict`` / ``load_state_dict`` for their weights.
    """

    trains: ClassVar[bool] = True
    prior: Prior
    config: OnlineTrainingConfig
    prediction_type: PredictionType
    trainable_parameters: list[nn.Parameter]

    def _init_training(self) -> None:
        self.optimizer = torch.optim.AdamW(
            self.trainable_parameters, lr=self.config.lr, betas=self.config.betas, weight_decay=self.config.weight_decay
        )
        # fp16 activations: scale the loss so that the LoRA's gradients do not underflow (bf16 has fp32's range).
        device_type = torch.device(self.prior.device).type
        self.grad_scaler = torch.amp.GradScaler(device_type, enabled=self.prior.dtype == torch.float16)
        self.null_rate_counter = [0, 0]  # [null batches, all batches], for monitoring
        self.scaler_skipped = 0  # steps the GradScaler skipped (fp16 only: inf/nan in the scaled gradients)

    def _forward(self, x_t: Tensor, timesteps: Tensor, text: Tensor, cameras: Tensor) -> Tensor:
        """The network's raw output (eps, or v for v-prediction) for camera embeddings [B, 16] (zeros = null)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Tensor]:
        """The learned weights (float32, CPU)."""
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ scores
    def eps(
        self, x_t: Tensor, timesteps: Tensor, text: Tensor, cameras: Tensor | None, noise: Tensor | None = None
    ) -> Tensor:
        """eps_psi(x_t, t, c, y) float32; ``cameras`` [B, 16] or None for the null camera (``noise`` unused)."""
        batch = x_t.shape[0]
        if cameras is None:
            cameras = null_embedding(batch, x_t.device)
        with torch.no_grad():
            out = self._forward(x_t, timesteps, text.expand(batch, *text.shape[1:]), cameras.float())
        return eps_from_prediction(out, x_t, self.prior.alphas_cumprod, timesteps, self.prediction_type)

    def eps_camera_and_null(
        self, x_t: Tensor, timesteps: Tensor, text: Tensor, cameras: Tensor, noise: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Both psi terms of eq. 9 in one batched pass: (eps_psi(x_t, t, c, y), eps_psi(x_t, t, null, y))."""
        batch = x_t.shape[0]
        eps = self.eps(
            torch.cat([x_t, x_t]),
            torch.cat([timesteps, timesteps]),
            text.expand(2 * batch, *text.shape[1:]),
            torch.cat([cameras.float(), null_embedding(batch, cameras.device)]),
        )
        return eps[:batch], eps[batch:]

    # ------------------------------------------------------------------ training
    def update(
        self,
        latents: Tensor,
        text: Tensor,
        cameras: Tensor,
        generator: torch.Generator | None = None,
        distill_t: Tensor | None = None,
        progress: float = 0.0,
    ) -> float:
        """``config.train_steps_per_iter`` training steps on this step's renders while ``progress`` (the share of the
        run done) is under ``config.train_steps_until``, one after; returns the last loss."""
        loss = None
        early = progress < self.config.train_steps_until
        for _ in range(self.config.train_steps_per_iter if early else 1):
            loss = self.train_step(latents, text, cameras, generator, distill_t)
        return loss

    def draw_timesteps(
        self, batch: int, distill_t: Tensor | None, generator: torch.Generator | None, device: torch.device
    ) -> Tensor:
        """psi's training timesteps [batch] on ``device``: t ~ U[0, T) (Alg. 1); or, with ``config.timestep_window``
        w, each sample's t ~ U[max(t_d - w, 0), min(t_d + w, T - 1)] around its distillation timestep t_d
        (``distill_t`` [batch]), uniform inside the window clipped to [0, T)."""
        gen_device = generator.device if generator is not None else device
        num_train, window = self.prior.num_train_timesteps, self.config.timestep_window
        if window is None:
            timesteps = torch.randint(0, num_train, (batch,), generator=generator, device=gen_device)
            return timesteps.to(device)
        if distill_t is None:
            raise ValueError("psi.timestep_window needs the step's distillation timesteps (distill_t)")
        centre = distill_t.to(gen_device).long()
        lo, hi = (centre - window).clamp(min=0), (centre + window).clamp(max=num_train - 1)
        u = torch.rand((batch,), generator=generator, device=gen_device)
        return (lo + (u * (hi - lo + 1).float()).long().clamp(max=hi - lo)).to(device)

    def train_step(
        self,
        latents: Tensor,
        text: Tensor,
        cameras: Tensor,
        generator: torch.Generator | None = None,
        distill_t: Tensor | None = None,
    ) -> float:
        """One update (module docstring) on detached latents [B, C, h, w] with camera embeddings [B, 16] (and the
        step's distillation timesteps ``distill_t`` [B], which only ``config.timestep_window`` reads); returns the
        loss."""
        latents = latents.detach().float()
        batch = latents.shape[0]
        gen_device = generator.device if generator is not None else latents.device
        timesteps = self.draw_timesteps(batch, distill_t, generator, latents.device)
        noise = torch.randn(latents.shape, generator=generator, device=gen_device).to(latents.device)
        drop = bool(torch.rand((), generator=generator, device=gen_device) < self.config.p_null_camera)
        self.null_rate_counter[0] += int(drop)
        self.null_rate_counter[1] += 1
        condition = null_embedding(batch, latents.device) if drop else cameras.float()
        loss = self.loss(latents, text, condition, timesteps, noise)
        self.optimizer.zero_grad(set_to_none=True)
        self.grad_scaler.scale(loss).backward()  # identity unless the UNet runs in fp16
        self.grad_scaler.step(self.optimizer)  # unscales the fp32 gradients; skips the step on overflow
        if self.grad_scaler.is_enabled():
            scale = self.grad_scaler.get_scale()
            self.grad_scaler.update()
            self.scaler_skipped += int(self.grad_scaler.get_scale() < scale)  # update() lowers it after a skip only
        return float(loss.detach())

    def loss(self, latents: Tensor, text: Tensor, cameras: Tensor, timesteps: Tensor, noise: Tensor) -> Tensor:
        """psi's training loss (eq. 3, the module docstring) on clean latents [B, C, h, w] noised with ``noise`` at
        ``timesteps`` [B], for camera embeddings [B, 16] (zeros = null): a scalar with gradient."""
        batch = latents.shape[0]
        x_t = self.prior.add_noise(latents, noise, timesteps)
        target = prediction_target(latents, noise, self.prior.alphas_cumprod, timesteps, self.prediction_type)
        out = self._forward(x_t, timesteps, text.expand(batch, *text.shape[1:]), cameras)
        if self.config.loss_weighting == "prediction":  # the plain MSE, bit for bit as before the option existed
            return torch.nn.functional.mse_loss(out.float(), target.float())
        # eq. 3's omega(t) of --psi.loss-weighting, a factor on each sample's MSE to the network's own target
        weight = loss_weight(self.prior.alphas_cumprod, timesteps, self.prediction_type, self.config.loss_weighting)
        return (weight * (out.float() - target.float()).pow(2).flatten(1).mean(dim=1)).mean()

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> tuple[dict[str, Tensor], dict]:
        """The weights, AdamW's tensors (``optim.psi.*``), and in JSON AdamW's settings, the dropout counter and the
        loss scaler (its state and the steps it skipped)."""
        tensors = dict(self.state_dict())
        flat, optimizer_meta = optimizer_to_flat("psi", self.optimizer)
        tensors.update(flat)
        meta = {"optimizer": optimizer_meta, "null_rate_counter": list(self.null_rate_counter)}
        if self.grad_scaler.is_enabled():
            meta["grad_scaler"] = self.grad_scaler.state_dict()
            meta["scaler_skipped"] = self.scaler_skipped
        return tensors, meta

    def load_checkpoint_state(self, tensors: dict[str, Tensor], meta: dict) -> None:
        self.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("optim.")})
        optimizer_from_flat("psi", self.optimizer, tensors, meta["optimizer"], self.prior.device)
        self.null_rate_counter = list(meta["null_rate_counter"])
        if self.grad_scaler.is_enabled() and meta.get("grad_scaler"):
            self.grad_scaler.load_state_dict(meta["grad_scaler"])
        self.scaler_skipped = int(meta.get("scaler_skipped", 0))  # 0: written before it was counted, or no scaler
