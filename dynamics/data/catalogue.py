"""What each dataset is, where its files live under the data root, and where to get them.

The root is the ``root`` argument, else ``$DYNAMICS_DATA``, else ``~/.cache/dynamics``; dataset ``name``'s
files live in ``<root>/<name>/`` (``<root>/mnist/train-images-idx3-ubyte.gz``, ``<root>/semeion/semeion.data``,
...), the layout of ``shared/datasets``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dynamics.errors import DataError, InputError

__all__ = ["DatasetInfo", "DATASETS", "DataMissingError", "resolve_root", "dataset_dir", "check_name",
           "PAPER_ORDER", "SyntheticInfo", "SYNTHETIC", "paper_order_key"]

_MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


class DataMissingError(DataError):
    """A dataset file is not under the data root."""


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a dataset: image shape (C, H, W), classes, splits, files and their URLs."""

    name: str
    shape: tuple[int, int, int]
    num_classes: int
    splits: tuple[str, ...]
    files: tuple[str, ...]
    urls: dict[str, str] = field(default_factory=dict)
    home: str = ""
    licence: str = ""
    sizes: dict[str, int] = field(default_factory=dict)  # samples per split (Semeion: its fixed seeded split)

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        c, h, w = self.shape
        return (f"{self.name}: {c}x{h}x{w}, {self.num_classes} classes, splits {'/'.join(self.splits)}, "
                f"files {', '.join(self.files)} ({self.home})")


def _urls(base: str, files: tuple[str, ...]) -> dict[str, str]:
    return {f: base + f for f in files}


_SVHN = ("train_32x32.mat", "test_32x32.mat", "extra_32x32.mat")
DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        "mnist", (1, 28, 28), 10, ("train", "test"), _MNIST_FILES,
        _urls("https://storage.googleapis.com/cvdf-datasets/mnist/", _MNIST_FILES),
        "http://yann.lecun.com/exdb/mnist/", "none stated (usually cited CC BY-SA 3.0)",
        {"train": 60000, "test": 10000}),
    "kmnist": DatasetInfo(
        "kmnist", (1, 28, 28), 10, ("train", "test"), _MNIST_FILES,
        _urls("http://codh.rois.ac.jp/kmnist/dataset/kmnist/", _MNIST_FILES),
        "https://github.com/rois-codh/kmnist", "CC BY-SA 4.0", {"train": 60000, "test": 10000}),
    "semeion": DatasetInfo(
        "semeion", (1, 16, 16), 10, ("train", "test", "all"), ("semeion.data",),
        {"semeion.data": "https://archive.ics.uci.edu/ml/machine-learning-databases/semeion/semeion.data"},
        "https://archive.ics.uci.edu/dataset/178/semeion+handwritten+digit", "CC BY 4.0 (UCI)",
        {"train": 1000, "test": 593, "all": 1593}),
    "svhn": DatasetInfo(
        "svhn", (3, 32, 32), 10, ("train", "test", "extra"), _SVHN,
        _urls("http://ufldl.stanford.edu/housenumbers/", _SVHN),
        "http://ufldl.stanford.edu/housenumbers/", "non-commercial use only",
        {"train": 73257, "test": 26032, "extra": 531131}),
    "cifar10": DatasetInfo(
        "cifar10", (3, 32, 32), 10, ("train", "test"), ("cifar-10-python.tar.gz",),
        {"cifar-10-python.tar.gz": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"},
        "https://www.cs.toronto.edu/~kriz/cifar.html", "none stated (research use, cite the tech report)",
        {"train": 50000, "test": 10000}),
    "cifar100": DatasetInfo(
        "cifar100", (3, 32, 32), 100, ("train", "test"), ("cifar-100-python.tar.gz",),
        {"cifar-100-python.tar.gz": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"},
        "https://www.cs.toronto.edu/~kriz/cifar.html", "none stated (research use, cite the tech report)",
        {"train": 50000, "test": 10000}),
}

#: The order in which the paper lists its six benchmark datasets (tables and figures follow it).
PAPER_ORDER: tuple[str, ...] = ("mnist", "cifar10", "cifar100", "semeion", "kmnist", "svhn")


def paper_order_key(name: str) -> tuple[int, str]:
    """Sort key: the paper's datasets in its order, any other name after them, alphabetically.

    >>> sorted(["zzz", "semeion", "mnist"], key=paper_order_key)
    ['mnist', 'semeion', 'zzz']
    """
    return (PAPER_ORDER.index(name), name) if name in PAPER_ORDER else (len(PAPER_ORDER), name)


@dataclass(frozen=True)
class SyntheticInfo:
    """A data set generated in memory from a seed (no files): what ``dynamics train --dataset NAME`` gets.

    ``blobs`` is :func:`dynamics.data.synthetic.gaussian_mixture` with these sizes (one seeded draw split into
    train and test). It needs no download, so a fresh clone can train and resume.
    """

    name: str
    dim: int
    num_classes: int
    sizes: dict[str, int]
    separation: float = 3.0
    description: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


SYNTHETIC: dict[str, SyntheticInfo] = {
    "blobs": SyntheticInfo("blobs", dim=8, num_classes=3, sizes={"train": 96, "test": 48},
                           description="a seeded Gaussian mixture in 8 dimensions, 3 classes (generated, no files)"),
}


def check_name(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name``; :class:`InputError` listing the valid names otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise InputError(f"unknown dataset {name!r}; available datasets: {', '.join(DATASETS)}") from None


def check_split(info: DatasetInfo, split: str) -> None:
    if split not in info.splits:
        raise InputError(f"dataset {info.name!r} has no split {split!r}; choose one of {list(info.splits)}")


def resolve_root(root: str | os.PathLike | None = None, must_exist: bool = True) -> Path:
    """The data root: ``root``, else ``$DYNAMICS_DATA``, else ``~/.cache/dynamics``.

    Raises :class:`DataError` if ``must_exist`` and it is not a readable directory.

    >>> str(resolve_root("/tmp", must_exist=False))
    '/tmp'
    """
    if root is None:
        env = os.environ.get("DYNAMICS_DATA")
        root = env if env else Path.home() / ".cache" / "dynamics"
    path = Path(root).expanduser()
    if must_exist:
        if not path.exists():
            raise DataMissingError(
                f"data root {path} does not exist; create it and put the datasets there (dynamics data download "
                f"NAME --root {path}), or set $DYNAMICS_DATA / pass root= to point at them"
            )
        if not path.is_dir():
            raise DataError(f"data root {path} is not a directory")
        if not os.access(path, os.R_OK | os.X_OK):
            raise DataError(f"data root {path} is not readable (permissions); fix them or choose another root")
    return path


def dataset_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """``<root>/<name>``, the folder holding ``name``'s files (need not exist)."""
    return resolve_root(root) / name


def missing_error(info: DatasetInfo, folder: Path, wanted: list[str]) -> DataMissingError:
    """The error for absent files: where we looked, what we expected, how to get them."""
    urls = ", ".join(info.urls.get(w, info.home) for w in wanted if w in info.urls) or info.home
    return DataMissingError(
        f"{info.name}: none of {wanted} found in {folder}. Get the files with `dynamics data download "
        f"{info.name} --root {folder.parent}` or download them from {urls} into {folder}"
    )
