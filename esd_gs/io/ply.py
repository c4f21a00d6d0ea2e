"""Read and write the 3DGS ``.ply`` that every Gaussian-splat viewer expects: the original 3DGS layout.

Layout written: one ``vertex`` element, ``binary_little_endian``, float32 properties in this order::

    x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 f_rest_0 .. f_rest_{3(K-1)-1} opacity scale_0 scale_1 scale_2 rot_0 .. rot_3

- positions in file coordinates (world rotated by :func:`esd_gs.io.axes.up_rotation`; default up ``"-y"``);
- normals are 0 (unused, kept because the original 3DGS loader reads them);
- ``f_dc_c = sh0[:, 0, c]``; ``f_rest`` is channel-major: ``shN [N, K-1, 3] -> [N, 3, K-1] -> [N, 3(K-1)]``;
- ``opacity`` is the raw logit, ``scale_i`` raw logs, ``rot_*`` the raw quaternion w, x, y, z (not normalised).

The reader looks properties up by name (any order, extra properties ignored, normals optional), accepts ascii and
binary of either endianness (reading only the vertex rows: binary ones memory-mapped, ascii ones parsed in chunks;
elements after the vertex element are never parsed, list rows before it are walked within a bound), infers the SH
degree from the number of ``f_rest_*`` (0, 9, 24, 45 -> 0..3), and turns every malformed file, and every path that
is not a regular file (a folder, a FIFO, a missing path, a dangling symlink, a symlink loop), into a one-line
:class:`PlyFormatError`. The header is parsed here and the size it implies is checked against the file size before
any body is parsed, so a truncated file or an absurd vertex count is reported without a large allocation.
"""

from __future__ import annotations

import errno
import functools
import io
import mmap
import os
import re
import stat
import struct
import warnings
from dataclasses import dataclass, field
from typing import BinaryIO, Iterable, Union

import numpy as np
import torch
from torch import Tensor

from ..atomic import atomic_write_bytes
from ..files import NotRegularFile, open_regular, special_kind
from ..scene import GaussianScene, nonfinite_rows
from ..sh import num_sh_bases, sh_degree_of
from .axes import UpAxis, transform_scene_params, up_rotation

PathLike = Union[str, "os.PathLike[str]"]
"""A file path."""
SceneOrParams = Union[GaussianScene, dict[str, Tensor]]
"""A scene, or its raw parameter dict (keys as in :mod:`esd_gs.scene`)."""

MAX_HEADER_BYTES = 1 << 20
"""A header longer than this is rejected (a real 3DGS header is ~1.5 KB)."""
MAX_LISTS_BEFORE_VERTEX = 100_000
"""Lists (rows times list properties) accepted before the vertex element: its offset is known only after walking
them one by one (a binary body); elements after the vertex element are never read."""
ASCII_CHUNK_BYTES = 1 << 20
"""An ascii body is read and parsed this many bytes at a time (whole rows), so memory stays bounded."""
MAX_ASCII_ROW_BYTES = 1 << 22
"""An ascii vertex row longer than this (or than 256 bytes a property, if more) is refused: no number needs it."""


_NUMPY_TYPES = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}
_STRUCT_CODES = {"i1": "b", "u1": "B", "i2": "h", "u2": "H", "i4": "i", "u4": "I", "f4": "f", "f8": "d"}
_ASCII_NUMBER = re.compile(rb"[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf)", re.IGNORECASE)
_ASCII_PLAIN = b"0123456789.+-eE \t\r\n"
"""What most ascii bodies hold: those are parsed by numpy's loadtxt (which refuses any malformed number); others
(nan, inf, vertical tabs, form feeds, a lone carriage return) are checked by a regular expression first."""
_TYPE_SIZES = {
    "char": 1,
    "int8": 1,
    "uchar": 1,
    "uint8": 1,
    "short": 2,
    "int16": 2,
    "ushort": 2,
    "uint16": 2,
    "int": 4,
    "int32": 4,
    "uint": 4,
    "uint32": 4,
    "float": 4,
    "float32": 4,
    "double": 8,
    "float64": 8,
}
_FORMATS = ("ascii", "binary_little_endian", "binary_big_endian")
_REQUIRED = (
    "x",
    "y",
    "z",
    "f_dc_0",
    "f_dc_1",
    "f_dc_2",
    "opacity",
    "scale_0",
    "scale_1",
    "scale_2",
    "rot_0",
    "rot_1",
    "rot_2",
    "rot_3",
)
_F_REST_DEGREE = {3 * (num_sh_bases(d) - 1): d for d in range(4)}  # {0: 0, 9: 1, 24: 2, 45: 3}
_END_HEADER = re.compile(rb"(?:^|\n)end_header[ \t]*\r?\n")


