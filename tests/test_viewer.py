"""The viewer: viser's splat arrays on known answers, and `esd-gs view`, the exported .html and the live view of
`generate --viewer` opened in a real headless Chromium, screenshotted and compared with our own render of the same
camera: the object is drawn where it should be, and upright (its top half darker than its bottom, the hair above
the face, as in our render)."""

from __future__ import annotations

import functools
import http.server
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from cli_process import start_cli

from esd_gs.cameras import turntable
from esd_gs.example import builtin_head
from esd_gs.io import read_ply
from esd_gs.render.views import render_images
from esd_gs.scene import SH_C0, GaussianScene
from esd_gs.testing.browser import CHROMIUM, CHROMIUM_ARGS
from esd_gs.viewer.server import START_ELEVATION, START_FOVY, START_RADIUS, start_position
from esd_gs.viewer.splats import scene_stats, splat_arrays

ROOT = Path(__file__).resolve().parents[1]
VIEWPORT = {"width": 1200, "height": 700}
CROP = (slice(60, 680), slice(330, 870))
"""The middle of the page, clear of viser's notices (top left) and panel (top right)."""
ENV = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="150")


# ---------------------------------------------------------------------------------------------- known answers
def test_splat_arrays_known_answers():
    # 120 degrees about (1, 1, 1): x -> y, y -> z, z -> x (a transposed rotation would send x -> z instead)
    third_turn = torch.tensor([[0.5, 0.5, 0.5, 0.5]])  # (w, x, y, z)
    scene = GaussianScene.from_activated(
        means=torch.tensor([[0.1, -0.2, 0.3]]),
        scales=torch.tensor([[0.1, 0.2, 0.3]]),
        quats=third_turn,
        opacities=torch.tensor([0.8]),
        colors=torch.tensor([[0.2, 0.5, 0.9]]),
        sh_degree=0,
    )
    arrays = splat_arrays(scene)
    # the local x axis (scale 0.1) now lies along y, local y (0.2) along z, local z (0.3) along x
    np.testing.assert_allclose(arrays["covariances"][0], np.diag([0.09, 0.01, 0.04]), atol=1e-6)
    np.testing.assert_allclose(arrays["centers"][0], [0.1, -0.2, 0.3], atol=1e-6)
    np.testing.assert_allclose(arrays["rgbs"][0], [0.2, 0.5, 0.9], atol=1e-5)
    np.testing.assert_allclose(arrays["opacities"], [[0.8]], atol=1e-6)
    assert SH_C0 > 0 and {k: v.dtype for k, v in arrays.items()} == dict.fromkeys(arrays, np.float32)
    stats = scene_stats(builtin_head())
    assert stats["gaussians"] == 3000 and stats["sh_degree"] == 0 and stats["bounds_max"][2] > stats["bounds_min"][2]


def test_the_camera_starts_at_the_front_and_the_hair_is_on_top():
    x, y, z = start_position()
    assert y == 0 and x > 0 and math.isclose(math.degrees(math.atan2(z, x)), START_ELEVATION)
    assert math.isclose(math.hypot(x, z), START_RADIUS)
    from esd_gs.viewer.server import SplatViewer

    viewer = SplatViewer("127.0.0.1", free_port())
    try:
        camera = viewer.server.initial_camera
        np.testing.assert_allclose(camera.position, start_position())
        np.testing.assert_allclose(camera.look_at, (0, 0, 0))
        np.testing.assert_allclose(camera.up, (0, 0, 1))
        assert math.isclose(camera.fov, math.radians(START_FOVY))
    finally:
        viewer.close()
    arrays = splat_arrays(read_ply(ROOT / "assets" / "head.ply"))  # a -Y-up file, read into our +Z-up world
    dark = arrays["rgbs"].mean(1) < 0.3  # the hair (and pupils)
    assert arrays["centers"][dark, 2].mean() > arrays["centers"][~dark, 2].mean() + 0.1  # hair higher than skin


def test_a_busy_port_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "esd_gs", "view", str(ROOT / "assets" / "head.ply"), "--port", str(port)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=ENV,
            timeout=120,
        )
    assert done.returncode == 2 and "in use" in done.stderr.strip().splitlines()[-1]
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------------------------------------- pictures
def object_mask(picture: np.ndarray) -> np.ndarray:
    """Pixels that differ from the (white) background."""
    return np.abs(picture[..., :3].astype(float) - 255.0).sum(-1) > 40


def top_minus_bottom(picture: np.ndarray) -> float:
    """Mean brightness (0..1) of the object's pixels in the top half of its box minus the bottom half's."""
    mask = object_mask(picture)
    rows = np.nonzero(mask.any(axis=1))[0]
    middle = (rows[0] + rows[-1]) // 2
    light = picture[..., :3].astype(float).mean(-1) / 255.0
    top, bottom = mask.copy(), mask.copy()
    top[middle:] = False
    bottom[:middle] = False
    return float(light[top].mean() - light[bottom].mean())


