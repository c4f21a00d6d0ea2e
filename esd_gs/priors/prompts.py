"""View-dependent prompting (DreamFusion): the text condition of phi names the side the camera sees.

Camera azimuth 0 is the object's front (``cameras.py``). A view is
``overhead`` when its elevation is above 60 deg, else ``front`` within 30 deg of azimuth 0, ``back`` within
30 deg of azimuth 180, otherwise ``side``. The prompt becomes "<prompt>, <direction> view".
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..cameras import wrap_azimuth

DIRECTIONS = ("front", "side", "back", "overhead")
FRONT_HALF_WIDTH = 30.0
BACK_HALF_WIDTH = 30.0
OVERHEAD_ELEVATION = 60.0


def view_direction_index(azimuth: Tensor, elevation: Tensor) -> Tensor:
    """[B] azimuth and elevation (degrees) -> [B] index into ``DIRECTIONS``."""
    az = wrap_azimuth(azimuth)  # [-180, 180)
    index = torch.full(az.shape, DIRECTIONS.index("side"), dtype=torch.long)
    index[az.abs() <= FRONT_HALF_WIDTH] = DIRECTIONS.index("front")
    index[az.abs() >= 180.0 - BACK_HALF_WIDTH] = DIRECTIONS.index("back")
    index[elevation > OVERHEAD_ELEVATION] = DIRECTIONS.index("overhead")
    return index


def view_prompts(prompt: str) -> list[str]:
    """The four view-dependent variants of ``prompt``, in ``DIRECTIONS`` order."""
    return [f"{prompt}, {direction} view" for direction in DIRECTIONS]
