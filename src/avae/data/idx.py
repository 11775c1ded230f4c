"""Reader and writer for the IDX format of MNIST, raw or gzip-compressed.

Layout: two zero bytes, a dtype code, the number of dimensions, then one big-endian uint32 per
dimension, then the data, big-endian, row-major. See http://yann.lecun.com/exdb/mnist/.
"""
from __future__ import annotations

import gzip
import math
import os
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np

from avae.errors import AvaeError

DTYPE_CODES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
MAX_DIMS = 4
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20


def read_idx(path) -> np.ndarray:
    """Read an IDX file into a native-endian array of the dimensions in its header.

    Gzip is detected from the file's first bytes, not its name. Raises :class:`AvaeError`
    naming the file for any malformed header, truncated or over-long data, or corrupt gzip.
    """
    path = Path(path)
    compressed = False
    try:
        with open(path, "rb") as probe:
            compressed = probe.read(2) == _GZIP_MAGIC
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as stream:
            dtype, dims = _read_header(stream, path)
            expected = math.prod(dims) * dtype.itemsize
            if not compressed:
                # A raw file's size is known up front: reject a lying header without reading.
                available = os.path.getsize(path) - stream.tell()
                if available != expected:
                    raise _length_error(path, expected, available)
            data = _read_at_most(stream, expected + 1)
    except AvaeError:
        raise
    except FileNotFoundError:
        raise AvaeError(f"{path}: no such file") from None
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise AvaeError(f"{path}: cannot read IDX file ({'corrupt gzip: ' if compressed else ''}{err})") from None
    if len(data) != expected:
        raise _length_error(path, expected, len(data))
    array = np.frombuffer(data, dtype=dtype).reshape(dims)
    return array.astype(dtype.newbyteorder("="))  # copies: writable, native byte order


def _read_header(stream, path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    magic = stream.read(4)
    if len(magic) < 4:
        raise AvaeError(f"{path}: not an IDX file: only {len(magic)} bytes, the header alone needs 4")
    zero0, zero1, code, ndim = magic
    if zero0 or zero1:
        raise AvaeError(f"{path}: not an IDX file: magic number {magic.hex()} does not start with 0000")
    if code not in DTYPE_CODES:
        known = ", ".join(f"0x{c:02X}" for c in DTYPE_CODES)
        raise AvaeError(f"{path}: unknown IDX dtype code 0x{code:02X}; expected one of {known}")
    if not 1 <= ndim <= MAX_DIMS:
        raise AvaeError(f"{path}: IDX header claims {ndim} dimensions; expected 1 to {MAX_DIMS}")
    raw_dims = stream.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise AvaeError(f"{path}: truncated IDX header: {ndim} dimensions need {4 * ndim} bytes of sizes")
    dims = struct.unpack(f">{ndim}I", raw_dims)
    if 0 in dims:
        raise AvaeError(f"{path}: IDX header has a zero dimension {dims}; every dimension must be positive")
    return DTYPE_CODES[code], dims


def _read_at_most(stream, limit: int) -> bytes:
    # Chunked, because one read(limit) may allocate `limit` bytes before reading any.
    chunks, total = [], 0
    while total < limit:
        chunk = stream.read(min(_CHUNK, limit - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _length_error(path: Path, expected: int, actual: int) -> AvaeError:
    if actual < expected:
        return AvaeError(f"{path}: truncated IDX file: header promises {expected} bytes of data, file has {actual}")
    # A gzip stream is read only to expected + 1 bytes, so its full length is not known.
    return AvaeError(
        f"{path}: trailing bytes in IDX file: header promises {expected} bytes of data, file has at least {actual}"
    )


def write_idx(path, array) -> None:
    """Write ``array`` as an IDX file, gzip-compressed if ``path`` ends with ``.gz``.

    The file appears atomically (temporary file in the same folder, then renamed).
    """
    path = Path(path)
    array = np.asarray(array)
    codes = {dtype.newbyteorder("="): code for code, dtype in DTYPE_CODES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None:
        known = ", ".join(str(d) for d in codes)
        raise AvaeError(f"{path}: IDX cannot store dtype {array.dtype}; expected one of {known}")
    if not 1 <= array.ndim <= MAX_DIMS or 0 in array.shape:
        raise AvaeError(f"{path}: IDX needs 1 to {MAX_DIMS} positive dimensions, array has shape {array.shape}")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=DTYPE_CODES[code]).tobytes()

    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise AvaeError(f"{path}: cannot write IDX file ({err})") from None
    try:
        with os.fdopen(fd, "wb") as out:
            if path.name.endswith(".gz"):
                with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as zipped:
                    zipped.write(payload)
            else:
                out.write(payload)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
