"""theta's starting point (``--init``): each start implements ``base.InitConfig`` and builds the initial Gaussians.

- ``ball.BallInit`` (``init:ball``, the default): random Gaussians in a ball;
- ``ply.PlyInit`` (``init:ply``): the Gaussians of a 3DGS .ply file;
- ``shap_e.ShapEInit`` (``init:shap-e``): a coarse object from Shap-E, as GaussianDreamer starts.

``INITS`` is the table of them, by name; ``points.py`` turns coloured points into Gaussians for the starts from a 3D
prior.
"""

from __future__ import annotations

from .ball import BallInit
from .base import InitConfig, InitContext
from .ply import PlyInit
from .shap_e import ShapEInit

INITS: dict[str, type[InitConfig]] = {config.name: config for config in (BallInit, PlyInit, ShapEInit)}
"""Every start's config, by its name (``init:NAME``; ``name: NAME`` under ``init:`` in a saved config)."""

__all__ = ["INITS", "BallInit", "InitConfig", "InitContext", "PlyInit", "ShapEInit"]