@functools.cache
def our_views() -> tuple[np.ndarray, ...]:
    """Our own renders of the viewer's camera at azimuth 0 (the front), 90, 180 and 270."""
    cams = turntable(4, elevation=START_ELEVATION, radius=START_RADIUS, fovy=START_FOVY)
    images = render_images(builtin_head(), cams, 400)
    return tuple((image.permute(1, 2, 0).numpy() * 255).astype(np.uint8) for image in images)


def object_thumbnail(picture: np.ndarray, size: int = 48) -> np.ndarray:
    """The object's bounding box, resized to size x size, colours in [0, 1]."""
    mask = object_mask(picture)
    rows, columns = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    box = picture[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1, :3].astype(np.float32) / 255.0
    tensor = torch.from_numpy(box).permute(2, 0, 1)[None]
    return torch.nn.functional.interpolate(tensor, size=(size, size), mode="area")[0].numpy()


def check_the_head(picture: np.ndarray) -> None:
    """The head is drawn in the middle of the page, seen from the front and upright: of our own renders of the
    same camera at azimuth 0, 90, 180, 270, and of the front one upside down, the front one matches it best."""
    middle = picture[CROP]
    mask = object_mask(middle)
    assert mask.mean() > 0.15, f"too little of the object is drawn ({mask.mean():.3f} of the middle)"
    columns = np.nonzero(mask.any(axis=0))[0]
    assert abs((columns[0] + columns[-1]) / 2 - mask.shape[1] / 2) < 0.1 * mask.shape[1]  # centred
    theirs = object_thumbnail(middle)
    candidates = [*our_views(), our_views()[0][::-1]]  # 0, 90, 180, 270, and the front upside down
    errors = [float(np.square(theirs - object_thumbnail(c)).mean()) for c in candidates]
    assert int(np.argmin(errors)) == 0, f"errors against front, 90, 180, 270, upside down: {errors}"
    assert top_minus_bottom(middle) < -0.05 and top_minus_bottom(our_views()[0]) < -0.05  # hair above the face


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium: scripts/install_browser.sh installs Debian's chromium (as root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the test extra installs playwright")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def screenshot_when_drawn(browser, url: str, timeout: float = 60.0) -> tuple[np.ndarray, str]:
    """Open ``url``; once the middle of the page holds a drawn object that has stopped changing (the splats are
    sorted and drawn), return the screenshot and the page's text."""
    page = browser.new_page(viewport=VIEWPORT)
    try:
        page.goto(url)
        deadline, previous = time.time() + timeout, None
        while time.time() < deadline:
            picture = iio.imread(page.screenshot())
            drawn = object_mask(picture[CROP]).mean() > 0.05
            if drawn and previous is not None and np.abs(picture.astype(int) - previous).mean() < 0.5:
                return picture, page.inner_text("body")
            previous = picture.astype(int) if drawn else None
            time.sleep(1.0)
        raise AssertionError(f"nothing was drawn at {url} within {timeout:.0f} s")
    finally:
        page.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(*args) -> subprocess.Popen:
    return start_cli(*args, env=ENV)


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited early: {proc.communicate()[1][-2000:]}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise AssertionError(f"nothing listens on {port}")


# ---------------------------------------------------------------------------------------------- in the browser
def test_view_serves_the_head_upright_from_the_front(browser):
    port = free_port()
    proc = start("view", ROOT / "assets" / "head.ply", "--port", port, "--seconds", 120)
    try:
        wait_for_port(port, proc)
        picture, text = screenshot_when_drawn(browser, f"http://127.0.0.1:{port}")
        check_the_head(picture)
        assert "3,000 Gaussians, SH degree 0" in text and "bounds" in text
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "viewer stopped" in err


def test_exported_html_shows_the_head_without_a_server_of_ours(browser, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "esd_gs", "export", ROOT / "assets" / "head.ply", "--to", tmp_path / "head.html"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=ENV,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "head.html").read_text()
    assert "__VISER_EMBED_DATA__" in page and "http://" not in page.split("__VISER_EMBED_DATA__")[1][:200]
    # Served as a plain file by Python's static server (Chromium runs the page's sorting worker only for http
    # pages; see the README): nothing of esd-gs or viser runs on this side.
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        picture, _ = screenshot_when_drawn(browser, f"http://127.0.0.1:{server.server_address[1]}/head.html")
    finally:
        server.shutdown()
        server.server_close()
    check_the_head(picture)


