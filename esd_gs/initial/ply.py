"""``init:ply``: start from the Gaussians of a 3DGS .ply file (a finished run's scene.ply, another tool's splats),
as they are: the run goes on training them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..errors import UserError
from ..io import PlyFormatError, UpAxis, read_ply
from ..scene import GaussianScene
from .base import InitConfig, InitContext


@dataclass
class PlyInit(InitConfig):
    """The Gaussians of a 3DGS .ply file, as they are (esd-gs's own scene.ply, or another tool's splats)."""

    name: ClassVar[str] = "ply"
    starting: ClassVar[str] = "reading the Gaussians of a .ply file"

    path: Path | None = None
    """The 3DGS .ply file to start from (required)."""
    up: UpAxis = "-y"
    """The file's up axis: -y (what esd-gs exports and splat viewers expect), y or z."""

    def check_run(self, max_gaussians: int) -> None:
        if self.path is None:
            raise UserError("init:ply needs the file to start from: --init ply PATH (or --init.path PATH)")
        if not self.path.is_file():
            raise UserError(f"--init.path {self.path}: no such file")

    def describe(self) -> str:
        return f"reading the Gaussians of {self.path}"

    def build(self, context: InitContext) -> GaussianScene:
        try:
            return read_ply(self.path, up=self.up)
        except PlyFormatError as exc:
            raise UserError(f"--init.path: {exc}") from None
