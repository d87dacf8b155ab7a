"""A reader for Paddle's tensor files (``fluid.io.save_vars``), with numpy only.

Layout of one file: uint32 version, uint64 LoD level (then, per level, a uint64
byte size and that many bytes of offsets), uint32 tensor version, int32 size of
a ``TensorDesc`` protobuf, the protobuf (field 1: data type; field 2: the dims,
one varint each), then the raw little-endian data.
"""
import struct
from pathlib import Path
from typing import List, Tuple, Union

import numpy

# Paddle's VarType codes for the data types these files hold.
_DTYPES = {2: "<i4", 3: "<i8", 4: "<f2", 5: "<f4", 6: "<f8"}


class PaddleFileError(ValueError):
    """A Paddle tensor file that is truncated, corrupt or of an unknown kind."""


def _varint(data: bytes, pos: int, path: Path) -> Tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data):
            raise PaddleFileError(f"{path}: the tensor description ends inside a number")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise PaddleFileError(f"{path}: a number in the tensor description is too long")


def parse_tensor_desc(desc: bytes, path: Path) -> Tuple[int, List[int]]:
    """RETURNS (Tuple[int, List[int]]): the data type code and the dims of a TensorDesc."""
    dtype, dims, pos = None, [], 0
    while pos < len(desc):
        key, pos = _varint(desc, pos, path)
        field, wire = key >> 3, key & 7
        if wire != 0:
            # Packed dims (wire type 2) are legal protobuf too.
            if field == 2 and wire == 2:
                size, pos = _varint(desc, pos, path)
                end = pos + size
                while pos < end:
                    dim, pos = _varint(desc, pos, path)
                    dims.append(dim)
                continue
            raise PaddleFileError(f"{path}: unexpected field {field} (wire type {wire}) in the tensor description")
        value, pos = _varint(desc, pos, path)
        if field == 1:
            dtype = value
        elif field == 2:
            # int64 dims: -1 (unknown) is stored as a 10-byte two's complement varint.
            dims.append(value - (1 << 64) if value >= 1 << 63 else value)
    if dtype is None:
        raise PaddleFileError(f"{path}: the tensor description has no data type")
    return dtype, dims


def read_paddle_tensor(path: Union[str, Path]) -> numpy.ndarray:
    """Read one tensor saved by Paddle.

    path (Union[str, Path]): The file.
    RETURNS (numpy.ndarray): The tensor, with its dims and data type.
    RAISES (PaddleFileError): The file is truncated, corrupt or not a Paddle tensor file.
    """
    path = Path(path)
    data = path.read_bytes()
    pos = 0

    def take(size: int, what: str) -> bytes:
        nonlocal pos
        if pos + size > len(data):
            raise PaddleFileError(
                f"{path}: truncated: {len(data)} bytes, the {what} needs {pos + size}"
            )
        chunk = data[pos : pos + size]
        pos += size
        return chunk

    (version,) = struct.unpack("<I", take(4, "version"))
    if version != 0:
        raise PaddleFileError(f"{path}: not a Paddle tensor file (version {version}, expected 0)")
    (lod_level,) = struct.unpack("<Q", take(8, "LoD level"))
    if lod_level > 16:
        raise PaddleFileError(f"{path}: not a Paddle tensor file (LoD level {lod_level})")
    for _ in range(lod_level):
        (size,) = struct.unpack("<Q", take(8, "LoD size"))
        take(size, "LoD offsets")
    (tensor_version,) = struct.unpack("<I", take(4, "tensor version"))
    if tensor_version != 0:
        raise PaddleFileError(f"{path}: unknown tensor version {tensor_version}")
    (desc_size,) = struct.unpack("<i", take(4, "description size"))
    if not 0 < desc_size < 1024:
        raise PaddleFileError(f"{path}: corrupt tensor description size {desc_size}")
    dtype_code, dims = parse_tensor_desc(take(desc_size, "tensor description"), path)
    if dtype_code not in _DTYPES:
        raise PaddleFileError(f"{path}: unsupported data type code {dtype_code}")
    if not dims or any(d < 0 for d in dims):
        raise PaddleFileError(f"{path}: corrupt dims {dims}")
    dtype = numpy.dtype(_DTYPES[dtype_code])
    count = int(numpy.prod(dims))
    body = take(count * dtype.itemsize, f"data of shape {dims}")
    if pos != len(data):
        raise PaddleFileError(f"{path}: {len(data) - pos} unexpected bytes after the data of shape {dims}")
    return numpy.frombuffer(body, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))
