"""The generate loop and what it needs around it: ``trainer`` (the step and the run), ``callbacks`` (the points where a
run calls out, and the metrics, previews and checkpoints every run writes), ``theta`` (the Gaussians and their
optimisers), ``streams`` (the random generators), ``densify``, ``checkpoint``, ``run_dir`` (the run directory's
layout and status) and ``outputs`` (previews and exports). Nothing here imports ``evaluation`` or ``viewer``: a run's
callbacks from those are chosen above, in ``esd_gs.pipeline``. Import the modules themselves (this package imports
nothing, so phi and psi can use ``optim_state`` without cycles)."""
