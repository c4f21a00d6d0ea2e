"""esd-gs: text to 3D Gaussians with Entropic Score Distillation (ESD).

The pipeline, one module each: ``scene`` (theta) -> ``cameras`` (c) -> ``render`` (g(theta, c)) -> ``io`` (.ply /
.splat files). See DESIGN notes in the README.
"""

__version__ = "0.1.0"
