"""What a run shows people (issue 30): pictures big enough to judge, and on the synthetic prior, where the front is
known, a turntable, contact sheet and viewer that open on the run's own front."""

import json
import math
from dataclasses import replace

import imageio.v2 as imageio
import numpy as np
import torch
from small_runs import small_synthetic_config

from esd_gs.cameras import turntable
from esd_gs.configs.presets import PRESETS
from esd_gs.evaluation.evaluate import _benchmark_turntable
from esd_gs.evaluation.front import front_azimuth
from esd_gs.example import builtin_head
from esd_gs.io.axes import transform_scene_params
from esd_gs.pipeline.build import build_trainer
from esd_gs.render.views import render_images, render_views
from esd_gs.scene import GaussianScene
from esd_gs.training.outputs import OutputConfig, export_scene, read_front
from esd_gs.training.run_dir import RunDir

CPU = torch.device("cpu")


def turned(scene: GaussianScene, degrees: float) -> GaussianScene:
    """``scene`` turned by ``degrees`` about +Z: its front (+X) then faces azimuth ``degrees``."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    rotation = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return GaussianScene(transform_scene_params(scene.raw(), rotation))


def test_default_pictures_are_big_enough_to_judge():
    synthetic, sd = PRESETS["synthetic"].config.output, OutputConfig()
    assert synthetic.turntable_size >= 256 and sd.turntable_size >= 512
    assert PRESETS["preview"].config.output.turntable_size >= 512
    # a turn lasts the same 4 seconds however many views it has
    assert math.isclose(synthetic.turntable_views / synthetic.turntable_seconds, 12.0)


def test_previews_and_turntable_are_drawn_at_the_output_size_not_the_training_size(tmp_path):
    size = PRESETS["synthetic"].config.output.turntable_size
    config = small_synthetic_config(1)
    config = replace(config, output=replace(config.output, preview_every=1.0, turntable_size=size))
    assert config.resolution < size
    trainer = build_trainer(config, tmp_path, CPU)
    trainer.run()
    preview = imageio.imread(RunDir(tmp_path).preview(1))
    assert preview.shape[:2] == (size + 4, 4 * (size + 2) + 2)  # 4 views of ``size`` px, 2 px apart
    sheet = imageio.imread(tmp_path / "contact_sheet.png")
    assert sheet.shape[0] == size + 4
    gif = imageio.get_reader(tmp_path / "turntable.gif")
    assert gif.get_data(0).shape[:2] == (size, size)
    # 4 views in a 4-second turn: one second a frame
    assert math.isclose(gif.get_meta_data()["duration"], 1000.0 * config.output.turntable_seconds / 4, rel_tol=0.02)


def test_the_aligned_offset_finds_the_front_of_a_turned_object():
    head = builtin_head()
    reference = render_images(head, _benchmark_turntable(), 32, background=1.0)
    for degrees in (60.0, -90.0):
        views = render_images(turned(head, degrees), _benchmark_turntable(), 32, background=1.0)
        assert abs(front_azimuth(views, reference) - degrees) <= 3.0  # one view of the 120-view turntable


def test_a_synthetic_run_shows_its_own_front_first(tmp_path):
    """The run's result is the head turned by 60 degrees: the turntable, the contact sheet and front.json start at its
    face, which is then what the unturned head shows from azimuth 0."""
    config = small_synthetic_config(1)
    config = replace(config, output=replace(config.output, turntable_views=8, turntable_size=48))
    trainer = build_trainer(config, tmp_path, CPU)
    result = turned(builtin_head(), 60.0)
    front = trainer.find_front(result)
    assert abs(front - 60.0) <= 3.0
    export_scene(result, trainer.files, config.output, "torch", final=True, front=front)
    assert read_front(tmp_path) == json.loads((tmp_path / "front.json").read_text())["azimuth"] == round(front, 3)
    first = imageio.get_reader(tmp_path / "turntable.gif").get_data(0)[..., :3].astype(float)
    face = render_views(builtin_head(), turntable(1), 48, background=1.0)[0].astype(float)
    side = render_views(result, turntable(1), 48, background=1.0)[0].astype(float)
    assert np.abs(first - face).mean() < 0.3 * np.abs(side - face).mean()
    sheet = imageio.imread(tmp_path / "contact_sheet.png")[2:50, 2:50, :3].astype(float)
    assert np.abs(sheet - face).mean() < 0.3 * np.abs(side - face).mean()


def test_other_priors_and_old_runs_start_at_azimuth_zero(tmp_path):
    from esd_gs.evaluation.front import run_front_finder
    from esd_gs.priors import StableDiffusionConfig

    config = replace(small_synthetic_config(1), prior=StableDiffusionConfig())
    assert run_front_finder(config, CPU) is None
    assert read_front(tmp_path) == 0.0  # no front.json
    (tmp_path / "front.json").write_text("[not a mapping")
    assert read_front(tmp_path) == 0.0


def test_the_viewer_opens_on_the_front_it_is_given():
    from test_viewer import free_port

    from esd_gs.viewer.server import SplatViewer, start_position

    x, y, _ = start_position(60.0)
    assert math.isclose(math.degrees(math.atan2(y, x)), 60.0)
    viewer = SplatViewer("127.0.0.1", free_port(), front=60.0)
    try:
        np.testing.assert_allclose(viewer.server.initial_camera.position, start_position(60.0))
    finally:
        viewer.close()


def picture_boxes(fig) -> list:
    """The drawn boxes (pixels) of the axes of ``fig`` that show a picture."""
    fig.canvas.draw()
    return [ax.get_window_extent() for ax in fig.axes if ax.images]


def janus_only_result() -> dict:
    """What evaluate records with ``--metrics janus`` alone: a one-faced turntable of 120 views, no CLIP."""
    from esd_gs.evaluation.sides import SIDES, janus_measure

    sides = ["front"] * 30 + ["side"] * 30 + ["back"] * 30 + ["side"] * 30
    probabilities = torch.nn.functional.one_hot(torch.tensor([SIDES.index(s) for s in sides]), 3).float()
    return {
        "scene": "run/scene.ply",
        "prompt": "a head",
        "janus": {**janus_measure(probabilities).as_dict(), "classifier": "reference"},
        "per_view": {},
    }


def test_eval_png_views_are_big_enough_and_a_janus_only_chart_is_filled():
    import matplotlib.pyplot as plt

    from esd_gs.evaluation.report import eval_figure

    fig = eval_figure(janus_only_result(), torch.rand(120, 3, 32, 32))
    try:
        boxes = picture_boxes(fig)
        assert len(boxes) == 12 and min(min(b.width, b.height) for b in boxes) >= 128
        (chart,) = [ax for ax in fig.axes if not ax.images and ax.axison]
        area = chart.get_window_extent()
        drawn = sum(p.get_window_extent().width * p.get_window_extent().height for p in chart.patches)
        assert drawn / (area.width * area.height) > 0.3  # the sides fill the panel, not an 8 % band at its foot
    finally:
        plt.close(fig)


def test_compare_png_views_are_big_enough():
    import matplotlib.pyplot as plt

    from esd_gs.evaluation.report import compare_figure

    result = janus_only_result()
    fig = compare_figure(["a", "b"], [result, result], [torch.rand(8, 3, 32, 32)] * 2)
    try:
        boxes = picture_boxes(fig)
        assert len(boxes) == 16 and min(min(b.width, b.height) for b in boxes) >= 128
    finally:
        plt.close(fig)


def test_the_batch_gallery_shows_each_view_at_128_px_or_more(tmp_path):
    import pytest

    from esd_gs.batch.gallery import write_gallery
    from esd_gs.batch.jobs import Job
    from esd_gs.testing.browser import CHROMIUM, CHROMIUM_ARGS
    from esd_gs.video import SHEET_COLUMNS, turntable_sheet, write_png

    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium: scripts/install_browser.sh installs Debian's chromium (as root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the test extra installs playwright")
    jobs = []
    for name in ("a-head-esd-s0", "a-car-esd-s0"):
        (tmp_path / name).mkdir()
        frames = np.random.default_rng(0).integers(0, 255, (16, 256, 256, 3), dtype=np.uint8)
        write_png(turntable_sheet(frames), tmp_path / name / "contact_sheet.png")
        jobs.append(Job(name, small_synthetic_config(1)))
    write_gallery(tmp_path, jobs, {})
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto((tmp_path / "index.html").as_uri())
            page.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
            widths = page.eval_on_selector_all("img", "images => images.map(i => i.getBoundingClientRect().width)")
        finally:
            browser.close()
    assert len(widths) == 2 and min(widths) / SHEET_COLUMNS >= 128


def test_a_page_that_connects_before_the_scene_opens_on_the_run_s_front(tmp_path):
    """The browser connects first, the scene (the head turned to face azimuth 60) arrives after: the page still shows
    the face, upright and framed, and its camera sits where the run's front is."""
    import time

    import imageio.v3 as iio
    import pytest
    from test_viewer import CROP, VIEWPORT, check_the_head, free_port, object_mask

    from esd_gs.testing.browser import CHROMIUM, CHROMIUM_ARGS
    from esd_gs.viewer.server import SplatViewer, start_position

    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium: scripts/install_browser.sh installs Debian's chromium (as root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the test extra installs playwright")
    viewer = SplatViewer("127.0.0.1", free_port(), front=60.0)
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport=VIEWPORT)
                page.goto(viewer.url)
                deadline = time.time() + 60
                while not viewer.server.get_clients() and time.time() < deadline:
                    time.sleep(0.2)
                viewer.show(turned(builtin_head(), 60.0))
                previous, picture = None, None
                while time.time() < deadline:
                    picture = iio.imread(page.screenshot())
                    drawn = object_mask(picture[CROP]).mean() > 0.05
                    if drawn and previous is not None and np.abs(picture.astype(int) - previous).mean() < 0.5:
                        break
                    previous = picture.astype(int) if drawn else None
                    time.sleep(1.0)
                (client,) = viewer.server.get_clients().values()
                position = client.camera.position
            finally:
                browser.close()
    finally:
        viewer.close()
    np.testing.assert_allclose(position, start_position(60.0), atol=1e-3)
    check_the_head(picture)  # the face, upright, framed in the middle


def test_esd_gs_view_opens_a_run_on_its_front_json(tmp_path):
    """``esd-gs view RUN`` reads the run's front.json: a run whose result is the head turned to azimuth 60 opens on
    its face."""
    import signal

    import pytest
    from test_viewer import check_the_head, free_port, screenshot_when_drawn, start, wait_for_port

    from esd_gs.io import write_ply
    from esd_gs.testing.browser import CHROMIUM, CHROMIUM_ARGS
    from esd_gs.training.outputs import write_front

    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium: scripts/install_browser.sh installs Debian's chromium (as root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the test extra installs playwright")
    run = tmp_path / "run"
    run.mkdir()
    write_ply(turned(builtin_head(), 60.0), run / "scene.ply")
    write_front(RunDir(run), 60.0)
    port = free_port()
    proc = start("view", run, "--port", port, "--seconds", 120)
    try:
        wait_for_port(port, proc)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            try:
                picture, _ = screenshot_when_drawn(browser, f"http://127.0.0.1:{port}")
            finally:
                browser.close()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    check_the_head(picture)  # the face, upright and framed
