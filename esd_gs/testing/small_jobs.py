"""Settings of small generate runs as job-file / preset mappings (``esd-gs batch`` tests and benchmarks): seconds on a
CPU, every output written, nothing that matters for quality."""

from __future__ import annotations

SMALL_OUTPUT = {
    "preview_every": 0.0,
    "checkpoint_every": 0.0,
    "turntable_views": 4,
    "turntable_size": 16,
    "video_formats": ["gif"],
}
"""No previews or checkpoints; a 4-view, 16 px gif turntable."""

SMALL_SYNTHETIC = {
    "preset": "synthetic",
    "batch_size": 2,
    "init": {"num_points": 200},
    "prior": {"num_images": 16},
    "psi": {"name": "particle"},
    "output": SMALL_OUTPUT,
}
"""The synthetic prior with 16 images, 200 Gaussians, batch 2 (at its default 32 px), and the training-free particle
psi (the preset's learned one trains four times a step: these runs are about the jobs, not psi)."""
