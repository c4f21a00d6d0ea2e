"""File formats: the 3DGS ``.ply`` (read and write), antimatter15's ``.splat`` (write) and the up-axis conversion."""

from .axes import UpAxis, transform_scene_params, up_rotation
from .ply import PlyFormatError, read_ply, write_ply
from .splat import read_splat, write_splat

__all__ = [
    "PlyFormatError",
    "UpAxis",
    "read_ply",
    "read_splat",
    "transform_scene_params",
    "up_rotation",
    "write_ply",
    "write_splat",
]