class PlyFormatError(ValueError):
    """A file that is not a readable 3DGS ``.ply``; the message names the file and the problem on one line."""


# ---------------------------------------------------------------------------------------------------- header


@dataclass
class _Property:
    name: str
    size: int  # bytes of the scalar, or of the count of a list property
    is_list: bool = False
    type: str = "float"  # the scalar type's PLY name (the count's, for a list)
    item_size: int = 0  # bytes of one item of a list property


@dataclass
class _Element:
    name: str
    count: int
    properties: list[_Property] = field(default_factory=list)


@dataclass
class _Header:
    format: str
    elements: list[_Element]
    body_offset: int


def _fail(path: PathLike, problem: str) -> PlyFormatError:
    return PlyFormatError(f"{os.fspath(path)}: {' '.join(problem.split())}")


def _parse_header(path: PathLike, head: bytes) -> _Header:
    """Parse the header from the first bytes of the file (ply / format / element / property / end_header)."""
    if not re.match(rb"ply[ \t]*\r?\n", head):
        raise _fail(path, "not a PLY file (it does not start with the 'ply' magic line)")
    end = _END_HEADER.search(head)
    if end is None:
        if len(head) >= MAX_HEADER_BYTES:
            raise _fail(path, f"no 'end_header' line in the first {MAX_HEADER_BYTES} bytes")
        raise _fail(path, "PLY header has no 'end_header' line (file truncated?)")
    try:
        text = head[: end.start()].decode("ascii")
    except UnicodeDecodeError:
        raise _fail(path, "PLY header is not ASCII text") from None
    fmt: str | None = None
    elements: list[_Element] = []
    # Lines end at "\n" only (an optional "\r" before it), as plyfile reads them: str.splitlines would also split
    # at "\r", "\x0c" and others inside a comment, and the two parsers would then disagree about the properties.
    for number, line in enumerate(text.split("\n")[1:], start=2):
        line = line[:-1] if line.endswith("\r") else line
        tokens = line.split()
        if not tokens or tokens[0] in ("comment", "obj_info"):
            continue
        bad = f"bad PLY header line {number}: {line.strip()!r}"
        if tokens[0] == "format":
            if len(tokens) != 3 or tokens[1] not in _FORMATS:
                raise _fail(path, f"{bad} (format must be one of {', '.join(_FORMATS)})")
            if fmt is not None:  # which one would win is a guess: plyfile refuses it too
                raise _fail(path, f"{bad} (a second 'format' line; the header may have only one)")
            fmt = tokens[1]
        elif tokens[0] == "element":
            if len(tokens) != 3 or not tokens[2].isascii() or not tokens[2].isdigit():
                raise _fail(path, f"{bad} (expected 'element NAME COUNT')")
            elements.append(_Element(tokens[1], int(tokens[2])))
        elif tokens[0] == "property":
            if not elements:
                raise _fail(path, f"{bad} (property before any element)")
            if len(tokens) == 5 and tokens[1] == "list" and tokens[2] in _TYPE_SIZES and tokens[3] in _TYPE_SIZES:
                elements[-1].properties.append(
                    _Property(tokens[4], _TYPE_SIZES[tokens[2]], True, tokens[2], _TYPE_SIZES[tokens[3]])
                )
            elif len(tokens) == 3 and tokens[1] in _TYPE_SIZES:
                elements[-1].properties.append(_Property(tokens[2], _TYPE_SIZES[tokens[1]], type=tokens[1]))
            else:
                raise _fail(path, f"{bad} (unknown property type)")
        else:
            raise _fail(path, f"{bad} (unknown keyword)")
    if fmt is None:
        raise _fail(path, "PLY header has no 'format' line")
    empty = [e.name for e in elements if e.count and not e.properties]
    if empty:  # zero-size rows: nothing to read, but a reader would loop over every one of them
        raise _fail(path, f"element {empty[0]} declares rows but no properties")
    return _Header(fmt, elements, end.end())


