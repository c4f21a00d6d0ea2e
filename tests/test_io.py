"""File formats: the 3DGS .ply (round trips, layout, up axis, other writers' files, bad files) and the .splat."""

import os

import numpy as np
import plyfile
import pytest
import torch
from gsplat import export_splats

from esd_gs.io import PlyFormatError, read_ply, read_splat, up_rotation, write_ply, write_splat
from esd_gs.io.axes import quaternion_multiply, rotation_to_quaternion, transform_scene_params
from esd_gs.io.ply import ply_property_names
from esd_gs.render.projection import covariance_3d, quat_to_rotmat
from esd_gs.scene import SH_C0, GaussianScene, num_sh_bases
from esd_gs.sh import eval_sh

UPS = ["z", "-y", "y"]
KEYS = ["means", "scales", "quats", "opacities", "sh0", "shN"]


def random_params(n=40, degree=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "means": torch.randn(n, 3, generator=g),
        "scales": torch.randn(n, 3, generator=g) - 3.0,
        "quats": torch.randn(n, 4, generator=g),
        "opacities": torch.randn(n, generator=g),
        "sh0": torch.randn(n, 1, 3, generator=g),
        "shN": torch.randn(n, num_sh_bases(degree) - 1, 3, generator=g),
    }


def original_3dgs_array(params, names=None, extra=True):
    """A structured array in the original 3DGS layout (with normals), properties in the order ``names``."""
    n = params["means"].shape[0]
    k_rest = params["shN"].shape[1]
    columns = {"nx": np.zeros(n), "ny": np.zeros(n), "nz": np.zeros(n), "opacity": params["opacities"].numpy()}
    for i, axis in enumerate("xyz"):
        columns[axis] = params["means"][:, i].numpy()
    for c in range(3):
        columns[f"f_dc_{c}"] = params["sh0"][:, 0, c].numpy()
    f_rest = params["shN"].transpose(1, 2).reshape(n, -1).numpy()
    for i in range(3 * k_rest):
        columns[f"f_rest_{i}"] = f_rest[:, i]
    for i in range(3):
        columns[f"scale_{i}"] = params["scales"][:, i].numpy()
    for i in range(4):
        columns[f"rot_{i}"] = params["quats"][:, i].numpy()
    names = names or list(columns)
    dtype = [(name, "f4") for name in names] + ([("red", "u1"), ("green", "u1"), ("blue", "u1")] if extra else [])
    array = np.zeros(n, dtype=dtype)
    for name in names:
        array[name] = columns[name]
    if extra:
        array["red"] = 7
    return array


def assert_same_params(scene, params, exact=True):
    got = scene.raw()
    for key in KEYS:
        if exact:
            assert torch.equal(got[key], params[key]), key
        else:
            assert torch.allclose(got[key], params[key], rtol=1e-6, atol=1e-6), key


# ---------------------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("up", UPS)
@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_round_trip(tmp_path, degree, up):
    params = random_params(degree=degree, seed=degree)
    path = tmp_path / "scene.ply"
    write_ply(GaussianScene(params), path, up=up)
    scene = read_ply(path, up=up)
    assert scene.sh_degree == degree
    # The up-axis rotations are signed permutations of positions, so means move exactly; scales, opacities and
    # sh0 are not rotated. Quaternions (a 45 deg mix of w and x) and SH bands >= 2 cannot be rotated on the float32
    # grid and back without rounding: exact for "z", within float32 rounding otherwise.
    for key in ["means", "scales", "opacities", "sh0"]:
        assert torch.equal(scene.raw()[key], params[key]), key
    assert_same_params(scene, params, exact=(up == "z"))


def test_round_trip_of_a_dict_and_device_argument(tmp_path):
    params = random_params(degree=1)
    write_ply(params, tmp_path / "a.ply", up="z")
    scene = read_ply(tmp_path / "a.ply", up="z", device="cpu")
    assert scene.device == torch.device("cpu") and scene.params["means"].dtype == torch.float32
    assert_same_params(scene, params)


@pytest.mark.parametrize("degree", [0, 1, 3])
def test_pad_to_degree_3(tmp_path, degree):
    params = random_params(degree=degree)
    path = tmp_path / "padded.ply"
    write_ply(params, path, up="z", pad_sh_degree=3)
    vertex = plyfile.PlyData.read(str(path))["vertex"]
    assert [p.name for p in vertex.properties] == ply_property_names(3)
    k_rest = num_sh_bases(degree) - 1
    # Channel-major: the red coefficients the scene has, then zeros up to 15, then green, then blue.
    for c in range(3):
        for k in range(15):
            value = vertex[f"f_rest_{c * 15 + k}"]
            expected = params["shN"][:, k, c].numpy() if k < k_rest else np.zeros(len(value), np.float32)
            np.testing.assert_array_equal(value, expected)
    scene = read_ply(path, up="z")
    assert scene.sh_degree == 3
    assert torch.equal(scene.params["shN"][:, :k_rest], params["shN"])
    assert (scene.params["shN"][:, k_rest:] == 0).all()


