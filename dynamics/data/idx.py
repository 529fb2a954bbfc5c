"""IDX files (MNIST, KMNIST): parsing, writing, and the MNIST-style train/test loader (KMNIST also .npz).

IDX layout: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
0x0E float64), the number of dimensions, then each dimension as a big-endian int32, then the data big-endian.
"""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from dynamics.data.catalogue import DatasetInfo, missing_error
from dynamics.data.checksums import Checksum, read_verified
from dynamics.errors import DataError

__all__ = ["parse_idx", "encode_idx", "load_mnist_like"]

_CODES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode IDX bytes (already gunzipped) into an array of the stored dtype and shape.

    >>> parse_idx(encode_idx(np.arange(6, dtype=np.uint8).reshape(2, 3))).tolist()
    [[0, 1, 2], [3, 4, 5]]
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _CODES:
        raise DataError(f"{name} is not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name} is truncated: its IDX header needs {header} bytes, the file has {len(data)}")
    dims = struct.unpack(f">{ndim}i", data[4:header])
    dtype = np.dtype(_CODES[data[2]])
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(
            f"{name} is {'truncated' if len(data) < expected else 'too long'}: an IDX file of shape {dims} has "
            f"{expected} bytes, this one has {len(data)}"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX bytes of ``array`` (uint8, int8, int16, int32, float32 or float64)."""
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _CODES.items()}
    dtype = np.dtype(array.dtype).newbyteorder("=")
    if dtype not in codes:
        raise DataError(f"IDX cannot store dtype {array.dtype}")
    head = bytes([0, 0, codes[dtype], array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    return head + np.ascontiguousarray(array).astype(dtype.newbyteorder(">")).tobytes()


def _npz_array(data: bytes, path: Path) -> np.ndarray:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return z[z.files[0]]
    except (ValueError, OSError, zipfile.BadZipFile, IndexError) as exc:
        raise DataError(f"{path} is not a readable .npz file ({exc}); delete it and fetch it again") from exc


def load_mnist_like(
    info: DatasetInfo,
    folder: Path,
    split: str,
    verify: bool = True,
    checksums: Mapping[str, Checksum | str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) of ``split`` from IDX (``.gz`` or plain) or KMNIST ``.npz``."""
    prefix = "train" if split == "train" else "t10k"
    hint = f" (dynamics data download {info.name} --root {folder.parent})"
    arrays = []
    for kind, stem in (("images", f"{prefix}-images-idx3-ubyte"), ("labels", f"{prefix}-labels-idx1-ubyte")):
        candidates = [stem + ".gz", stem]
        npz = None
        if info.name == "kmnist":
            npz = f"kmnist-{split}-{'imgs' if kind == 'images' else 'labels'}.npz"
            candidates.append(npz)
        for cand in candidates:
            path = folder / cand
            if path.is_file():
                data = read_verified(path, info.name, verify, checksums, hint)
                arrays.append(_npz_array(data, path) if cand == npz else parse_idx(data, str(path)))
                break
        else:
            raise missing_error(info, folder, candidates)
    images, labels = arrays
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(
            f"{info.name} {split}: images of shape {images.shape} and labels of shape {labels.shape} in {folder} "
            f"do not form a dataset (expected (N, H, W) and (N,))"
        )
    return images, labels
