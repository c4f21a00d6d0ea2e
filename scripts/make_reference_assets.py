"""Write the procedural reference objects (``esd_gs/reference_objects.py``) to assets/references/<name>.ply, and a
picture of them with the head: 8 views each, front first (assets/screenshots/reference-objects.png).

    .venv/bin/python scripts/make_reference_assets.py

A test checks that the shipped files equal what this builds, so re-run it after changing an object.
"""

from pathlib import Path

import numpy as np

from esd_gs.cameras import turntable
from esd_gs.example import builtin_head
from esd_gs.io import write_ply
from esd_gs.reference_objects import ASSETS, REFERENCE_OBJECTS, reference_path
from esd_gs.render.views import render_images
from esd_gs.video import contact_sheet, write_png

PICTURE = Path(__file__).resolve().parents[1] / "assets" / "screenshots" / "reference-objects.png"

if __name__ == "__main__":
    ASSETS.mkdir(parents=True, exist_ok=True)
    rows = [render_images(builtin_head(), turntable(8, elevation=15.0), 96)]
    for name, make in REFERENCE_OBJECTS.items():
        scene = make()
        write_ply(scene, reference_path(name))
        print(f"{reference_path(name)}: {scene.num_gaussians} Gaussians")
        rows.append(render_images(scene, turntable(8, elevation=15.0), 96))
    frames = np.concatenate([(r.permute(0, 2, 3, 1).clamp(0, 1).numpy() * 255).round().astype(np.uint8) for r in rows])
    write_png(contact_sheet(frames, columns=8), PICTURE)
    print(f"{PICTURE}: head, {', '.join(REFERENCE_OBJECTS)}; azimuth 0 (the front) to 315 in steps of 45")
