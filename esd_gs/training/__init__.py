"""The generate loop and what it needs around it: ``trainer`` (the step and the run), ``run_dir`` (the run
directory's layout and status), ``outputs`` (previews and exports), ``checkpoint`` and ``densify``. Import the
modules themselves (this package imports nothing, so phi and psi can use ``optim_state`` without cycles)."""
