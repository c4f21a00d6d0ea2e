"""A tiny, randomly initialised Shap-E pipeline directory (diffusers' ``ShapEPipeline``), built offline from configs,
for ``init:shap-e``'s tests: loaded through the same ``from_pretrained`` path as ``openai/shap-e``.

What is built (``path`` then holds a diffusers pipeline directory with a ``model_index.json``): the text encoder
``CLIPTextModelWithProjection`` (``tiny_sd``'s byte-level tokenizer and vocabulary, width 16), the denoiser
``PriorTransformer`` (one layer; latents of 32 x 16), the ``HeunDiscreteScheduler`` of openai/shap-e's scheduler
config, and the ``ShapERenderer`` (an MLP of width 8 whose first four layers' weights are projected from the latent)
with its marching-cubes table, its signed distance lifted (``SDF_LIFT``) so that it has a surface. The sizes follow
diffusers' own fast tests of the pipeline; the full-size shapes are ``full_size_shap_e_components`` (weights random:
for timing, never quality).

The marching-cubes table: a ``ShapERenderer`` built from its config has an empty one (``mesh_decoder.cases`` and
``masks`` are zero buffers that only a checkpoint fills), so the writer fills it (``marching_cubes_table``) before
``save_pretrained``, as openai/shap-e's weights carry theirs. ``with_table=False`` writes the empty one (a renderer that
can make no mesh, which ``init:shap-e`` refuses in one line).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from .tiny_sd import tiny_clip_tokenizer, tiny_text_encoder_config

SHAP_E_SCHEDULER = dict(
    beta_schedule="exp",
    num_train_timesteps=1024,
    prediction_type="sample",
    use_karras_sigmas=True,
    clip_sample=True,
    clip_sample_range=1.0,
)
"""``HeunDiscreteScheduler`` settings of openai/shap-e (its scheduler/scheduler_config.json)."""

SDF_LIFT = 0.45
"""Added to the tiny renderer's signed distance before its tanh: its random field lies in about [-1, -0.3] over the
box (all outside: no mesh), and lifted by this much a part of the box is inside, whatever the latent."""

FACES = (  # each face of the unit cube: its four corners in order around it (corner index = x + 2y + 4z)
    (0, 2, 6, 4),  # x = 0
    (1, 3, 7, 5),  # x = 1
    (0, 1, 5, 4),  # y = 0
    (2, 3, 7, 6),  # y = 1
    (0, 1, 3, 2),  # z = 0
    (4, 5, 7, 6),  # z = 1
)


def _edge_of(a: int, b: int) -> int:
    """The index (0..11) of the cube edge between corners ``a`` and ``b`` in diffusers' ``MeshDecoder`` order: edges
    along x at (y, z) = (0,0), (1,0), (0,1), (1,1), then along y at (x, z) in the same order, then along z at (x, y)."""
    low, diff = min(a, b), a ^ b
    x, y, z = low & 1, (low >> 1) & 1, (low >> 2) & 1
    if diff == 1:
        return y + 2 * z
    if diff == 2:
        return 4 + x + 2 * z
    return 8 + x + 2 * y


def marching_cubes_table(max_triangles: int = 5) -> tuple[Tensor, Tensor]:
    """A marching-cubes lookup table in ``MeshDecoder``'s layout: ``cases`` [256, 5, 3] (edge indices of each case's
    triangles) and ``masks`` [256, 5] (which of them exist); a case's bit k is set when corner k is inside.

    Built, not copied: on each face of the cube the crossed edges are joined in pairs (on a face with four, each inside
    corner is cut off on its own), the pairs chain into closed loops around the surface, and each loop is cut into a
    fan of triangles."""
    cases = torch.zeros(256, max_triangles, 3, dtype=torch.long)
    masks = torch.zeros(256, max_triangles, dtype=torch.bool)
    for case in range(256):
        inside = [(case >> corner) & 1 for corner in range(8)]
        links: dict[int, list[int]] = {}
        for face in FACES:
            crossed = []
            for i in range(4):
                a, b = face[i], face[(i + 1) % 4]
                if inside[a] != inside[b]:
                    crossed.append((i, _edge_of(a, b)))
            if len(crossed) == 2:
                pairs = [(crossed[0][1], crossed[1][1])]
            elif len(crossed) == 4:  # two inside corners on a diagonal: cut each off with the two edges beside it
                pairs = []
                for i in range(4):
                    if inside[face[i]]:
                        before = _edge_of(face[(i - 1) % 4], face[i])
                        after = _edge_of(face[i], face[(i + 1) % 4])
                        pairs.append((before, after))
            else:
                pairs = []
            for a, b in pairs:
                links.setdefault(a, []).append(b)
                links.setdefault(b, []).append(a)
        triangles, seen = [], set()
        for start in sorted(links):
            if start in seen:
                continue
            loop, previous, current = [start], None, start
            seen.add(start)
            while True:
                options = [e for e in links[current] if e != previous]
                following = options[0] if options else links[current][0]
                if following == start:
                    break
                loop.append(following)
                seen.add(following)
                previous, current = current, following
            triangles += [(loop[0], loop[i], loop[i + 1]) for i in range(1, len(loop) - 1)]
        if len(triangles) > max_triangles:
            raise AssertionError(f"case {case} needs {len(triangles)} triangles")
        for i, triangle in enumerate(triangles):
            cases[case, i] = torch.tensor(triangle)
            masks[case, i] = True
    return cases, masks


PRIOR_SETTINGS = dict(
    additional_embeddings=0,
    time_embed_act_fn="gelu",
    norm_in_type="layer",
    embedding_proj_norm_type=None,
    encoder_hid_proj_type=None,
    added_emb_type=None,
)
"""What Shap-E's ``PriorTransformer`` sets apart from unCLIP's defaults, whatever its size (openai/shap-e's
prior/config.json)."""


def shap_e_components(text_config: dict, prior_config: dict, renderer_config: dict, with_table: bool = True) -> dict:
    """A ``ShapEPipeline``'s components but its tokenizer, randomly initialised from these configs (the text encoder's
    ``CLIPTextConfig``, the ``PriorTransformer``'s size, the ``ShapERenderer``'s), with the marching-cubes table."""
    from diffusers import HeunDiscreteScheduler, PriorTransformer
    from diffusers.pipelines.shap_e import ShapERenderer
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    renderer = ShapERenderer(**renderer_config)
    if with_table:
        cases, masks = marching_cubes_table()
        renderer.mesh_decoder.cases.copy_(cases)
        renderer.mesh_decoder.masks.copy_(masks)
    return {
        "prior": PriorTransformer(**PRIOR_SETTINGS, **prior_config),
        "text_encoder": CLIPTextModelWithProjection(CLIPTextConfig(**text_config)),
        "shap_e_renderer": renderer,
        "scheduler": HeunDiscreteScheduler(**SHAP_E_SCHEDULER),
    }


def tiny_shap_e_components(seed: int = 0, with_table: bool = True, lift: float = SDF_LIFT) -> dict:
    """The components of a tiny ``ShapEPipeline`` but its tokenizer (module docstring), initialised from ``seed``;
    ``lift``: added to its signed distance (a large negative one leaves the whole box outside: no mesh)."""
    prior = dict(
        num_attention_heads=2,
        attention_head_dim=16,
        embedding_dim=16,
        num_embeddings=32,
        embedding_proj_dim=16,
        time_embed_dim=64,
        num_layers=1,
        clip_embed_dim=32,
    )
    renderer = dict(param_shapes=((8, 93), (8, 8), (8, 8), (8, 8)), d_latent=16, d_hidden=8, background=(0.1,) * 3)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        parts = shap_e_components(tiny_text_encoder_config(hidden_size=16), prior, renderer, with_table)
    with torch.no_grad():  # its random signed distance lies in about [-1, -0.3]: lifted, part of the box is inside
        parts["shap_e_renderer"].mlp.mlp[-1].bias[0] += lift
    return parts


def write_tiny_shap_e(path: str | Path, seed: int = 0, with_table: bool = True, lift: float = SDF_LIFT) -> Path:
    """Write a tiny ``ShapEPipeline`` directory at ``path`` (``save_pretrained``) and return it (``with_table`` and
    ``lift``: ``tiny_shap_e_components``)."""
    from diffusers import ShapEPipeline

    path = Path(path)
    tokenizer = tiny_clip_tokenizer(path / "tokenizer")
    ShapEPipeline(tokenizer=tokenizer, **tiny_shap_e_components(seed, with_table, lift)).save_pretrained(path)
    return path


def full_size_shap_e_components() -> dict:
    """openai/shap-e's component shapes (its config files) with random weights, but its tokenizer: for timing
    ``init:shap-e`` on a machine without the weights (benchmarks/init_cost.py). The text encoder is CLIP ViT-L/14's
    with the tiny vocabulary."""
    text = {
        **tiny_text_encoder_config(hidden_size=768),
        "projection_dim": 768,
        "intermediate_size": 3072,
        "num_attention_heads": 12,
        "num_hidden_layers": 12,
        "hidden_act": "quick_gelu",
    }
    prior = dict(
        num_attention_heads=16,
        attention_head_dim=64,
        num_layers=24,
        embedding_dim=1024,
        num_embeddings=1024,
        time_embed_dim=4096,
        embedding_proj_dim=768,
        clip_embed_dim=2048,
        dropout=0.0,
    )
    return shap_e_components(text, prior, {})
