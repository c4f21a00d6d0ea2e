"""psi on a UNet prior (Stable Diffusion, or the fitted synthetic UNet): the camera-conditioned LoRA copy of its UNet
that scores the rendered images (ESD Alg. 1).

psi = the base UNet + peft LoRA (rank 4 on attention to_q/to_k/to_v/to_out.0 by default) + a camera MLP

    e(c) = Linear(D, D)(SiLU(Linear(16, D)(c)))      c = the 16-number camera-to-world embedding (cameras.py)

added to the UNet's time embedding (diffusers' ``class_embedding``, fed through ``class_labels``). The null camera
is the zero vector. Both LoRA B matrices and the MLP's last layer start at zero, so at step 0 psi equals its base
model exactly, as Algorithm 1 initialises psi with phi. The LoRA A matrices start as threestudio's (the LoRA of
ProlificDreamer and ESD, diffusers' ``LoRALinearLayer``): A ~ N(0, (1/r)^2), standard deviation 1/r (0.25 at rank 4;
peft's ``init_lora_weights="gaussian"``). peft's default, kaiming-uniform A (standard deviation 1/sqrt(3 * fan_in),
0.016 to 0.032 on Stable Diffusion's attention), is 8 to 16 times smaller there and slows psi's first steps
(``--psi.lora-init kaiming`` keeps it). Trainable parameters are kept in float32 even when the UNet runs in
fp16/bf16.

Training, camera dropout and AdamW come from ``online.OnlineEstimator`` (Alg. 1, eq. 3). psi always gets the plain
prompt (no view suffix, no CFG).

Memory option ``shared``: psi's LoRA lives in phi's own UNet, which ``SharedUNetRoles`` switches between its two
roles: phi (adapters off, no class embedding) and psi (adapters on, the camera MLP as class embedding). The UNet
stays in the role of its last pass, so an ESD step switches twice (to phi, back to psi) and psi's training graph is
built and backpropagated with the adapters on. (peft's ``disable_adapters`` sets ``requires_grad=False`` on every LoRA
weight: a graph built with adapters on and backpropagated after they were switched off gives the LoRA no gradient.)
Otherwise psi has its own UNet, loaded from ``base_model`` (ProlificDreamer uses SD 2.1, v-prediction, for psi and
2.1-base for phi); its noise predictions are converted to eps with phi's schedule, which must therefore be the same
beta schedule, and its text condition comes from phi's text encoder, so the text widths must agree.

Precision: with an fp16 UNet, psi's loss is scaled before backward (``torch.amp.GradScaler``, dynamic scale with an
overflow check) because its gradients otherwise sit at fp16's smallest normal numbers; bf16 and fp32 need no scaling.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from ..atomic import atomic_write_bytes
from ..errors import ConfigError, UserError
from ..priors import Prior, UNetPrior
from ..priors.sources import Loadable, load_first
from .online import CameraEmbedding, OnlineEstimator, OnlineTrainingConfig


class SharedUNetRoles:
    """One UNet playing phi (LoRA adapters off, no class embedding) and psi (adapters on, the camera MLP as class
    embedding).

    ``use(role)`` switches only when the role changes, walking the LoRA layers found once at construction (not the
    whole UNet), so a step switches at most twice. Switching back to psi re-enables the adapters' ``requires_grad``
    (peft's ``set_adapter``), and psi's training graph is built and backpropagated without a switch in between.
    """

    def __init__(self, unet, camera_embedding: nn.Module):
        from peft.tuners.tuners_utils import BaseTunerLayer

        self.unet, self.camera_embedding = unet, camera_embedding
        self.lora_layers = [module for module in unet.modules() if isinstance(module, BaseTunerLayer)]
        self.role = "psi"
        self.switches = 0  # number of role changes so far (for tests and monitoring)
        unet.class_embedding = camera_embedding

    def use(self, role: str) -> None:
        """Put the UNet in ``role`` ("phi" or "psi")."""
        if role == self.role:
            return
        as_psi = role == "psi"
        for layer in self.lora_layers:
            layer.enable_adapters(as_psi)
        self.unet.class_embedding = self.camera_embedding if as_psi else None
        self.role = role
        self.switches += 1


def _check_text_width(prior: UNetPrior, psi_width: int) -> None:
    """psi reads phi's text embeddings: its cross-attention width must be phi's text width."""
    text_width = prior.unet.config.cross_attention_dim
    if text_width != psi_width:
        raise UserError(
            f"psi's base model reads text of width {psi_width} but phi's text encoder gives {text_width}: "
            "use a psi base model of the same Stable Diffusion family as --prior.model (e.g. sd2.1 with sd2.1-base)"
        )


def _check_target_modules(unet, targets) -> None:
    """Each of ``--psi.target-modules`` must name a module of the UNet as peft matches them (the full name, or its
    last dotted parts): a name that matches nothing is refused in one line, with examples of names that exist."""
    names = [name for name, _ in unet.named_modules() if name]
    unknown = [t for t in targets if not any(n == t or n.endswith(f".{t}") for n in names)]
    if not unknown:
        return
    examples: list[str] = []
    for name, module in unet.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            parts = name.split(".")
            short = ".".join(parts[-2:]) if parts[-1].isdigit() else parts[-1]
            if short not in examples:
                examples.append(short)
    raise UserError(
        f"--psi.target-modules {', '.join(unknown)}: no such module in the UNet; its layers include "
        f"{', '.join(examples[:10])}"
    )


LoraInit = Literal["gaussian", "kaiming"]
LORA_INITS: dict[str, str | bool] = {"gaussian": "gaussian", "kaiming": True}
"""``--psi.lora-init`` -> peft's ``init_lora_weights``: A ~ N(0, (1/r)^2) (threestudio's), or kaiming-uniform A
(peft's default); B = 0 in both."""


class CameraLoRAEstimator(OnlineEstimator):
    """eps_psi(x_t, t, c, y) and its online training (see module docstring)."""

    def __init__(self, prior: UNetPrior, config: LoRAPsiConfig, unet=None, scheduler=None):
        from peft import LoraConfig

        self.prior, self.config = prior, config
        self.shared = unet is None
        self.unet = prior.unet if self.shared else unet
        self.unet_forward = self.unet  # or its compiled forward (--compile, priors/compile.py)
        scheduler = scheduler if scheduler is not None else prior.scheduler
        self.prediction_type = scheduler.config.prediction_type
        if not torch.allclose(scheduler.alphas_cumprod.float().cpu(), prior.alphas_cumprod.float().cpu(), atol=1e-6):
            raise UserError("psi's base model must use the same noise (beta) schedule as phi's")
        _check_text_width(prior, self.unet.config.cross_attention_dim)
        _check_target_modules(self.unet, config.target_modules)
        try:
            self.unet.add_adapter(
                LoraConfig(
                    r=config.lora_rank,
                    lora_alpha=config.lora_alpha,
                    target_modules=list(config.target_modules),
                    init_lora_weights=LORA_INITS[config.lora_init],  # B = 0 either way: psi starts as its base
                )
            )
        except ValueError as exc:  # peft: a target it cannot wrap (a whole block, a norm layer)
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise UserError(f"--psi.target-modules cannot take a LoRA: {detail}") from None
        width = self.unet.time_embedding.linear_2.out_features
        self.camera_embedding = CameraEmbedding(width).to(prior.device)
        for param in self.unet.parameters():
            if param.requires_grad:  # the LoRA matrices: train in float32
                param.data = param.data.float()
        self.trainable_parameters = [p for p in self.unet.parameters() if p.requires_grad] + list(
            self.camera_embedding.parameters()
        )
        if self.shared:
            self.roles = SharedUNetRoles(self.unet, self.camera_embedding)
            prior.shared_unet_roles = self.roles  # phi's passes switch the UNet to phi (StableDiffusionPrior.phi_mode)
        else:
            self.roles = None
            self.unet.class_embedding = self.camera_embedding  # psi's own UNet is always psi
        self._init_training()

    @classmethod
    def create(cls, prior: UNetPrior, config: LoRAPsiConfig) -> CameraLoRAEstimator:
        """Shared UNet, or a separate copy from ``config.base_model`` (default: phi's own model)."""
        if config.shared_unet:
            return cls(prior, config)
        from diffusers import DDPMScheduler, UNet2DConditionModel

        base = config.base_model
        if base is None:
            import copy

            unet = copy.deepcopy(prior.unet)
            scheduler = prior.scheduler
        else:
            from ..progress import console

            def precheck(source: Loadable) -> None:  # before downloading a UNet that cannot be used
                config = UNet2DConditionModel.load_config(source.source, subfolder="unet", **source.revision_kwargs())
                _check_text_width(prior, config["cross_attention_dim"])

            def load(source: Loadable):
                path, weights, revision = source.source, source.weight_kwargs(), source.revision_kwargs()
                unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", torch_dtype=prior.dtype, **weights)
                return unet, DDPMScheduler.from_pretrained(path, subfolder="scheduler", **revision)

            source, (unet, scheduler) = load_first(base, "psi", ("unet",), load, console.print, precheck)
            console.print(f"psi: base UNet from {source.describe()}")
        unet = unet.to(prior.device)
        unet.requires_grad_(False)
        unet.eval()
        return cls(prior, config, unet=unet, scheduler=scheduler)

    # ------------------------------------------------------------------ inference
    def _forward(self, x_t: Tensor, timesteps: Tensor, text: Tensor, cameras: Tensor) -> Tensor:
        """Raw psi output (eps or v) for camera embeddings [B, 16] (zeros = null camera)."""
        if self.roles is not None:
            self.roles.use("psi")
        return self.unet_forward(
            x_t.to(self.prior.dtype), timesteps, encoder_hidden_states=text.to(self.prior.dtype), class_labels=cameras
        ).sample

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Tensor]:
        """LoRA weights (peft names, prefixed ``lora.``) and the camera MLP (prefixed ``camera.``)."""
        from peft.utils import get_peft_model_state_dict

        state = {
            f"lora.{k}": v.detach().float().cpu().contiguous() for k, v in get_peft_model_state_dict(self.unet).items()
        }
        state.update(
            {
                f"camera.{k}": v.detach().float().cpu().contiguous()
                for k, v in self.camera_embedding.state_dict().items()
            }
        )
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        from peft.utils import set_peft_model_state_dict

        lora = {k[len("lora.") :]: v for k, v in state.items() if k.startswith("lora.")}
        camera = {k[len("camera.") :]: v for k, v in state.items() if k.startswith("camera.")}
        if not lora or not camera:
            raise UserError("psi state is missing its LoRA or camera weights")
        result = set_peft_model_state_dict(self.unet, {k: v.to(self.prior.device) for k, v in lora.items()})
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise UserError(f"psi state has {len(unexpected)} LoRA weights that do not fit this model")
        self.camera_embedding.load_state_dict({k: v.to(self.prior.device) for k, v in camera.items()})

    def save(self, path: str | Path) -> None:
        """Write psi (LoRA + camera MLP) to a safetensors file, atomically (``atomic.atomic_write_bytes``)."""
        from safetensors.torch import save

        data = save(self.state_dict(), metadata={"format": "esd-gs-psi", "rank": str(self.config.lora_rank)})
        atomic_write_bytes(path, [data])

    def load(self, path: str | Path) -> None:
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:  # OSError, and safetensors' own error types for bad files
            raise UserError(f"cannot read psi weights from {path}: {exc}") from None
        self.load_state_dict(state)