def test_live_view_during_generate(browser, tmp_path):
    port = free_port()
    run = tmp_path / "run"
    proc = start(
        "generate",
        "a head",
        "--preset",
        "synthetic",
        "--steps",
        3000,
        "--viewer",
        "--viewer-port",
        port,
        "--out",
        run,
        "--init.num-points",
        200,
        "--prior.num-images",
        16,
        "--output.preview-every",
        0.001,
        "--output.checkpoint-every",
        0,
    )
    try:
        wait_for_port(port, proc)
        time.sleep(4)  # past the first refresh
        picture, text = screenshot_when_drawn(browser, f"http://127.0.0.1:{port}")
        assert object_mask(picture[CROP]).mean() > 0.05
        assert "a head" in text and "Gaussians" in text and "step " in text and "loss" in text
        assert "latest preview" in text
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]


# ------------------------------------------------------------------------------------------ the live view callback
class FakeLiveView:
    """Stands in for ``server.LiveView`` (no viser, no browser): writes down what the run sends; ``fail_at``: the
    step whose update raises, as a dropped browser connection would."""

    fail_at: int | None = None
    made: list[FakeLiveView] = []

    def __init__(self, host, port, refresh, title):
        self.viewer = type("Viewer", (), {"url": f"http://{host}:{port}"})()
        self.updates, self.previews, self.closed = [], [], 0
        FakeLiveView.made.append(self)

    @property
    def preview(self):
        return self.previews[-1] if self.previews else None

    @preview.setter
    def preview(self, image):
        self.previews.append(image.shape)

    def update(self, scene, step, steps, loss, force=False):
        self.updates.append((step, force, scene.num_gaussians))
        if step == self.fail_at:
            raise ConnectionResetError("the browser went away")

    def close(self):
        self.closed += 1


def live_run(tmp_path, monkeypatch, fail_at):
    from dataclasses import replace

    from small_runs import small_synthetic_config

    from esd_gs.monitors import live_view
    from esd_gs.pipeline.build import build_trainer

    monkeypatch.setattr(live_view, "LiveView", FakeLiveView)
    monkeypatch.setattr(FakeLiveView, "fail_at", fail_at)
    monkeypatch.setattr(FakeLiveView, "made", [])
    config = small_synthetic_config(4, viewer=True, viewer_port=free_port())
    config = replace(config, output=replace(config.output, preview_every=0.5))
    build_trainer(config, tmp_path, torch.device("cpu")).run()
    (view,) = FakeLiveView.made
    return config, view


def test_the_live_view_follows_the_run_and_closes_with_it(tmp_path, monkeypatch, capsys):
    config, view = live_run(tmp_path, monkeypatch, fail_at=None)
    assert f"live view at http://127.0.0.1:{config.viewer_port}" in capsys.readouterr().err
    assert [(step, force) for step, force, _ in view.updates] == [(1, False), (2, False), (3, False), (4, True)]
    assert len(view.previews) == 2 and view.previews[0][2] == 3  # the grids of steps 2 and 4, as written
    assert view.closed == 1


def test_a_live_view_that_fails_stops_and_training_goes_on(tmp_path, monkeypatch, capsys):
    config, view = live_run(tmp_path, monkeypatch, fail_at=2)
    assert [step for step, _, _ in view.updates] == [1, 2]  # nothing sent after the failure
    assert view.closed == 1
    printed = " ".join(capsys.readouterr().err.split())
    assert printed.count("live view stopped: ConnectionResetError: the browser went away; training goes on") == 1
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "finished"
    assert read_ply(tmp_path / "scene.ply").num_gaussians > 0
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3, 4]


# ---------------------------------------------------------------------------------------------- without viser
def test_without_viser_view_and_viewer_say_how_to_install_it(tmp_path):
    code = "import sys; sys.modules['viser'] = None; from esd_gs.cli.main import main; sys.exit(main(sys.argv[1:]))"
    for args in (
        ["view", str(ROOT / "assets" / "head.ply")],
        ["generate", "a head", "--preset", "synthetic", "--viewer", "--out", str(tmp_path / "run")],
        ["export", str(ROOT / "assets" / "head.ply"), "--to", str(tmp_path / "x.html")],
    ):
        done = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=300
        )
        assert done.returncode == 2 and "pip install 'esd-gs[viewer]'" in done.stderr.strip().splitlines()[-1], args
    assert not (tmp_path / "run").exists() and not (tmp_path / "x.html").exists()


def test_generate_without_viewer_never_imports_viser(tmp_path):
    code = (
        "import sys; from esd_gs.cli.main import main; code = main(sys.argv[1:]); "
        "sys.exit(3 if 'viser' in sys.modules else code)"
    )
    args = [
        "generate",
        "a head",
        "--preset",
        "synthetic",
        "--steps",
        "2",
        "--out",
        str(tmp_path / "run"),
        "--init.num-points",
        "200",
        "--prior.num-images",
        "16",
        "--output.turntable-views",
        "4",
        "--output.turntable-size",
        "16",
        "--output.video-formats",
        "gif",
    ]
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
