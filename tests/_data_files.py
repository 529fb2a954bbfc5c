"""Writers of tiny dataset files in the official layouts, for the data tests (no real data needed)."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from dynamics.data.idx import encode_idx


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def write_mnist(folder: Path, n_train: int = 6, n_test: int = 4, gz: bool = True, seed: int = 0,
                level: int = 9) -> dict[str, np.ndarray]:
    """Write the four MNIST IDX files; returns the arrays by file stem."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for stem, arr in arrays.items():
        data = encode_idx(arr)
        if gz:
            (folder / (stem + ".gz")).write_bytes(gzip.compress(data, compresslevel=level, mtime=0))
        else:
            (folder / stem).write_bytes(data)
    return arrays


def semeion_bytes(n: int = 30, seed: int = 0) -> tuple[bytes, np.ndarray, np.ndarray]:
    """Text of a ``semeion.data`` with n rows (CRLF, ``%.4f`` pixels, one-hot labels); images and labels."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, (n, 16, 16)).astype(np.float32)
    y = np.arange(n) % 10
    lines = []
    for img, label in zip(x, y):
        onehot = ["1" if i == label else "0" for i in range(10)]
        lines.append(" ".join([f"{v:.4f}" for v in img.reshape(-1)] + onehot) + " ")
    return ("\r\n".join(lines) + "\r\n").encode(), x, y


def svhn_mat(n: int = 5, seed: int = 0) -> tuple[bytes, np.ndarray, np.ndarray]:
    """Bytes of an SVHN-style .mat (X (32, 32, 3, n) uint8, y (n, 1) in 1..10); returns X and y too."""
    import scipy.io

    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"X": X, "y": y})
    return buf.getvalue(), X, y


def cifar_batch(n: int, seed: int, cifar100: bool = False) -> tuple[bytes, dict]:
    rng = np.random.default_rng(seed)
    d = {b"batch_label": b"test batch", b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
         b"filenames": [f"img{i}.png".encode() for i in range(n)]}
    if cifar100:
        d[b"fine_labels"] = rng.integers(0, 100, n).tolist()
        d[b"coarse_labels"] = rng.integers(0, 20, n).tolist()
    else:
        d[b"labels"] = rng.integers(0, 10, n).tolist()
    return pickle.dumps(d, protocol=2), d


def write_cifar(folder: Path, cifar100: bool = False, extracted: bool = False, n: int = 3) -> dict[str, dict]:
    """Write a CIFAR tarball (or extracted folder) in the official layout; returns the dicts per member."""
    inner = "cifar-100-python" if cifar100 else "cifar-10-batches-py"
    members = ["train", "test", "meta"] if cifar100 else [f"data_batch_{i}" for i in range(1, 6)] + [
        "test_batch", "batches.meta"]
    folder.mkdir(parents=True, exist_ok=True)
    blobs, dicts = {}, {}
    for i, m in enumerate(members):
        if "meta" in m:
            blobs[m] = pickle.dumps({b"label_names": [b"a", b"b"]}, protocol=2)
        else:
            blobs[m], dicts[m] = cifar_batch(n + i, seed=i, cifar100=cifar100)
    if extracted:
        (folder / inner).mkdir(exist_ok=True)
        for m, b in blobs.items():
            (folder / inner / m).write_bytes(b)
    else:
        tarball = "cifar-100-python.tar.gz" if cifar100 else "cifar-10-python.tar.gz"
        with tarfile.open(folder / tarball, "w:gz") as tar:
            for m, b in blobs.items():
                info = tarfile.TarInfo(f"{inner}/{m}")
                info.size = len(b)
                tar.addfile(info, io.BytesIO(b))
    return dicts