def test_pad_to_lower_degree_is_refused(tmp_path):
    with pytest.raises(ValueError, match="SH degree 2"):
        write_ply(random_params(degree=2), tmp_path / "a.ply", pad_sh_degree=1)
    with pytest.raises(ValueError, match="0..3"):
        write_ply(random_params(degree=2), tmp_path / "a.ply", pad_sh_degree=4)
    assert not os.listdir(tmp_path)


# ---------------------------------------------------------------------------------------------------- layout


def test_header_property_order_and_values(tmp_path):
    params = random_params(degree=2)
    path = tmp_path / "scene.ply"
    write_ply(params, path)  # default up "-y"
    ply = plyfile.PlyData.read(str(path))
    assert [e.name for e in ply.elements] == ["vertex"]
    assert ply.byte_order == "<" and not ply.text
    vertex = ply["vertex"]
    expected_names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    expected_names += [f"f_rest_{i}" for i in range(24)]
    expected_names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert [p.name for p in vertex.properties] == expected_names
    assert all(p.val_dtype in ("f4", "float32", "float") for p in vertex.properties)

    R = up_rotation("-y")
    rotated = transform_scene_params(params, R)
    np.testing.assert_array_equal(np.stack([vertex[a] for a in "xyz"], 1), (params["means"] @ R.T).numpy())
    np.testing.assert_array_equal(np.stack([vertex[f"n{a}"] for a in "xyz"], 1), np.zeros((40, 3), np.float32))
    np.testing.assert_array_equal(np.stack([vertex[f"f_dc_{c}"] for c in range(3)], 1), params["sh0"][:, 0].numpy())
    f_rest = np.stack([vertex[f"f_rest_{i}"] for i in range(24)], 1)
    np.testing.assert_array_equal(f_rest, rotated["shN"].permute(0, 2, 1).reshape(40, 24).numpy())
    np.testing.assert_array_equal(vertex["opacity"], params["opacities"].numpy())
    np.testing.assert_array_equal(np.stack([vertex[f"scale_{i}"] for i in range(3)], 1), params["scales"].numpy())
    np.testing.assert_array_equal(np.stack([vertex[f"rot_{i}"] for i in range(4)], 1), rotated["quats"].numpy())


def test_up_rotations():
    for up in UPS:
        R = up_rotation(up)
        assert torch.allclose(R @ R.T, torch.eye(3)) and torch.linalg.det(R) == 1.0
        assert torch.equal(R @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([1.0, 0.0, 0.0]))  # front stays +X
        q = rotation_to_quaternion(R)
        assert torch.allclose(quat_to_rotmat(q), R.double(), atol=1e-12)
    assert torch.equal(up_rotation("-y") @ torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.0, -1.0, 0.0]))
    assert torch.equal(up_rotation("y") @ torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="unknown up axis"):
        up_rotation("x")


def test_minus_y_export_puts_world_up_at_file_minus_y(tmp_path):
    params = random_params(n=2, degree=0)
    params["means"] = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    write_ply(params, tmp_path / "a.ply", up="-y")
    vertex = plyfile.PlyData.read(str(tmp_path / "a.ply"))["vertex"]
    np.testing.assert_array_equal(np.stack([vertex[a] for a in "xyz"], 1), [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]])


@pytest.mark.parametrize("up", ["-y", "y"])
def test_view_dependent_colour_follows_the_rotation(tmp_path, up):
    params = random_params(n=30, degree=3)
    write_ply(params, tmp_path / "a.ply", up=up)
    in_file = read_ply(tmp_path / "a.ply", up="z")  # the raw file coordinates
    R = up_rotation(up)
    dirs = torch.nn.functional.normalize(torch.randn(30, 3, generator=torch.Generator().manual_seed(1)), dim=-1)
    world_colour = eval_sh(3, dirs, torch.cat([params["sh0"], params["shN"]], dim=1))
    file_colour = eval_sh(3, dirs @ R.T, in_file.sh.detach())
    assert torch.allclose(file_colour, world_colour, atol=1e-5)


