"""Shap-E through diffusers: load a ``ShapEPipeline`` from its sources (``priors.sources``, Shap-E's layout) and
turn a prompt into a coloured mesh. Imported only by ``init:shap-e`` runs (diffusers is imported here, not above)."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from ..errors import UserError
from ..priors.sources import SHAP_E_LAYOUT, Loadable, is_gpu_out_of_memory, load_first

SHAP_E_PARTS = ("prior", "text_encoder", "shap_e_renderer")
"""The parts of Shap-E with weights (the tokenizer and scheduler are small files beside them)."""


def load_shap_e(model: str, device: torch.device, precision: str, announce: Callable[[str], None]):
    """diffusers' ``ShapEPipeline`` from the first source of ``model`` that loads, on ``device``; ``precision``
    auto = fp16 on CUDA, fp32 elsewhere. A renderer without its marching-cubes table (the table lives in its weights;
    a renderer built without them has an empty one) is one ``UserError``: it could make no mesh."""
    from diffusers import ShapEPipeline

    from ..priors.stable_diffusion import quiet_loading

    quiet_loading()
    dtype = torch.float16 if precision == "fp16" or (precision == "auto" and device.type == "cuda") else torch.float32

    def load(source: Loadable):
        with warnings.catch_warnings():  # diffusers 0.42 renames torch_dtype (older ones know only it)
            warnings.simplefilter("ignore", FutureWarning)
            pipe = ShapEPipeline.from_pretrained(source.source, torch_dtype=dtype, **source.weight_kwargs())
        pipe.set_progress_bar_config(disable=True)
        return pipe

    loaded, pipe = load_first(model, "init", SHAP_E_PARTS, load, announce, layout=SHAP_E_LAYOUT)
    if not bool(pipe.shap_e_renderer.mesh_decoder.masks.any()):
        raise UserError(
            f"Shap-E's renderer from {loaded.source} has no marching-cubes table (mesh_decoder.masks is empty), so it "
            "cannot make a mesh: use a complete copy of openai/shap-e"
        )
    announce(f"init: Shap-E from {loaded.describe()}")
    try:
        return pipe.to(device)
    except Exception as exc:
        if is_gpu_out_of_memory(exc):
            raise UserError("Shap-E does not fit in the GPU's free memory: start from init:ball") from None
        raise


@torch.no_grad()
def shap_e_mesh(
    pipe, prompt: str, steps: int, guidance_scale: float, grid_size: int, seed: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """Shap-E's mesh for ``prompt``: (vertices [V, 3] in Shap-E's axes, faces [F, 3] long, linear RGB [V, 3]), float32
    on the CPU; V = F = 0 when its signed distance field has no surface inside the box. The latent is drawn from
    ``seed`` (a CPU generator: the same on every device)."""
    generator = torch.Generator().manual_seed(seed)
    latents = pipe(
        prompt,
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        generator=generator,
        output_type="latent",
    ).images
    empty = (torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, 3))
    try:
        mesh = pipe.shap_e_renderer.decode_to_mesh(latents[0][None], device, grid_size=grid_size)
    except ValueError as exc:  # diffusers colours the vertices with torch.cat over none: a mesh without vertices
        if "non-empty list" not in str(exc):
            raise
        return empty
    if mesh.faces.shape[0] == 0:
        return empty
    colors = torch.stack([mesh.vertex_channels[c] for c in ("R", "G", "B")], dim=1)
    return mesh.verts.float().cpu(), mesh.faces.long().cpu(), colors.float().cpu()
