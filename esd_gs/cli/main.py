"""The ``esd-gs`` command: one tyro subcommand per job.

Every user-facing failure (bad flag values, unreadable files, missing models) ends as one line on stderr and exit
code 2; an interrupt exits 130. Programming errors still show their traceback.
"""

from __future__ import annotations

import sys

import tyro

from ..errors import UserError
from ..io import PlyFormatError
from .export_cmd import ExportArgs, run_export
from .render_cmd import RenderArgs, run_render

COMMANDS = {
    "render": (RenderArgs, run_render),
    "export": (ExportArgs, run_export),
}


def main(argv: list[str] | None = None) -> int:
    args = tyro.extras.subcommand_cli_from_dict(
        {name: cls for name, (cls, _) in COMMANDS.items()},
        args=argv,
        description="esd-gs: text to 3D Gaussians with Entropic Score Distillation, exported as 3DGS .ply splats.",
    )
    runner = next(run for cls, run in COMMANDS.values() if isinstance(args, cls))
    try:
        runner(args)
    except (UserError, PlyFormatError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        message = str(exc)
        if isinstance(exc, OSError) and exc.filename:
            message = f"{exc.strerror}: {exc.filename}"
        print(f"esd-gs: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("esd-gs: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