@pytest.mark.parametrize("up", ["-y", "y"])
def test_quaternion_rotation_rotates_the_covariance(tmp_path, up):
    params = random_params(n=30, degree=0)
    write_ply(params, tmp_path / "a.ply", up=up)
    in_file = read_ply(tmp_path / "a.ply", up="z")
    R = up_rotation(up)
    scales = torch.exp(params["scales"])
    sigma = covariance_3d(torch.nn.functional.normalize(params["quats"], dim=-1), scales)
    sigma_file = covariance_3d(in_file.quats.detach(), scales)
    assert torch.allclose(sigma_file, R @ sigma @ R.T, atol=1e-7, rtol=1e-4)
    # The raw quaternion keeps its norm (it is q_R * q with a unit q_R).
    assert torch.allclose(in_file.params["quats"].norm(dim=-1), params["quats"].norm(dim=-1), rtol=1e-6)
    q_r = rotation_to_quaternion(R).float()
    assert torch.allclose(in_file.params["quats"], quaternion_multiply(q_r, params["quats"]), atol=1e-6)


# ---------------------------------------------------------------------------------------------------- other writers


@pytest.mark.parametrize("degree", [0, 3])
def test_reads_gsplat_export(tmp_path, degree):
    params = random_params(degree=degree)
    path = tmp_path / "gsplat.ply"
    export_splats(**params, format="ply", save_to=str(path))
    names = [p.name for p in plyfile.PlyData.read(str(path))["vertex"].properties]
    assert "nx" not in names  # gsplat 1.5.3 writes no normals; otherwise our order
    assert names == [n for n in ply_property_names(degree) if n not in ("nx", "ny", "nz")]
    assert_same_params(read_ply(path, up="z"), params)
    expected = transform_scene_params(params, up_rotation("-y").T)
    assert_same_params(read_ply(path, up="-y"), expected)


@pytest.mark.parametrize("kind", ["binary_little_endian", "binary_big_endian", "ascii"])
def test_reads_original_3dgs_layout_in_any_property_order(tmp_path, kind):
    params = random_params(n=12, degree=1)
    names = list(original_3dgs_array(params, extra=False).dtype.names)
    order = np.random.default_rng(0).permutation(len(names))
    array = original_3dgs_array(params, [names[i] for i in order])
    if kind == "binary_big_endian":
        array = array.astype(array.dtype.newbyteorder(">"))
    element = plyfile.PlyElement.describe(array, "vertex")
    extra = plyfile.PlyElement.describe(
        np.zeros(2, dtype=[("vertex_indices", "O")]), "face", val_types={"vertex_indices": "int32"}
    )
    extra.data["vertex_indices"][0] = np.array([0, 1, 2], np.int32)
    extra.data["vertex_indices"][1] = np.array([1, 2, 3, 4], np.int32)
    ply = plyfile.PlyData(
        [extra, element], text=(kind == "ascii"), byte_order=">" if kind == "binary_big_endian" else "<"
    )
    ply.write(str(tmp_path / "a.ply"))
    assert_same_params(read_ply(tmp_path / "a.ply", up="z"), params)


# ---------------------------------------------------------------------------------------------------- bad files


def good_bytes(n=3, degree=0):
    params = random_params(n=n, degree=degree)
    header = f"ply\nformat binary_little_endian 1.0\nelement vertex {n}\n"
    header += "".join(f"property float {name}\n" for name in ply_property_names(degree)) + "end_header\n"
    body = original_3dgs_array(params, ply_property_names(degree), extra=False).tobytes()
    return header, body


def header_with(names, count=3, fmt="binary_little_endian"):
    return (
        f"ply\nformat {fmt} 1.0\nelement vertex {count}\n"
        + "".join(f"property float {n}\n" for n in names)
        + "end_header\n"
    )


def test_good_bytes_helper_is_readable(tmp_path):
    header, body = good_bytes()
    (tmp_path / "ok.ply").write_bytes(header.encode() + body)
    assert read_ply(tmp_path / "ok.ply").num_gaussians == 3


