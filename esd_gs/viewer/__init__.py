"""Looking at Gaussians in the browser with viser (an optional dependency, ``pip install 'esd-gs[viewer]'``):
``splats.py`` turns a scene into viser's splat arrays, ``server.py`` serves them (``esd-gs view`` and the live view
of ``generate --viewer``, whose training callback is ``monitors.live_view``), ``export.py`` writes a standalone
HTML file of a scene."""
