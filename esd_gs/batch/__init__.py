"""``esd-gs batch``: many generate runs (prompts x methods x seeds) scheduled on Ray. ``jobs.py`` reads the job file
and builds each run's config, ``worker.py`` runs jobs (a Ray actor per GPU or CPU slot, keeping its prior loaded),
``runner.py`` schedules them, and ``gallery.py`` writes index.md / index.html."""
