"""The training and test tensors of one run: loaded (and normalised) from a dataset, generated, or given.

:func:`load_train_test` is what the training loop calls; :func:`check_request` validates a dataset name and a
``train_subset`` against the catalogue BEFORE anything is loaded (the sizes are catalogue facts).

>>> d = load_train_test("blobs", seed=0)
>>> d.x_train.shape, d.num_classes, d.n_train
(torch.Size([96, 8]), 3, 96)
>>> load_train_test("blobs", train_subset=10).n_train
10
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from dynamics.data.catalogue import DATASETS, SYNTHETIC
from dynamics.data.files import load_dataset
from dynamics.data.normalise import normalise
from dynamics.data.synthetic import gaussian_mixture
from dynamics.errors import ConfigError, InputError

__all__ = ["TrainTestData", "load_train_test", "training_datasets", "split_size", "check_request"]

#: offset of the seed that draws the training subset (kept from the first version: same subsets as before)
SUBSET_SEED_OFFSET = 3


@dataclass
class TrainTestData:
    """x_train (n, ...) float32, y_train (n,) int64, x_test, y_test, and the number of classes k."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def n_train(self) -> int:
        return len(self.x_train)

    @property
    def n_test(self) -> int:
        return len(self.x_test)

    def to(self, device: torch.device | str) -> TrainTestData:
        return TrainTestData(self.x_train.to(device), self.y_train.to(device), self.x_test.to(device),
                             self.y_test.to(device), self.num_classes)


def training_datasets() -> list[str]:
    """Names ``dynamics train --dataset`` accepts: the file datasets, then the generated ones.

    >>> training_datasets()[-1]
    'blobs'
    """
    return list(DATASETS) + list(SYNTHETIC)


def split_size(name: str, split: str = "train") -> int | None:
    """The number of samples of ``split`` of dataset ``name`` from the catalogue (``None`` if unknown).

    >>> split_size("semeion"), split_size("mnist", "test"), split_size("nope")
    (1000, 10000, None)
    """
    info = DATASETS.get(name) or SYNTHETIC.get(name)
    return None if info is None else info.sizes.get(split)


def check_request(dataset: str, train_subset: int | None) -> None:
    """Raise :class:`ConfigError` for an unknown dataset or a ``train_subset`` larger than its training set."""
    if dataset not in training_datasets():
        raise ConfigError(f"unknown dataset {dataset!r}; valid: {', '.join(training_datasets())}")
    size = split_size(dataset)
    if train_subset is not None and size is not None and train_subset > size:
        raise ConfigError(f"train_subset={train_subset} is larger than {dataset}'s training set ({size} samples); "
                          f"pass at most {size}, or drop --train-subset to train on all of it")


def _subset(x: torch.Tensor, y: torch.Tensor, size: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if size is None or size == len(x):
        return x, y
    if size > len(x):
        raise ConfigError(f"train_subset={size} is larger than the training set ({len(x)} samples); pass at most "
                          f"{len(x)}")
    g = torch.Generator().manual_seed(seed + SUBSET_SEED_OFFSET)
    idx = torch.randperm(len(x), generator=g)[:size].sort().values
    return x[idx], y[idx]


def load_train_test(dataset: str, root: str | os.PathLike | None = None, train_subset: int | None = None,
                    seed: int = 0, data: tuple | None = None) -> TrainTestData:
    """The data of a run.

    Args:
        dataset: a name of :func:`training_datasets` (files are loaded from ``root`` and normalised; generated
            sets are drawn from ``seed``); ignored when ``data`` is given.
        root: the data root (default ``$DYNAMICS_DATA``, then ``~/.cache/dynamics``).
        train_subset: keep a subset of this many training samples, drawn from ``seed`` (sorted indices).
        data: ``(x_train, y_train, x_test, y_test)`` used as given (no normalisation); k = 1 + the largest label.

    Raises:
        ConfigError: unknown dataset, ``train_subset`` larger than the training set. InputError: ``data`` is not
        four tensors. DataError: dataset files missing or corrupt.
    """
    if data is not None:
        if len(data) != 4:
            raise InputError("data= must be (x_train, y_train, x_test, y_test)")
        x_tr, y_tr, x_te, y_te = (torch.as_tensor(t) for t in data)
        k = int(max(int(y_tr.max()), int(y_te.max()) if len(y_te) else 0)) + 1
        x_tr, x_te, y_tr, y_te = x_tr.float(), x_te.float(), y_tr.long(), y_te.long()
    else:
        check_request(dataset, train_subset)
        if dataset in SYNTHETIC:
            s = SYNTHETIC[dataset]
            k = s.num_classes
            n_tr = s.sizes["train"]  # one draw from one mixture, split: train and test share the class means
            x, y = gaussian_mixture(n_tr + s.sizes["test"], k, s.dim, s.separation, seed=seed)
            x_tr, y_tr, x_te, y_te = x[:n_tr], y[:n_tr], x[n_tr:], y[n_tr:]
        else:
            x_tr, y_tr = load_dataset(dataset, "train", root)
            x_te, y_te = load_dataset(dataset, "test", root)
            x_tr, x_te = normalise(x_tr, dataset), normalise(x_te, dataset)
            k = DATASETS[dataset].num_classes
    x_tr, y_tr = _subset(x_tr, y_tr, train_subset, seed)
    return TrainTestData(x_tr, y_tr, x_te, y_te, k)
