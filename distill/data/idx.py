"""Read and write IDX files, the format of the original MNIST distribution (LeCun et al.).

Layout: two zero bytes, a type code, the number of dimensions ``d``, then ``d`` big-endian
uint32 sizes, then the data in C order (big-endian for multi-byte types). Files ending in
``.gz`` are gzip-compressed.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

# type code -> numpy big-endian dtype
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class IDXFormatError(ValueError):
    """The file is not a well-formed IDX file."""


def _open(path: Path, mode: str):
    return gzip.open(path, mode) if path.suffix == ".gz" else open(path, mode)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX (or IDX.gz) file into a numpy array of its stored shape and type."""
    path = Path(path)
    with _open(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise IDXFormatError(f"{path}: not an IDX file (expected two zero bytes, then type and rank)")
    type_code, rank = raw[2], raw[3]
    if type_code not in IDX_DTYPES:
        known = ", ".join(f"0x{code:02X}" for code in IDX_DTYPES)
        raise IDXFormatError(f"{path}: unknown IDX type code 0x{type_code:02X}; known: {known}")
    header_size = 4 + 4 * rank
    if len(raw) < header_size:
        raise IDXFormatError(f"{path}: truncated header ({len(raw)} bytes, rank {rank})")
    shape = struct.unpack(f">{rank}I", raw[4:header_size])
    dtype = IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header_size != expected:
        raise IDXFormatError(
            f"{path}: header says shape {shape} ({expected} data bytes) but the file holds {len(raw) - header_size}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzip-compressed when the name ends in ``.gz``)."""
    path = Path(path)
    codes = {dtype.newbyteorder("="): code for code, dtype in IDX_DTYPES.items()}
    native = np.asarray(array)
    code = codes.get(native.dtype.newbyteorder("="))
    if code is None:
        raise TypeError(
            f"IDX cannot store dtype {native.dtype}; use one of uint8, int8, int16, int32, float32, float64"
        )
    header = bytes([0, 0, code, native.ndim]) + struct.pack(f">{native.ndim}I", *native.shape)
    with _open(path, "wb") as handle:
        handle.write(header + native.astype(IDX_DTYPES[code]).tobytes())
