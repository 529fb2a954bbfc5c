"""CIFAR-10 and CIFAR-100 "python version": the official tarball or its extracted folder.

CIFAR-10: ``cifar-10-batches-py/data_batch_1..5`` (train) and ``test_batch``; CIFAR-100:
``cifar-100-python/train`` and ``test`` with ``fine_labels`` and ``coarse_labels``. Each is a pickled dict with
``data`` (N, 3072) uint8 (channel-major 32x32 planes) and the labels. The pickles are read with an unpickler
that only admits the numpy reconstruction functions these files use, so a tampered file cannot run code.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from dynamics.data.checksums import Checksum, read_verified
from dynamics.errors import DataError, InputError

__all__ = ["CIFAR_LAYOUT", "parse_cifar_batch", "load_cifar"]

# dataset -> (tarball, folder inside it, train members, test members, label key by label kind)
CIFAR_LAYOUT = {
    "cifar10": ("cifar-10-python.tar.gz", "cifar-10-batches-py",
                [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], {"fine": "labels"}),
    "cifar100": ("cifar-100-python.tar.gz", "cifar-100-python", ["train"], ["test"],
                 {"fine": "fine_labels", "coarse": "coarse_labels"}),
}

_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR pickle")


def parse_cifar_batch(data: bytes, label_key: str, name: str = "batch") -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 from one pickled CIFAR batch.

    >>> blob = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, 1]})
    >>> x, y = parse_cifar_batch(blob, "labels")
    >>> x.shape, y.tolist()
    ((2, 3, 32, 32), [3, 1])
    """
    try:
        obj = _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:  # truncated pickles raise EOFError, UnpicklingError, ValueError...
        raise DataError(f"{name} is not a readable CIFAR pickle ({type(exc).__name__}: {exc}); delete it and "
                        f"fetch the dataset again") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{name}: expected a pickled dict, got {type(obj).__name__}")
    obj = {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}
    if "data" not in obj or label_key not in obj:
        raise DataError(f"{name}: expected keys 'data' and {label_key!r}, found {sorted(obj)}")
    x = np.asarray(obj["data"], dtype=np.uint8)
    y = np.asarray(obj[label_key], dtype=np.int64)
    if x.ndim != 2 or x.shape[1] != 3072 or len(x) != len(y):
        raise DataError(f"{name}: expected data (N, 3072) and N labels, got {x.shape} and {y.shape}")
    return x.reshape(-1, 3, 32, 32), y


def load_cifar(
    dataset: str,
    folder: Path,
    split: str,
    label: str = "fine",
    verify: bool = True,
    checksums: Mapping[str, Checksum | str] | None = None,
    missing: Callable[[list[str]], Exception] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``split`` of CIFAR-10/100 from ``folder`` (the tarball, or the folder extracted from it)."""
    tarball, inner, train, test, label_keys = CIFAR_LAYOUT[dataset]
    if label not in label_keys:
        raise InputError(f"{dataset} has label kinds {sorted(label_keys)}, not {label!r}")
    members = train if split == "train" else test
    hint = f" (dynamics data download {dataset} --root {folder.parent})"
    blobs: list[tuple[str, bytes]] = []
    extracted = folder / inner
    if extracted.is_dir():
        for m in members:
            path = extracted / m
            if not path.is_file():
                raise DataError(f"{dataset}: {path} is missing from the extracted folder {extracted}; extract "
                                f"{tarball} again{hint}")
            blobs.append((str(path), read_verified(path, dataset, verify, checksums, hint)))
    elif (folder / tarball).is_file():
        raw = read_verified(folder / tarball, dataset, verify, checksums, hint)
        try:
            with tarfile.open(fileobj=io.BytesIO(raw), mode="r:*") as tar:
                for m in members:
                    f = tar.extractfile(f"{inner}/{m}")
                    if f is None:
                        raise KeyError(m)
                    blobs.append((f"{folder / tarball}:{inner}/{m}", f.read()))
        except (tarfile.TarError, KeyError, EOFError, OSError) as exc:
            raise DataError(f"{folder / tarball} is truncated, corrupt or lacks {inner}/{members} ({exc}); "
                            f"delete it and fetch it again{hint}") from exc
    else:
        wanted = [tarball, inner + "/"]
        raise missing(wanted) if missing else DataError(f"{dataset}: none of {wanted} in {folder}")
    parts = [parse_cifar_batch(b, label_keys[label], name) for name, b in blobs]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
