"""esd-gs: text to 3D Gaussians with Entropic Score Distillation (ESD).

The pipeline (Algorithm 1 with Gaussians), one folder per role:

    scene (theta) + cameras (c) -> render (g(theta, c)) -> priors (phi) and estimators (psi) scores
    -> distillation (the update of eq. 1 / 2 / 9) -> training (the loop, densification, checkpoints, outputs)
    -> io (.ply / .splat files)

The README's layout section says where each part lives and which interface a new one implements.
"""

__version__ = "0.1.0"