def _check_body_size(path: PathLike, header: _Header, file_size: int) -> None:
    """Compare the body size implied by the header (a lower bound when list properties exist) with the file."""
    body = file_size - header.body_offset
    if header.format == "ascii":
        # Every value takes at least one character and one separator.
        needed = sum(e.count * 2 * len(e.properties) for e in header.elements) - 1
    else:
        needed = sum(e.count * sum(p.size for p in e.properties) for e in header.elements)
    if body < needed:
        counts = ", ".join(f"{e.count} {e.name}" for e in header.elements)
        raise _fail(
            path,
            f"truncated or corrupt: the header declares {counts}, which needs at least {needed} bytes "
            f"of data, but the file has {max(body, 0)}",
        )


def _check_vertex_element(path: PathLike, header: _Header) -> tuple[_Element, int]:
    """Find the vertex element, check the required properties and return it with the SH degree."""
    vertex = next((e for e in header.elements if e.name == "vertex"), None)
    if vertex is None:
        names = ", ".join(e.name for e in header.elements) or "none"
        raise _fail(path, f"no 'vertex' element (elements: {names})")
    if vertex.count == 0:
        raise _fail(path, "contains no Gaussians (vertex count is 0)")
    names = {p.name for p in vertex.properties}
    if len(names) != len(vertex.properties):
        seen = [p.name for p in vertex.properties]
        raise _fail(path, f"vertex property {next(n for n in seen if seen.count(n) > 1)} is declared twice")
    if "packed_position" in names:
        raise _fail(path, "compressed PLY (SuperSplat packed layout) is not supported; decompress it first")
    missing = [n for n in _REQUIRED if n not in names]
    if missing:
        raise _fail(path, f"not a 3DGS splat file: missing vertex properties {', '.join(missing)}")
    lists = [p.name for p in vertex.properties if p.is_list]
    if lists:
        raise _fail(path, f"vertex has list properties ({', '.join(lists)}), not a 3DGS splat file")
    n_rest = sum(1 for n in names if re.fullmatch(r"f_rest_\d+", n))
    if n_rest not in _F_REST_DEGREE:
        raise _fail(path, f"has {n_rest} f_rest properties; expected 0, 9, 24 or 45 (SH degree 0..3)")
    absent = [f"f_rest_{i}" for i in range(n_rest) if f"f_rest_{i}" not in names]
    if absent:
        raise _fail(path, f"f_rest properties are not numbered 0..{n_rest - 1} (missing {', '.join(absent[:5])})")
    return vertex, _F_REST_DEGREE[n_rest]


Overflow = dict[int, tuple[int, float]]
"""Property index -> (row, value) of the first value in that column beyond float32's range (read as a double)."""


def _narrow(values: np.ndarray, first_row: int, columns: list[int], overflow: Overflow) -> np.ndarray:
    """Doubles [R, C] -> float32 without numpy's overflow warning; the first finite value beyond float32's range of
    each column (``columns`` are their property indices) is noted in ``overflow``, for :func:`read_ply` to refuse
    when the property is used."""
    with np.errstate(over="ignore"):
        narrow = values.astype(np.float32)
    beyond = np.isinf(narrow) & np.isfinite(values)
    for c in np.flatnonzero(beyond.any(axis=0)):
        row = int(np.argmax(beyond[:, c]))
        overflow.setdefault(columns[c], (first_row + row, float(values[row, c])))
    return narrow


