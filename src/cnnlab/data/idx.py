"""Reader for the IDX format of MNIST and Fashion-MNIST (gzipped or raw).

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions),
one big-endian uint32 per dimension, then the data. Everything read is validated so a bad file
fails with its name and what is wrong, not with a reshape error three calls later.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from cnnlab.errors import IDXFormatError

# IDX type codes -> numpy dtypes (big-endian where it matters). MNIST uses only 0x08 (uint8).
IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as err:
        raise IDXFormatError(
            f"{path}: the gzip stream is truncated or corrupted ({err}). Delete the file and "
            f"fetch it again (see docs/data.md)."
        ) from err


def read_idx(path: str | Path, expected_ndim: int | None = None) -> torch.Tensor:
    """Read one IDX file (``.gz`` or raw) into a tensor, validating header and size."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise IDXFormatError(f"{path}: {len(data)} bytes is too short for an IDX header")
    zero1, zero2, type_code, ndim = data[:4]
    if zero1 != 0 or zero2 != 0 or type_code not in IDX_DTYPES or ndim == 0:
        raise IDXFormatError(
            f"{path}: wrong magic number 0x{data[:4].hex()}; an IDX file starts with 0x0000 then "
            f"a type code (0x08 for uint8) and the number of dimensions (e.g. 0x00000803 for "
            f"images, 0x00000801 for labels). Is this the right file?"
        )
    if expected_ndim is not None and ndim != expected_ndim:
        raise IDXFormatError(
            f"{path}: has {ndim} dimensions, expected {expected_ndim} "
            f"({'images' if expected_ndim == 3 else 'labels'})"
        )
    header_end = 4 + 4 * ndim
    if len(data) < header_end:
        raise IDXFormatError(f"{path}: truncated inside the header ({len(data)} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(data[4:header_end], dtype=">u4"))
    dtype = IDX_DTYPES[type_code]
    expected = int(np.prod(shape)) * dtype.itemsize
    payload = len(data) - header_end
    if payload != expected:
        what = "truncated" if payload < expected else "longer than its header says"
        raise IDXFormatError(
            f"{path}: {what}: header says shape {shape} ({expected:,} bytes of data), "
            f"file has {payload:,} bytes"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_end).reshape(shape)
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))


def write_idx(path: str | Path, tensor: torch.Tensor) -> None:
    """Write a uint8 tensor as IDX (gzipped when the name ends in .gz). Used by tests and tools
    that make small IDX sets."""
    path = Path(path)
    array = tensor.numpy().astype(np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    data = header + array.tobytes()
    path.write_bytes(gzip.compress(data, compresslevel=1) if path.suffix == ".gz" else data)
