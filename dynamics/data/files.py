"""Loading a benchmark dataset from its official files under the data root (verified against checksums).

>>> import pytest, tempfile
>>> from dynamics.data.catalogue import DataMissingError
>>> with pytest.raises(DataMissingError, match="semeion"):
...     _ = load_dataset("semeion", "train", tempfile.mkdtemp())
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import numpy as np
import torch

from dynamics.data.catalogue import check_name, check_split, missing_error, resolve_root
from dynamics.data.checksums import Checksum, read_verified
from dynamics.data.cifar import load_cifar
from dynamics.data.idx import load_mnist_like
from dynamics.data.semeion import load_semeion_file
from dynamics.data.svhn import load_svhn_file, svhn_file
from dynamics.errors import InputError

__all__ = ["load_dataset"]

logger = logging.getLogger(__name__)


def load_dataset(
    name: str,
    split: str = "train",
    root: str | os.PathLike | None = None,
    *,
    verify: bool = True,
    checksums: Mapping[str, Checksum | str] | None = None,
    label: str = "fine",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a benchmark dataset from its official files.

    Args:
        name: one of :func:`available_datasets`.
        split: ``"train"`` or ``"test"``; SVHN also ``"extra"``; Semeion (no official split) ``"train"`` /
            ``"test"`` is the fixed seeded 1000/593 split of :func:`semeion_split_indices`, ``"all"`` all rows.
        root: data root; default ``$DYNAMICS_DATA``, then ``~/.cache/dynamics``. Files live in ``root/name/``.
        verify: check the published checksums (IDX on decompressed content). ``False`` for generated files.
        checksums: ``{file name: md5 or Checksum}`` used instead of the published table for this call.
        label: CIFAR-100 ``"fine"`` (100 classes) or ``"coarse"`` (20 superclasses).

    Returns:
        ``x`` float32 (N, C, H, W) in [0, 1] and ``y`` int64 (N,).

    Raises:
        InputError: unknown name or split. DataMissingError: files absent (says where it looked and how to get
        them). ChecksumError / DataError: corrupt, truncated or unreadable files (names the file).
    """
    info = check_name(name)
    check_split(info, split)
    if label != "fine" and name != "cifar100":
        raise InputError(f"label={label!r} only applies to cifar100")
    folder = resolve_root(root) / name
    if name in ("mnist", "kmnist"):
        x, y = load_mnist_like(info, folder, split, verify, checksums)
        x = x[:, None]
    elif name == "semeion":
        x, y = _semeion(info, folder, split, verify, checksums)
    elif name == "svhn":
        x, y = _svhn(info, folder, split, verify, checksums)
    else:
        x, y = load_cifar(name, folder, split, label, verify, checksums,
                          missing=lambda wanted: missing_error(info, folder, wanted))
    xt = torch.from_numpy(np.ascontiguousarray(x))
    xt = xt.to(torch.float32).div_(255.0) if xt.dtype == torch.uint8 else xt.to(torch.float32)
    logger.debug("loaded %s/%s: x %s, y %s", name, split, tuple(xt.shape), tuple(y.shape))
    return xt, torch.from_numpy(np.ascontiguousarray(y).astype(np.int64))


def _semeion(info, folder, split, verify, checksums):
    path = folder / "semeion.data"
    if not path.is_file():
        raise missing_error(info, folder, ["semeion.data"])
    hint = f" (dynamics data download semeion --root {folder.parent})"
    data = read_verified(path, "semeion", verify, checksums, hint)
    x, y = load_semeion_file(path, data, split)
    return x[:, None], y


def _svhn(info, folder, split, verify, checksums):
    path = folder / svhn_file(split)
    if not path.is_file():
        raise missing_error(info, folder, [path.name])
    data = read_verified(path, "svhn", verify, checksums, f" (dynamics data download svhn --root {folder.parent})")
    return load_svhn_file(path, data)