def _float_columns(rows: np.ndarray, vertex: _Element, overflow: Overflow) -> np.ndarray:
    """A structured array of vertex rows -> [N, P] float32 in the header's property order (a copy)."""
    columns = []
    for i, p in enumerate(vertex.properties):
        column = np.asarray(rows[p.name])
        if column.dtype.kind == "f" and column.dtype.itemsize == 8:
            columns.append(_narrow(column[:, None], 0, [i], overflow)[:, 0])
        else:
            columns.append(column.astype(np.float32))
    return np.stack(columns, axis=1)


def _truncated_ascii(path: PathLike, vertex: _Element) -> PlyFormatError:
    return _fail(path, f"truncated ascii body: it has fewer than {vertex.count} vertex rows")


def _after_newlines(data: bytes, count: int) -> int:
    """The offset in ``data`` just after its ``count``-th newline (there are at least that many)."""
    return int(np.flatnonzero(np.frombuffer(data, np.uint8) == 10)[count - 1]) + 1


@functools.lru_cache(maxsize=8)
def _ascii_rows_pattern(width: int) -> re.Pattern:
    """Whole ascii rows of ``width`` numbers each, every row ending with a newline (whitespace as bytes.split)."""
    number, blank = _ASCII_NUMBER.pattern, rb"[ \t\r\x0b\x0c]"
    row = rb"(?>%s*%s(?:%s+%s){%d}%s*\n)" % (blank, number, blank, number, width - 1, blank)
    return re.compile(rb"(?:%s)*" % row, re.IGNORECASE)


def _diagnose_ascii_rows(path: PathLike, block: bytes, first_row: int, vertex: _Element) -> None:
    """Raise the error that says what is wrong with these rows (the careful, slow reading of a bad block)."""
    rows = block.split(b"\n")[:-1]
    if not all(row.strip() for row in rows):
        raise _truncated_ascii(path, vertex)
    values = [row.split() for row in rows]
    width = len(vertex.properties)
    bad = next((i for i, row in enumerate(values) if len(row) != width), None)
    if bad is not None:
        raise _fail(path, f"ascii vertex row {first_row + bad + 1} has {len(values[bad])} values, expected {width}")
    word = next((t for row in values for t in row if not _ASCII_NUMBER.fullmatch(t)), None)
    if word is not None:
        raise _fail(path, f"ascii vertex value {word[:20].decode('ascii', 'replace')!r} is not a number")


