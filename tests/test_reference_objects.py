"""The procedural reference objects (car, house, mug) beside the head: the shipped files are what the code builds,
and on each shape the Janus metrics read the reference's own views as one face, find a turned copy at its offset,
and call a copy with a second front Janus."""

from pathlib import Path

import pytest
import torch

from esd_gs.cameras import OrbitSampler, turntable
from esd_gs.evaluation.janus import janus_metrics
from esd_gs.example import make_head_scene
from esd_gs.io import read_ply
from esd_gs.priors.synthetic import biased_cameras
from esd_gs.reference_objects import REFERENCE_OBJECTS, reference_path
from esd_gs.render.views import render_images
from esd_gs.scene import GaussianScene

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {"head": lambda: make_head_scene(), **{name: make for name, make in REFERENCE_OBJECTS.items()}}


@pytest.mark.parametrize("name", sorted(REFERENCE_OBJECTS))
def test_the_shipped_reference_is_the_procedural_object(name):
    stored, built = read_ply(reference_path(name)), REFERENCE_OBJECTS[name]()
    assert reference_path(name).parent == ROOT / "assets" / "references"
    for key, value in built.params.items():
        assert torch.allclose(stored.params[key], value.detach(), atol=1e-6), key


def two_fronted(scene: GaussianScene) -> GaussianScene:
    """The front half (x > 0) and its mirror image in the plane x = 0 in place of the back: a second front."""
    params = {k: v.detach() for k, v in scene.raw().items()}
    front = params["means"][:, 0] > 0
    mirrored = {k: v[front].clone() for k, v in params.items()}
    mirrored["means"][:, 0] *= -1
    mirrored["quats"][:, 2:] *= -1  # M R M with M = diag(-1, 1, 1) is the rotation of quaternion (w, x, -y, -z)
    return GaussianScene({k: torch.cat([v[front], mirrored[k]]) for k, v in params.items()})


@pytest.mark.parametrize("name", list(SHAPES))
def test_janus_metrics_on_each_reference_shape(name):
    scene = SHAPES[name]()
    cams = biased_cameras(96, OrbitSampler(elevation=(15.0, 15.0)), 0.0, 26.0, torch.Generator().manual_seed(0))
    prior_images = render_images(scene, cams, 16)
    views = render_images(scene, turntable(120, elevation=15.0), 16)
    own = janus_metrics(views, views, prior_images, cams.azimuth)
    assert own.excess_faces == 0 and own.side_accuracy == 1.0 and own.frontal_share_gap == 0.0
    assert 0.1 < own.frontal_fraction < 0.5  # a front, not a face all round
    turned = janus_metrics(torch.roll(views, 30, dims=0), views, prior_images, cams.azimuth)
    assert turned.best_offset_deg == pytest.approx(270.0) and turned.excess_faces == 0 and turned.side_accuracy == 1.0
    janus = janus_metrics(render_images(two_fronted(scene), turntable(120, elevation=15.0), 16), views, prior_images,
                          cams.azimuth)  # fmt: skip
    assert janus.excess_faces >= 1 and janus.frontal_share_gap > 0.1 and janus.side_accuracy < 0.9, janus
