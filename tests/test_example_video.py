"""The procedural head (ground truth for the Janus benchmark) and the turntable / contact-sheet writers."""

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from esd_gs.cameras import orbit_cameras, turntable
from esd_gs.example import HAIR, make_head_scene
from esd_gs.render import render
from esd_gs.render.views import render_views
from esd_gs.video import contact_sheet, write_png, write_turntable


@pytest.fixture(scope="module")
def head():
    return make_head_scene(3000, seed=0)


def cameras_at(*azimuths, elevation=15.0):
    n = len(azimuths)
    return orbit_cameras(
        torch.tensor(azimuths), torch.full((n,), elevation), torch.full((n,), 2.5), torch.full((n,), 50.0)
    )


# ---------------------------------------------------------------------------------------------------- the head
def test_head_is_deterministic_for_a_seed(head):
    again, other = make_head_scene(3000, seed=0), make_head_scene(3000, seed=1)
    assert head.num_gaussians == again.num_gaussians == 3000
    for key, value in head.raw().items():
        assert torch.equal(value, again.raw()[key]), key
    assert not torch.equal(head.means, other.means)


@pytest.mark.parametrize("n", [100, 1000, 3000, 8000])
def test_head_has_the_requested_size_and_fits_the_frame(n):
    scene = make_head_scene(n, seed=3)
    assert scene.num_gaussians == n and scene.sh_degree == 0
    assert scene.means.norm(dim=1).max() < 0.8  # the camera orbits at 2.5 with fovy 50: the frame spans +-1.17
    assert scene.opacities.min() > 0.9
    assert torch.isfinite(scene.scales).all() and torch.isfinite(scene.quats).all()


def test_front_faces_plus_x(head):
    """The nose is the part furthest along +X and sits at mid height, near y = 0."""
    tip = head.means[head.means[:, 0].argmax()]
    assert tip[0] > 0.5 and abs(tip[1]) < 0.1 and abs(tip[2]) < 0.2


@pytest.mark.parametrize("size", [32, 64])
def test_front_and_back_differ_and_back_is_hair(head, size):
    cams = cameras_at(0.0, 180.0, 10.0)
    frames = render_views(head, cams, size).astype(np.float64)
    with torch.no_grad():
        alpha = render(head, cams, size, size).alpha[:, 0].numpy()
    front, back, near_front = frames
    # Mean abs difference over the head's pixels (either view), so the shared white background does not dilute it.
    # Face (mostly skin ~(235, 185, 150)) vs hair (~(50, 30, 18)) differ by ~150 per channel; the eyes, brows and
    # mouth bring the expected value down to ~90. The same face turned by only 10 degrees gives ~30, so 60 is
    # twice that while well below the front/back value.
    fg = (alpha[0] > 0.5) | (alpha[1] > 0.5)
    assert np.abs(front - back)[fg].mean() > 60
    fg_near = (alpha[0] > 0.5) | (alpha[2] > 0.5)
    assert np.abs(front - near_front)[fg_near].mean() < 45

    def hair_fraction(image, mask):
        return (np.abs(image - 255 * np.array(HAIR)).max(axis=-1)[mask] < 40).mean()

    # Hair colour within 40/255 per channel (baked shading darkens it by <= 30%); the ears and the rim stay out.
    assert hair_fraction(back, alpha[1] > 0.5) > 0.75
    assert hair_fraction(front, alpha[0] > 0.5) < 0.4


def test_render_views_shape_and_batching(head):
    cams = turntable(5)
    frames = render_views(head, cams, 24, batch=2)
    assert frames.shape == (5, 24, 24, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames, render_views(head, cams, 24, batch=8))


# ---------------------------------------------------------------------------------------------------- video
def moving_frames(num=10, height=32, width=48):
    """Distinct frames: a bar sweeping across a gradient (smooth enough for H.264 to keep it)."""
    frames = np.zeros((num, height, width, 3), dtype=np.uint8)
    frames[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, None, :]
    frames[..., 2] = np.linspace(0, 255, height, dtype=np.uint8)[None, :, None]
    for i in range(num):
        x = i * (width - 4) // max(num - 1, 1)
        frames[i, :, x : x + 4, 1] = 255
    return frames


@pytest.mark.parametrize("height, width", [(32, 48), (33, 47)])
def test_write_turntable_mp4_and_gif_decode(tmp_path, height, width):
    frames = moving_frames(10, height, width)
    paths = write_turntable(frames, tmp_path / "out", stem="spin", fps=10)
    assert [p.name for p in paths] == ["spin.mp4", "spin.gif"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["spin.gif", "spin.mp4"]  # no temp files left

    with imageio.get_reader(paths[0], format="FFMPEG") as reader:
        video = np.stack([frame for frame in reader])  # not list(reader): its len() can be inf
    # H.264 (yuv420p) needs even sizes: odd ones are padded by one edge pixel.
    assert video.shape == (10, height + height % 2, width + width % 2, 3)
    assert np.abs(video[:, :height, :width].astype(int) - frames).mean() < 12  # lossy, but the same pictures

    gif = np.stack([f[..., :3] for f in imageio.mimread(paths[1])])
    assert gif.shape == (10, height, width, 3)
    assert np.abs(gif.astype(int) - frames).mean() < 12


def test_write_turntable_single_format_and_overwrite(tmp_path):
    frames = moving_frames(4, 16, 16)
    (path,) = write_turntable(frames, tmp_path, formats="gif")
    first = path.read_bytes()
    write_turntable(frames[::-1].copy(), tmp_path, formats=("gif",))
    assert path.read_bytes() != first
    assert [p.name for p in tmp_path.iterdir()] == ["turntable.gif"]


def test_write_turntable_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="non-empty"):
        write_turntable(np.zeros((0, 8, 8, 3), dtype=np.uint8), tmp_path)
    with pytest.raises(ValueError, match="uint8"):
        write_turntable(np.zeros((2, 8, 8, 3), dtype=np.float32), tmp_path)
    with pytest.raises(ValueError, match="unknown video format"):
        write_turntable(moving_frames(2, 8, 8), tmp_path, formats=("avi",))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("num, columns, pad", [(5, 8, 2), (5, 2, 2), (9, 3, 0), (1, 4, 3)])
def test_contact_sheet_shape_and_placement(num, columns, pad):
    h, w = 7, 5
    frames = np.stack([np.full((h, w, 3), 10 * (i + 1), dtype=np.uint8) for i in range(num)])
    sheet = contact_sheet(frames, columns=columns, pad=pad, background=255)
    cols = min(columns, num)
    rows = -(-num // cols)
    assert sheet.shape == (rows * (h + pad) + pad, cols * (w + pad) + pad, 3)
    for i in range(num):
        r, c = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        assert (sheet[y : y + h, x : x + w] == 10 * (i + 1)).all()
    if pad:
        assert (sheet[:pad] == 255).all()
    with pytest.raises(ValueError):
        contact_sheet(np.zeros((0, h, w, 3), dtype=np.uint8))


def test_write_png_round_trip(tmp_path):
    image = contact_sheet(moving_frames(3, 9, 11), columns=2)
    path = write_png(image, tmp_path / "sub" / "sheet.png")
    np.testing.assert_array_equal(imageio.imread(path)[..., :3], image)
    assert [p.name for p in path.parent.iterdir()] == ["sheet.png"]
