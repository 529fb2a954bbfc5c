"""Semeion Handwritten Digit (UCI 178): ``semeion.data`` parsing, the fixed train/test split and k folds.

Each row is 256 pixel values (a 16x16 binary image, row-major) and a one-hot label over 10 columns. There is no
official split; this toolkit uses a fixed one: ``numpy.random.default_rng(SEMEION_SPLIT_SEED).permutation(N)``,
the first ``round(N * 1000 / 1593)`` indices (1000 of the official 1593 rows) are ``train``, the rest ``test``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dynamics.errors import DataError, InputError

__all__ = ["SEMEION_SPLIT_SEED", "parse_semeion", "semeion_split_indices", "semeion_folds"]

SEMEION_SPLIT_SEED = 0


def parse_semeion(data: bytes, name: str = "semeion.data") -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 16, 16) float32 in {0, 1} and labels (N,) int64 from the text of ``semeion.data``.

    >>> row = " ".join(["1.0000"] * 256 + ["0"] * 3 + ["1"] + ["0"] * 6)
    >>> x, y = parse_semeion((row + "\\r\\n").encode())
    >>> x.shape, y.tolist()
    ((1, 16, 16), [3])
    """
    try:
        table = np.array([line.split() for line in data.decode("ascii").splitlines() if line.strip()],
                         dtype=np.float32)
    except (UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{name} is not a Semeion data file (rows of 266 numbers): {exc}") from exc
    if table.ndim != 2 or table.shape[1] != 266:
        raise DataError(f"{name}: expected rows of 266 numbers (256 pixels + 10 one-hot), got shape {table.shape}")
    onehot = table[:, 256:]
    if not (np.isin(onehot, (0.0, 1.0)).all() and (onehot.sum(axis=1) == 1).all()):
        bad = int(np.flatnonzero((onehot.sum(axis=1) != 1) | ~np.isin(onehot, (0.0, 1.0)).all(axis=1))[0])
        raise DataError(f"{name}: row {bad + 1} does not end in a one-hot label over 10 columns")
    return table[:, :256].reshape(-1, 16, 16), onehot.argmax(axis=1).astype(np.int64)


def semeion_split_indices(n: int = 1593, seed: int = SEMEION_SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """The fixed (train, test) row indices; 1000/593 for the official 1593 rows.

    >>> tr, te = semeion_split_indices()
    >>> len(tr), len(te), len(set(tr) | set(te))
    (1000, 593, 1593)
    """
    perm = np.random.default_rng(seed).permutation(n)
    n_train = round(n * 1000 / 1593)
    return np.sort(perm[:n_train]), np.sort(perm[n_train:])


def semeion_folds(k: int = 10, seed: int = 0, n: int = 1593) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` (train, test) index pairs: a seeded permutation of ``range(n)`` cut into k near-equal test folds.

    >>> folds = semeion_folds(k=5, n=10)
    >>> sorted(np.concatenate([te for _, te in folds]).tolist()) == list(range(10))
    True
    """
    if not 2 <= k <= n:
        raise InputError(f"k must be between 2 and the number of rows {n}, got {k}")
    perm = np.random.default_rng(seed).permutation(n)
    folds = np.array_split(perm, k)
    return [(np.sort(np.concatenate(folds[:i] + folds[i + 1:])), np.sort(f)) for i, f in enumerate(folds)]


def load_semeion_file(path: Path, data: bytes, split: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = parse_semeion(data, str(path))
    if split == "all":
        return x, y
    train, test = semeion_split_indices(len(x))
    idx = train if split == "train" else test
    return x[idx], y[idx]