def _parse_ascii_rows(path: PathLike, block: bytes, rows: int, first_row: int, vertex: _Element) -> np.ndarray:
    """``rows`` whole ascii rows (each ending with a newline) -> [rows, P] doubles, or the error that says why not.

    Plain rows (digits, signs, points, exponents, blanks) go to numpy's loadtxt, which refuses any malformed number
    and any ragged row; others are first matched as a whole against the strict number syntax."""
    width = len(vertex.properties)
    values = None
    if not block.translate(None, _ASCII_PLAIN) and block.count(b"\r") == block.count(b"\r\n"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "input contained no data" for blank rows, refused below
                values = np.loadtxt(io.BytesIO(block), dtype=np.float64, comments=None, ndmin=2)
        except ValueError:
            values = None
    elif _ascii_rows_pattern(width).fullmatch(block):
        values = np.array(block.split(), dtype=np.float64).reshape(-1, width)
    if values is not None and values.shape == (rows, width):
        return values
    _diagnose_ascii_rows(path, block, first_row, vertex)
    raise _fail(path, f"ascii vertex rows {first_row + 1}..{first_row + rows} could not be parsed")


def _skip_ascii_rows(path: PathLike, f: BinaryIO, offset: int, rows: int, vertex: _Element) -> int:
    """The offset just after ``rows`` more lines (the rows of elements before the vertex element), chunk by chunk."""
    f.seek(offset)
    while rows:
        data = f.read(ASCII_CHUNK_BYTES)
        if not data:
            raise _truncated_ascii(path, vertex)
        found = data.count(b"\n")
        if found >= rows:
            return offset + _after_newlines(data, rows)
        rows -= found
        offset += len(data)
    return offset


def _read_ascii_vertices(
    path: PathLike, f: BinaryIO, offset: int, vertex: _Element, last: bool, overflow: Overflow
) -> np.ndarray:
    """The ascii vertex rows from ``offset`` as [N, P] float32, read and parsed a chunk of whole rows at a time.

    Every row must end with a newline (a file cut inside its last number is refused, not read with a shorter
    number); when the vertex element is the ``last`` one, nothing but blanks may follow its rows."""
    n, width = vertex.count, len(vertex.properties)
    longest = max(MAX_ASCII_ROW_BYTES, 256 * width)
    table = np.empty((n, width), np.float32)
    columns = list(range(width))
    f.seek(offset)
    done, pending = 0, b""
    while done < n:
        data = f.read(ASCII_CHUNK_BYTES)
        if not data:
            if pending.strip() and done == n - 1:
                _diagnose_ascii_rows(path, pending + b"\n", done, vertex)  # a bad row is named as such first
                raise _fail(
                    path,
                    f"ascii vertex row {n} does not end with a newline: the file is cut short (inside its last "
                    f"number, perhaps)",
                )
            raise _truncated_ascii(path, vertex)
        buffer = pending + data if pending else data
        end = buffer.rfind(b"\n") + 1
        block, pending = buffer[:end], buffer[end:]
        if len(pending) > longest:
            raise _fail(path, f"ascii vertex row {done + 1} is longer than {longest} bytes")
        if not block:
            continue
        rows = block.count(b"\n")
        if rows > n - done:  # the vertex rows end here: what follows is for the trailing check
            cut = _after_newlines(block, n - done)
            block, pending, rows = block[:cut], block[cut:] + pending, n - done
        table[done : done + rows] = _narrow(_parse_ascii_rows(path, block, rows, done, vertex), done, columns, overflow)
        done += rows
    while last:
        if pending.strip():
            raise _fail(path, "ascii body has rows after the last element")
        pending = f.read(ASCII_CHUNK_BYTES)
        if not pending:
            break
    return table


def _walk_lists(path: PathLike, view: mmap.mmap, offset: int, file_size: int, element: _Element, endian: str) -> int:
    """The offset just after ``element``'s rows from ``offset``, reading nothing but each list's length."""
    steps, fixed = [], 0  # (bytes before the list, its length's struct, bytes of an item, its name)
    for p in element.properties:
        if not p.is_list:
            fixed += p.size
            continue
        if _NUMPY_TYPES[p.type][0] == "f":
            raise _fail(path, f"list property {p.name} has the count type {p.type}, not an integer type")
        steps.append((fixed, struct.Struct(endian + _STRUCT_CODES[_NUMPY_TYPES[p.type]]), p.item_size, p.name))
        fixed = 0
    for row in range(element.count):
        for skip, length, item_size, name in steps:
            offset += skip
            if offset + length.size > file_size:
                break
            (items,) = length.unpack_from(view, offset)
            if items < 0:
                raise _fail(path, f"element {element.name} row {row + 1}: list {name} has a negative length ({items})")
            offset += length.size + items * item_size
        else:
            offset += fixed
            if offset <= file_size:
                continue
        raise _fail(path, f"element {element.name} row {row + 1} runs past the end of the file (truncated or corrupt)")
    return offset


def _binary_vertex_offset(path: PathLike, f: BinaryIO, file_size: int, header: _Header, vertex: _Element) -> int:
    """Where the binary vertex rows start: the elements before them are skipped, fixed-size ones by arithmetic and
    ones with list properties by walking their lists (at most :data:`MAX_LISTS_BEFORE_VERTEX`) in a read-only map of
    the file."""
    before = header.elements[: header.elements.index(vertex)]
    walked = [e for e in before if e.count and any(p.is_list for p in e.properties)]
    lists = sum(e.count * sum(p.is_list for p in e.properties) for e in walked)
    if lists > MAX_LISTS_BEFORE_VERTEX:
        raise _fail(
            path,
            f"element {walked[0].name} has {lists} lists before the vertex element, whose start is known only after "
            f"walking them (at most {MAX_LISTS_BEFORE_VERTEX} are walked)",
        )
    endian = "<" if header.format == "binary_little_endian" else ">"
    offset = header.body_offset
    view = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if walked else None
    try:
        for element in before:
            if element in walked:
                offset = _walk_lists(path, view, offset, file_size, element, endian)
            else:
                offset += element.count * sum(p.size for p in element.properties)
    finally:
        if view is not None:
            view.close()
    return offset


def _read_vertex_table(
    path: PathLike, f: BinaryIO, file_size: int, header: _Header, vertex: _Element, overflow: Overflow
) -> np.ndarray:
    """The vertex rows as [N, P] float32 (a copy), reading nothing but them and what locates them.

    Binary: the vertex block is memory-mapped at its offset; elements after it are never read. Ascii: the rows
    before it are skipped line by line and its rows parsed in chunks; a truncated, ragged, unterminated or
    non-numeric body is refused."""
    index = header.elements.index(vertex)
    if header.format == "ascii":
        offset = _skip_ascii_rows(path, f, header.body_offset, sum(e.count for e in header.elements[:index]), vertex)
        return _read_ascii_vertices(path, f, offset, vertex, header.elements[-1] is vertex, overflow)
    offset = _binary_vertex_offset(path, f, file_size, header, vertex)
    endian = "<" if header.format == "binary_little_endian" else ">"
    dtype = np.dtype([(p.name, endian + _NUMPY_TYPES[p.type]) for p in vertex.properties])
    if offset + vertex.count * dtype.itemsize > file_size:
        raise _fail(
            path,
            f"truncated or corrupt: the {vertex.count} vertex rows need {vertex.count * dtype.itemsize} bytes from "
            f"offset {offset}, but the file has {file_size} bytes",
        )
    rows = np.memmap(f, dtype=dtype, mode="r", offset=offset, shape=(vertex.count,))
    try:
        if all(dtype.fields[p.name][0] == np.dtype("<f4") for p in vertex.properties):  # the usual file: one copy
            return np.array(rows.view("<f4").reshape(vertex.count, len(vertex.properties)))
        return _float_columns(rows, vertex, overflow)
    finally:
        del rows


def _path_problem(error: OSError) -> str:
    """What is wrong with a path that ``stat`` or ``open`` refused, in words."""
    if error.errno in (errno.ENOENT, errno.ENOTDIR):
        return "does not exist"
    if error.errno == errno.ELOOP:
        return "is a symbolic link loop (too many levels of symbolic links)"
    if error.errno == errno.EISDIR:
        return "is a folder, not a .ply file"
    if error.errno in (errno.EACCES, errno.EPERM):
        return "cannot be read: permission denied"
    return f"cannot be read: {error.strerror or error}"


def _check_regular(path: PathLike, mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise _fail(path, "is a folder, not a .ply file")
    if not stat.S_ISREG(mode):
        raise _fail(path, f"is not a regular file (it is {special_kind(mode)}); give a .ply file")


def _open_regular_file(path: PathLike) -> BinaryIO:
    """Open ``path`` for reading if it is a regular file; a PlyFormatError naming it otherwise. Checked with
    ``stat`` before the open (to name a dangling link or a loop), and again on the open descriptor
    (``files.open_regular``: a FIFO swapped in meanwhile is refused without blocking)."""
    name = os.fspath(path)
    try:
        info = os.stat(name)
    except FileNotFoundError:
        if os.path.islink(name):
            raise _fail(path, "is a dangling symbolic link (its target does not exist)") from None
        raise _fail(path, "does not exist") from None
    except OSError as error:
        raise _fail(path, _path_problem(error)) from None
    except ValueError:  # an embedded NUL byte
        raise _fail(path, "is not a valid path") from None
    _check_regular(path, info.st_mode)
    try:
        fd = open_regular(name)
    except OSError as error:
        raise _fail(path, _path_problem(error)) from None
    except NotRegularFile as exc:
        raise _fail(path, f"is not a regular file (it is {exc.kind}); give a .ply file") from None
    return os.fdopen(fd, "rb")


# ---------------------------------------------------------------------------------------------------- read


def read_ply(path: PathLike, up: UpAxis = "-y", device: torch.device | str = "cpu") -> GaussianScene:
    """Load a 3DGS ``.ply`` into a :class:`GaussianScene` (float32), rotating file coordinates back to our world.

    ``up`` is the file's up axis (see :mod:`esd_gs.io.axes`); the inverse rotation ``R^T`` is applied. Raises
    :class:`PlyFormatError` for any file that is not a readable, finite, non-empty 3DGS splat file.
    """
    up_rotation(up)  # validate before touching the file
    overflow: Overflow = {}
    with _open_regular_file(path) as f:
        head = f.read(MAX_HEADER_BYTES)
        file_size = os.fstat(f.fileno()).st_size
        header = _parse_header(path, head)
        _check_body_size(path, header, file_size)
        vertex, degree = _check_vertex_element(path, header)
        table = _read_vertex_table(path, f, file_size, header, vertex, overflow)  # [N, P] float32, a copy
    names_in_file = [p.name for p in vertex.properties]
    used = set(_REQUIRED) | {n for n in names_in_file if re.fullmatch(r"f_rest_\d+", n)}
    beyond = sorted((row, names_in_file[c], value) for c, (row, value) in overflow.items() if names_in_file[c] in used)
    if beyond:  # a double too large for float32 (unused properties, such as normals, may overflow unseen)
        row, name, value = beyond[0]
        raise _fail(path, f"vertex row {row + 1}: {name} = {value:g} is beyond float32's range (+-3.4e38)")

    def columns(names: Iterable[str]) -> np.ndarray:
        return table[:, [names_in_file.index(name) for name in names]]

    n = vertex.count
    k_rest = num_sh_bases(degree) - 1
    means = columns(["x", "y", "z"])
    sh0 = columns([f"f_dc_{c}" for c in range(3)])
    f_rest = columns([f"f_rest_{i}" for i in range(3 * k_rest)]) if k_rest else np.zeros((n, 0), np.float32)
    opacities = columns(["opacity"])
    scales = columns([f"scale_{i}" for i in range(3)])
    quats = columns([f"rot_{i}" for i in range(4)])
    params = {
        "means": torch.from_numpy(means),
        "scales": torch.from_numpy(scales),
        "quats": torch.from_numpy(quats),
        "opacities": torch.from_numpy(opacities[:, 0].copy()),
        "sh0": torch.from_numpy(sh0).reshape(n, 1, 3),
        # channel-major [N, 3 * (K-1)] -> [N, 3, K-1] -> [N, K-1, 3]
        "shN": torch.from_numpy(f_rest).reshape(n, 3, k_rest).transpose(1, 2).contiguous(),
    }
    bad = nonfinite_rows(params)
    if bad.any():
        raise _fail(path, f"{int(bad.sum())} of {n} Gaussians have NaN or Inf values")
    if up != "z":
        params = transform_scene_params(params, up_rotation(up).T)
        overflow = nonfinite_rows(params)
        if overflow.any():  # finite values near float32's limit can overflow when quaternions or SH are rotated
            raise _fail(
                path,
                f"{int(overflow.sum())} of {n} Gaussians have values too large to rotate from up "
                f"axis {up} (near float32's limit)",
            )
    return GaussianScene({k: v.to(device) for k, v in params.items()})


# ---------------------------------------------------------------------------------------------------- write


def prepare_params(scene_or_params: SceneOrParams) -> dict[str, Tensor]:
    """Detached float32 CPU copies of a scene's raw parameters, refusing empty scenes and non-finite values."""
    scene = scene_or_params if isinstance(scene_or_params, GaussianScene) else GaussianScene(dict(scene_or_params))
    params = {k: v.detach().to("cpu", torch.float32) for k, v in scene.params.items()}
    n = params["means"].shape[0]
    if n == 0:
        raise ValueError("the scene contains no Gaussians; nothing to write")
    bad = nonfinite_rows(params)
    if bad.any():
        raise ValueError(f"refusing to write: {int(bad.sum())} of {n} Gaussians have NaN or Inf parameters")
    return params


def to_file_axes(params: dict[str, Tensor], up: UpAxis) -> dict[str, Tensor]:
    """World parameters rotated to a file's up axis; ValueError when a value overflows (near float32's limit), so
    that esd-gs never writes a file it would then refuse to read."""
    if up == "z":
        return params
    params = transform_scene_params(params, up_rotation(up))
    bad = nonfinite_rows(params)
    if bad.any():
        raise ValueError(
            f"refusing to write: {int(bad.sum())} Gaussians have values too large to rotate to up axis {up}"
        )
    return params


def ply_property_names(sh_degree: int) -> list[str]:
    """The vertex property names :func:`write_ply` writes for an SH degree, in file order."""
    n_rest = 3 * (num_sh_bases(sh_degree) - 1)
    return (
        ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
        + [f"f_rest_{i}" for i in range(n_rest)]
        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    )


def write_ply(
    scene_or_params: SceneOrParams,
    path: PathLike,
    up: UpAxis = "-y",
    pad_sh_degree: int | None = None,
) -> None:
    """Write a scene as a 3DGS ``.ply`` (layout in the module docstring), atomically.

    ``up`` is the up axis the file should have (default ``"-y"``, what viewers expect). ``pad_sh_degree`` zero-pads
    the higher SH bands to that degree (e.g. 3 -> 45 ``f_rest``, needed by some consumers); it may not be lower
    than the scene's degree. Raises ``ValueError`` for empty scenes or NaN/Inf parameters.
    """
    up_rotation(up)  # validate
    params = prepare_params(scene_or_params)
    n = params["means"].shape[0]
    degree = sh_degree_of(params["shN"].shape[1] + 1)
    out_degree = degree if pad_sh_degree is None else pad_sh_degree
    if out_degree not in range(4):
        raise ValueError(f"pad_sh_degree must be in 0..3, got {pad_sh_degree}")
    if out_degree < degree:
        raise ValueError(f"cannot pad SH to degree {out_degree}: the scene has SH degree {degree} (would lose bands)")
    params = to_file_axes(params, up)

    shN = params["shN"]
    pad = num_sh_bases(out_degree) - num_sh_bases(degree)
    if pad:
        shN = torch.cat([shN, shN.new_zeros(n, pad, 3)], dim=1)
    columns = [
        params["means"],
        torch.zeros(n, 3),
        params["sh0"].reshape(n, 3),
        shN.transpose(1, 2).reshape(n, -1),  # channel-major: all R, then G, then B
        params["opacities"].reshape(n, 1),
        params["scales"],
        params["quats"],
    ]
    data = np.ascontiguousarray(torch.cat(columns, dim=1).numpy().astype("<f4"))
    names = ply_property_names(out_degree)
    assert data.shape[1] == len(names)
    header = f"ply\nformat binary_little_endian 1.0\nelement vertex {n}\n"
    header += "".join(f"property float {name}\n" for name in names) + "end_header\n"
    atomic_write_bytes(path, [header.encode("ascii"), memoryview(data).cast("B")])