def bad_cases():
    header, body = good_bytes()
    names = ply_property_names(0)
    nan_body = np.frombuffer(body, "<f4").copy().reshape(3, -1)
    nan_body[0, 0] = np.nan
    nan_body[2, -1] = np.inf
    return {
        "empty file": (b"", "not a PLY file"),
        "not a ply": (b"hello world\n" * 10, "not a PLY file"),
        "no end_header": (b"ply\nformat binary_little_endian 1.0\nelement vertex 3\n", "end_header"),
        "bad format": (header.replace("binary_little_endian", "binary_middle_endian").encode() + body, "format"),
        "bad property type": (
            header.replace("property float x", "property float128 x").encode() + body,
            "unknown property type",
        ),
        "missing fields": (
            header_with([n for n in names if n not in ("opacity", "rot_3")]).encode() + body[:-24],
            "missing vertex properties opacity, rot_3",
        ),
        "wrong f_rest count": (
            header_with(names[:9] + [f"f_rest_{i}" for i in range(10)] + names[9:]).encode()
            + bytes(3 * 4 * (len(names) + 10)),
            "10 f_rest properties",
        ),
        "no vertex element": (
            b"ply\nformat ascii 1.0\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n3 0 1 2\n",
            "no 'vertex' element",
        ),
        "truncated body": (header.encode() + body[:-10], "truncated"),
        "huge count": (
            header.replace("element vertex 3", f"element vertex {10**12}").encode() + body,
            "1000000000000 vertex",
        ),
        "huge ascii count": (header_with(names, count=10**12, fmt="ascii").encode() + b"0 " * 60, "truncated"),
        "nan values": (header.encode() + nan_body.tobytes(), "2 of 3 Gaussians have NaN or Inf"),
        "zero vertices": (header.replace("element vertex 3", "element vertex 0").encode(), "contains no Gaussians"),
        "compressed ply": (
            b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty uint packed_position\n"
            b"end_header\n" + bytes(4),
            "compressed PLY",
        ),
        "garbage ascii body": (
            header_with(names, count=1, fmt="ascii").encode() + b"x " * len(names),
            "ascii vertex value 'x' is not a number",
        ),
    }


@pytest.mark.parametrize("case", list(bad_cases()))
def test_bad_files_give_one_line_errors(tmp_path, case):
    data, message = bad_cases()[case]
    path = tmp_path / "bad.ply"
    path.write_bytes(data)
    with pytest.raises(PlyFormatError, match=message) as info:
        read_ply(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_writers_refuse_bad_scenes_and_write_atomically(tmp_path, monkeypatch):
    params = random_params(degree=1)
    params["means"][3, 0] = float("nan")
    params["shN"][5, 1, 2] = float("inf")
    params["shN"][3, 0, 0] = float("inf")
    for writer in (write_ply, write_splat):
        with pytest.raises(ValueError, match="2 of 40 Gaussians"):
            writer(params, tmp_path / "bad")
    empty = {k: v[:0] for k, v in random_params().items()}
    with pytest.raises(ValueError, match="no Gaussians"):
        write_ply(empty, tmp_path / "empty.ply")
    assert not os.listdir(tmp_path)

    # A crash while writing leaves the previous file intact and no temporary file behind.
    path = tmp_path / "scene.ply"
    write_ply(random_params(degree=0), path)
    before = path.read_bytes()

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        write_ply(random_params(degree=3), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["scene.ply"]


# ---------------------------------------------------------------------------------------------------- .splat


def sorted_records(data: bytes) -> np.ndarray:
    records = np.frombuffer(data, np.uint8).reshape(-1, 32)
    return records[np.lexsort(records.T[::-1])]


def test_splat_matches_gsplat_and_is_sorted_by_importance(tmp_path):
    params = random_params(n=200, degree=1)
    params["sh0"] *= 3.0  # push some colours outside [0, 1] to exercise the clipping
    path = tmp_path / "a.splat"
    write_splat(params, path, up="z")
    data = path.read_bytes()
    assert len(data) == 200 * 32
    ours = sorted_records(data)
    theirs = sorted_records(export_splats(**params, format="splat"))
    np.testing.assert_array_equal(ours, theirs)  # byte-identical records, only the order differs

    decoded = read_splat(path)
    alpha = torch.sigmoid(params["opacities"]).double().numpy()
    importance = np.exp(params["scales"].double().sum(1).numpy()) * alpha
    order = np.argsort(-importance, kind="stable")
    np.testing.assert_array_equal(decoded["positions"], params["means"].numpy()[order])
    np.testing.assert_allclose(decoded["scales"], np.exp(params["scales"].numpy()[order]), rtol=1e-6)
    rgb = np.clip((0.5 + SH_C0 * params["sh0"][:, 0].numpy()[order]) * 255, 0, 255)
    assert np.abs(decoded["rgba"][:, :3] - rgb).max() < 1.0
    assert np.abs(decoded["rgba"][:, 3] - alpha[order] * 255).max() < 1.0
    unit = torch.nn.functional.normalize(params["quats"], dim=-1).numpy()[order]
    assert np.abs(decoded["quats"] - unit).max() <= 1.0 / 128


def test_splat_up_axis(tmp_path):
    params = random_params(n=5, degree=0)
    params["means"][0] = torch.tensor([0.0, 0.0, 1.0])
    params["scales"][0] = 1.0  # the largest Gaussian: first record
    write_splat(params, tmp_path / "a.splat")  # default "-y"
    decoded = read_splat(tmp_path / "a.splat")
    np.testing.assert_array_equal(decoded["positions"][0], [0.0, -1.0, 0.0])
    expected = (params["means"] @ up_rotation("-y").T).numpy()
    np.testing.assert_array_equal(np.sort(decoded["positions"], axis=0), np.sort(expected, axis=0))