@dataclass
class LoRAPsiConfig(OnlineTrainingConfig):
    """The paper's learned psi on a UNet prior: a LoRA copy of the UNet with a camera MLP, trained online."""

    # psi:lora; the online-training settings (--psi.lr etc.) are OnlineTrainingConfig's, shared with psi:residual.

    name: ClassVar[str] = "lora"

    lora_rank: int = 4
    """LoRA rank r."""
    lora_alpha: float = 4.0
    """LoRA scaling numerator (update scaled by alpha / r)."""
    target_modules: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    """UNet attention projections that get LoRA."""
    # gaussian: threestudio's LoRA (ProlificDreamer, ESD), A with standard deviation 1/r; kaiming: peft's default,
    # A kaiming-uniform (std 1/sqrt(3 * fan_in), 8-16x smaller on SD 2.1), esd-gs's init before issue 31. B = 0.
    lora_init: LoraInit = "gaussian"
    """Initial LoRA A matrices: gaussian (N(0, 1/r^2), the reference's) or kaiming (peft's default); B starts at 0."""
    shared_unet: bool = True
    """Put psi's LoRA into phi's UNet (half the memory); phi's passes switch it off."""
    # A family name such as sd2.1 (ProlificDreamer's SD 2.1, v-prediction), a Hub id or a folder.
    base_model: str | None = None
    """Separate base model for psi (e.g. sd2.1); None = a copy of phi's model. Ignored when shared_unet is on."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lora_rank < 1 or not self.lora_alpha > 0:
            raise ConfigError(
                f"--psi.lora-rank must be >= 1 and --psi.lora-alpha > 0, got {self.lora_rank}, {self.lora_alpha}"
            )

    def build(self, prior: Prior) -> CameraLoRAEstimator:
        if not isinstance(prior, UNetPrior):
            raise UserError(
                f"psi:lora needs a UNet prior (Stable Diffusion or synthetic-unet), not {type(prior).__name__}"
            )
        return CameraLoRAEstimator.create(prior, self)
