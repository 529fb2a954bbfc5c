"""SVHN cropped digits (format 2): ``train_32x32.mat``, ``test_32x32.mat``, ``extra_32x32.mat``.

Each file holds ``X`` of shape (32, 32, 3, N) uint8 and ``y`` of shape (N, 1) with labels 1..10, where 10
means the digit 0. Files are MATLAB v5 (read with :func:`scipy.io.loadmat`).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from dynamics.errors import DataError

__all__ = ["parse_svhn"]


def parse_svhn(data: bytes, name: str = "svhn.mat") -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 in 0..9 from the bytes of an SVHN ``.mat`` file.

    >>> import scipy.io
    >>> buf = io.BytesIO()
    >>> scipy.io.savemat(buf, {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[10], [3]])})
    >>> x, y = parse_svhn(buf.getvalue())
    >>> x.shape, y.tolist()
    ((2, 3, 32, 32), [0, 3])
    """
    import scipy.io

    try:
        mat = scipy.io.loadmat(io.BytesIO(data))
    except Exception as exc:  # scipy raises ValueError, TypeError, OSError... on broken files
        raise DataError(f"{name} is not a readable MATLAB file ({type(exc).__name__}: {exc}); it is truncated or "
                        f"corrupt: delete it and fetch it again") from exc
    if "X" not in mat or "y" not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DataError(f"{name}: expected variables 'X' and 'y', found {found}")
    x, y = mat["X"], np.asarray(mat["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
        raise DataError(f"{name}: expected X of shape (32, 32, 3, N) and y of N labels, got {x.shape} and {len(y)}")
    if len(y) and (y.min() < 1 or y.max() > 10):
        raise DataError(f"{name}: SVHN labels must lie in 1..10 (10 = digit 0), found {y.min()}..{y.max()}")
    y = y.astype(np.int64)
    y[y == 10] = 0
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), y


def svhn_file(split: str) -> str:
    return f"{split}_32x32.mat"


def load_svhn_file(path: Path, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    return parse_svhn(data, str(path))
