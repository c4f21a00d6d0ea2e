"""Random Gaussian scenes with every parameter perturbed, for comparing renderers and their gradients."""

from __future__ import annotations

import torch

from ..scene import GaussianScene


def random_scene(n: int, sh_degree: int, seed: int, dtype: torch.dtype = torch.float32) -> GaussianScene:
    """n Gaussians in a ball of radius 0.6 with random colours (SH up to ``sh_degree``), rotations, opacities and
    log-scales spread around their nearest-neighbour values; deterministic in ``seed``."""
    g = torch.Generator().manual_seed(seed)
    scene = GaussianScene.random_ball(n, radius=0.6, opacity=0.5, sh_degree=sh_degree, generator=g)
    with torch.no_grad():
        for key, std in (("sh0", 1.0), ("shN", 0.3), ("quats", 1.0), ("opacities", 1.0)):
            scene.params[key].copy_(torch.randn(scene.params[key].shape, generator=g) * std)
        scene.params["scales"].add_(torch.randn(n, 3, generator=g) * 0.3)
    return scene.to(dtype)
