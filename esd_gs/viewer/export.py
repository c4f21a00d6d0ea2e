"""``esd-gs export SCENE.ply --to scene.html``: one HTML file that shows the splats in a browser, offline.

viser records the scene (its splat node and the front camera of ``server.py``) and writes it into a copy of its
own prebuilt client page (``StateSerializer.as_html``): the page carries the client and the scene, and needs no
server and no network."""

from __future__ import annotations

from .server import SplatViewer
from .splats import refuse_nonfinite_splats


def scene_html(scene, title: str = "esd-gs") -> str:
    """The standalone page of ``scene`` (a ``GaussianScene``); ValueError, before the recording server starts, when
    the page would hold non-finite values (:func:`refuse_nonfinite_splats`)."""
    import socket

    refuse_nonfinite_splats(scene)

    with socket.socket() as probe:  # a free port for the short-lived recording server
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    viewer = SplatViewer("127.0.0.1", port, title)
    try:
        serializer = viewer.server.get_scene_serializer()
        viewer.show(scene)
        return serializer.as_html()
    finally:
        viewer.close()
