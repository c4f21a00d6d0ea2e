"""read_ply against hostile files: seeded mutations of valid binary and ascii 3DGS files, and the known bad cases.

Every outcome must be a scene with finite parameters or a one-line PlyFormatError; no other exception, no warning,
no hang (an alarm per file) and no large allocation (peak resident memory may grow only a little over the whole run).
Two seeded streams per format: byte-level mutations, and structural ones (list elements before and after the vertex
element, ascii rows cut short, a second format line, doubles beyond float32, and paths that are FIFOs, folders,
dangling symlinks or symlink loops).
"""

import os
import random
import resource
import signal
import warnings

import numpy as np
import plyfile
import pytest
import torch

from esd_gs.initial import BallInit
from esd_gs.io import PlyFormatError, read_ply, write_ply

CASES_PER_FORMAT = 200
STRUCTURE_CASES_PER_FORMAT = 100


def scene(n=40, degree=1, seed=0):
    return BallInit(num_points=n, sh_degree=degree).scene(generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    root = tmp_path_factory.mktemp("ply")
    binary = root / "binary.ply"
    write_ply(scene(), binary)
    data = plyfile.PlyData.read(str(binary))
    ascii_path = root / "ascii.ply"
    plyfile.PlyData([plyfile.PlyElement.describe(data["vertex"].data, "vertex")], text=True).write(str(ascii_path))
    return {"binary": binary.read_bytes(), "ascii": ascii_path.read_bytes()}


def header_and_body(blob: bytes) -> tuple[list[bytes], bytes]:
    end = blob.index(b"end_header\n") + len(b"end_header\n")
    return blob[:end].split(b"\n")[:-1], blob[end:]


def mutate(blob: bytes, rng: random.Random) -> bytes:
    lines, body = header_and_body(blob)
    kind = rng.randrange(9)
    if kind == 0:  # flip bytes anywhere
        data = bytearray(blob)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if kind == 1:  # truncate
        return blob[: rng.randrange(len(blob))]
    if kind == 2:  # a strange vertex count
        count = rng.choice([b"0", b"-1", b"1e3", b"999999999999", b"4294967297", b"", b"\xd9\xa3", b"7", b"41"])
        lines = [b"element vertex " + count if line.startswith(b"element vertex") else line for line in lines]
    elif kind == 3:  # comments with carriage returns, form feeds and other line breaks, some hiding a property
        junk = rng.choice([b"\r", b"\x0c", b"\x1c", b"\x0b", b"\x85"])
        props = [i for i, line in enumerate(lines) if line.startswith(b"property")]
        if rng.random() < 0.5:
            i = rng.choice(props)
            lines[i] = b"comment hidden" + junk + lines[i]
        else:
            lines.insert(rng.randint(1, len(lines) - 1), b"comment a" + junk + b"b")
    elif kind == 4:  # an extra element with a huge count and no properties, or with a list property
        extra = rng.choice(
            [[b"element foo 1000000000000"], [b"element face 3", b"property list uchar int vertex_indices"]]
        )
        lines[-1:-1] = extra
    elif kind == 5:  # delete or duplicate a property line
        props = [i for i, line in enumerate(lines) if line.startswith(b"property")]
        i = rng.choice(props)
        lines.insert(i, lines[i]) if rng.random() < 0.5 else lines.pop(i)
    elif kind == 6:  # change a property's type
        props = [i for i, line in enumerate(lines) if line.startswith(b"property")]
        i = rng.choice(props)
        name = lines[i].split()[-1]
        lines[i] = b"property " + rng.choice([b"double", b"uchar", b"int", b"bogus", b"list uchar float"]) + b" " + name
    elif kind == 7:  # change the format
        lines = [
            b"format " + rng.choice([b"ascii", b"binary_big_endian", b"binary_little_endian", b"text"]) + b" 1.0"
            if line.startswith(b"format")
            else line
            for line in lines
        ]
    else:  # extreme values in the body
        value = rng.choice([3.0e38, -3.3e38, float("nan"), float("inf"), 1e-45])
        if b"ascii" in lines[1]:
            rows = body.split(b"\n")
            r = rng.randrange(len(rows) - 1)
            tokens = rows[r].split()
            tokens[rng.randrange(len(tokens))] = repr(value).encode()
            rows[r] = b" ".join(tokens)
            body = b"\n".join(rows)
        else:
            data = bytearray(body)
            offset = 4 * rng.randrange(len(data) // 4)
            data[offset : offset + 4] = np.float32(value).tobytes()
            body = bytes(data)
    return b"\n".join(lines) + b"\n" + body


def list_rows(rng: random.Random, rows: int, ascii: bool, count_type: str = "uchar") -> bytes:
    """``rows`` rows of ``property uchar flag`` and ``property list COUNT_TYPE int vertex_indices``."""
    if ascii:
        return b"".join(
            f"{rng.randrange(4)} {k} {' '.join(str(rng.randrange(40)) for _ in range(k))}\n".encode()
            for k in (rng.randrange(6) for _ in range(rows))
        )
    count = {"uchar": "u1", "char": "i1", "ushort": "<u2", "int": "<i4", "uint": "<u4"}[count_type]
    out = []
    for _ in range(rows):
        k = rng.randrange(6)
        out.append(bytes([rng.randrange(4)]) + np.array([k], count).tobytes() + np.arange(k, dtype="<i4").tobytes())
    return b"".join(out)


def mutate_structure(blob: bytes, rng: random.Random) -> bytes | str:
    """A structural mutation: new bytes, or the name of a path that is not a regular file ("fifo", "folder",
    "dangling", "loop")."""
    lines, body = header_and_body(blob)
    ascii = b"ascii" in lines[1]
    vertex_at = next(i for i, line in enumerate(lines) if line.startswith(b"element vertex"))
    kind = rng.randrange(7)
    if kind == 0:  # a list element before the vertex element: well formed, or with a bad count, length or type
        rows = rng.choice([1, 3, 50, 2000, 100_001])
        count_type = rng.choice(["uchar", "char", "ushort", "int", "uint"])
        data = list_rows(rng, min(rows, 2000), ascii, count_type)
        declared = rows
        flaw = rng.randrange(6)
        if flaw == 1:  # more rows declared than written
            declared = rows + rng.randint(1, 5)
        elif flaw == 2 and not ascii:  # a length byte of 0xff: -1 for a char, 255 ints otherwise
            data = data[:1] + b"\xff" + data[2:]
        elif flaw == 3:  # a float length type
            count_type = rng.choice(["float", "double"])
        elif flaw == 4:  # the rows cut short
            data = data[: rng.randrange(len(data) + 1)]
        element = [b"element face %d" % declared, b"property uchar flag"]
        element.append(b"property list " + count_type.encode() + b" int vertex_indices")
        lines[vertex_at:vertex_at] = element
        body = data + body
    elif kind == 1:  # a list element after the vertex element, never parsed: up to 2 M rows, or an absurd count
        rows = rng.choice([3, 1000, 2_000_000, 10**12])
        lines[-1:-1] = [b"element tail %d" % rows, b"property list uchar uchar q"]
        body = body + (list_rows(rng, 3, ascii) if rows == 3 else bytes(min(rows, 2_000_000)))
    elif kind == 2:  # the last row cut short: its final newline, part of its last number, or more
        trimmed = body.rstrip(b"\n")
        body = trimmed[: len(trimmed) - rng.choice([0, 1, 2, 5, 40])]
    elif kind == 3:  # a second format line, the same or another
        fmt = rng.choice([b"ascii", b"binary_little_endian", b"binary_big_endian"])
        lines.insert(rng.randint(2, len(lines) - 1), b"format " + fmt + b" 1.0")
    elif kind == 4:  # a property turned into a double holding a value beyond float32 (binary; ascii: the value)
        props = [i for i, line in enumerate(lines) if line.startswith(b"property")]
        i = rng.choice(props)
        column = props.index(i)
        value = rng.choice([1e300, -1e39, 3.5e38, 1e-300])
        if ascii:
            rows = body.split(b"\n")
            r = rng.randrange(len(rows) - 1)
            tokens = rows[r].split()
            tokens[column] = repr(value).encode()
            rows[r] = b" ".join(tokens)
            body = b"\n".join(rows)
        else:
            table = np.frombuffer(body, "<f4").reshape(-1, len(props))
            wide = [table[:, :column], table[:, column : column + 1].astype("<f8"), table[:, column + 1 :]]
            wide[1][rng.randrange(len(table))] = value
            body = b"".join(b"".join(part[r].tobytes() for part in wide) for r in range(len(table)))
            lines[i] = b"property double " + lines[i].split()[-1]
    elif kind == 5:  # a path that is not a regular file
        return rng.choice(["fifo", "folder", "dangling", "loop"])
    else:  # blank lines or stray bytes after the last element
        body = body + rng.choice([b"\n\n", b"  \n", b"0 0\n", b"\x00" * 7])
    return b"\n".join(lines) + b"\n" + body


def make_path(path, mutated: bytes | str) -> None:
    if mutated == "fifo":
        os.mkfifo(path)
    elif mutated == "folder":
        path.mkdir()
    elif mutated == "dangling":
        path.symlink_to(path.with_name("nowhere.ply"))
    elif mutated == "loop":
        path.symlink_to(path)
    else:
        path.write_bytes(mutated)


def test_seeded_mutations_give_a_scene_or_a_ply_format_error(originals, tmp_path):
    def alarm(signum, frame):
        raise TimeoutError("read_ply hung")

    previous = signal.signal(signal.SIGALRM, alarm)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 40 Gaussians a file: more threads only contend (10x slower on a busy machine)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outcomes = {"ok": 0, "refused": 0}
    streams = [("", CASES_PER_FORMAT, mutate), ("-structure", STRUCTURE_CASES_PER_FORMAT, mutate_structure)]
    try:
        for stream, cases, mutation in streams:
            for fmt, blob in originals.items():
                rng = random.Random(f"esd-gs-{fmt}{stream}")
                for case in range(cases):
                    path = tmp_path / f"{fmt}{stream}-{case}.ply"
                    make_path(path, mutation(blob, rng))
                    signal.alarm(5)
                    try:
                        with warnings.catch_warnings():
                            warnings.simplefilter("error")  # nothing may be printed besides the error
                            for up in ("-y", "z"):
                                loaded = read_ply(path, up=up)
                                assert all(torch.isfinite(v).all() for v in loaded.params.values()), (fmt, case)
                        outcomes["ok"] += 1
                    except PlyFormatError as error:
                        assert "\n" not in str(error) and str(error).startswith(str(path)), (fmt, case, str(error))
                        outcomes["refused"] += 1
                    finally:
                        signal.alarm(0)
                    path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
    finally:
        signal.signal(signal.SIGALRM, previous)
        torch.set_num_threads(threads)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert outcomes["ok"] > 40 and outcomes["refused"] > 200, outcomes  # both branches are exercised
    assert grown_mb < 300, f"peak memory grew by {grown_mb:.0f} MB"


@pytest.mark.parametrize("junk", [b"\r", b"\x0c"], ids=["carriage-return", "form-feed"])
def test_line_breaks_inside_a_comment_do_not_confuse_the_reader(originals, tmp_path, junk):
    lines, body = header_and_body(originals["binary"])
    lines.insert(2, b"comment first" + junk + b"property float sneaky")
    path = tmp_path / "comment.ply"
    path.write_bytes(b"\n".join(lines) + b"\n" + body)
    assert read_ply(path).num_gaussians == 40  # plyfile and our header check agree: it is one comment line


def test_a_huge_element_without_properties_is_refused_at_once(originals, tmp_path):
    lines, body = header_and_body(originals["binary"])
    for count, expected in ((b"1000000000", "declares rows but no properties"), (b"1000000000000", "no properties")):
        path = tmp_path / "huge.ply"
        path.write_bytes(b"\n".join(lines[:-1] + [b"element foo " + count, lines[-1]]) + b"\n" + body)
        with pytest.raises(PlyFormatError, match=expected):
            read_ply(path)


def test_values_near_the_float32_limit_are_refused_not_turned_into_inf(tmp_path):
    big = scene(n=4, degree=1)
    with torch.no_grad():
        big.params["quats"][0] = torch.tensor([3.0e38, 3.0e38, 0.0, 0.0])
    path = tmp_path / "big.ply"
    write_ply(big, path, up="z")  # finite values, written as they are
    assert torch.isfinite(read_ply(path, up="z").params["quats"]).all()
    with pytest.raises(PlyFormatError, match="too large to rotate"):
        read_ply(path, up="-y")


def test_a_truncated_ascii_file_is_refused(originals, tmp_path):
    blob = originals["ascii"]
    lines, body = header_and_body(blob)
    rows = body.split(b"\n")
    for cut, expected in (((rows[:-3]), "truncated ascii body"), ((rows[:5] + [rows[5][:20]] + rows[6:]), "has")):
        path = tmp_path / "cut.ply"
        path.write_bytes(b"\n".join(lines) + b"\n" + b"\n".join(cut))
        with pytest.raises(PlyFormatError, match=expected):
            read_ply(path)


def test_a_large_face_element_after_the_vertices_is_never_parsed(originals, tmp_path):
    """10 M list rows after the vertex element: read at once, with no memory spent on them."""
    lines, body = header_and_body(originals["binary"])
    lines[-1:-1] = [b"element face 10000000", b"property list uchar int vertex_indices"]
    path = tmp_path / "faces.ply"
    path.write_bytes(b"\n".join(lines) + b"\n" + body + bytes(10_000_000))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    signal.alarm(5)
    try:
        assert read_ply(path).num_gaussians == 40
    finally:
        signal.alarm(0)
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024 < 100


def test_ascii_numbers_are_strict_and_nothing_follows_the_last_row(originals, tmp_path):
    lines, body = header_and_body(originals["ascii"])
    rows = body.split(b"\n")
    for changed, expected in (
        ([rows[0].replace(b" ", b" 1_0 ", 1).replace(b" ", b"", 1)] + rows[1:], "not a number"),
        (rows[:-1] + [rows[0], b""], "rows after the last element"),
    ):
        path = tmp_path / "strict.ply"
        path.write_bytes(b"\n".join(lines) + b"\n" + b"\n".join(changed))
        with pytest.raises(PlyFormatError, match=expected):
            read_ply(path)
