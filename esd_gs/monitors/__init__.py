"""What watches a run from above the loop, plugged in as training callbacks (``training.callbacks``) by
``pipeline.build``:

- ``psi_error``: psi measured against the exact scores during a run (``--diagnose.enabled``), and ``objective``:
  ESD's objective (Theorem 1's KL terms) with exact densities, which it reports;
- ``live_view``: the splats in the browser while they train (``--viewer``; viser, through ``viewer.server``).

A failure of a monitor never ends the run it watches (a failed plot, a viewer that stops).
"""
