"""Datasets as in-memory tensors, their verification and download, synthetic data, augmentation, loading.

>>> import dynamics.data as dd
>>> x, y = dd.gaussian_mixture(n=8, num_classes=2, dim=3, seed=0)
>>> x.shape, y.dtype
(torch.Size([8, 3]), torch.int64)
"""

from __future__ import annotations

from dynamics.data.augment import Augment, affine, horizontal_flip, random_affine, random_crop
from dynamics.data.catalogue import (
    DATASETS, PAPER_ORDER, SYNTHETIC, DataMissingError, DatasetInfo, SyntheticInfo, paper_order_key, resolve_root,
)
from dynamics.data.checksums import PUBLISHED, Checksum, ChecksumError
from dynamics.data.files import load_dataset
from dynamics.data.loader import TensorLoader
from dynamics.data.normalise import NORMALISATION, Normalise, normalise
from dynamics.data.semeion import SEMEION_SPLIT_SEED, semeion_folds, semeion_split_indices
from dynamics.data.synthetic import gaussian_mixture, random_labels, teacher_regression
from dynamics.data.train_test import TrainTestData, check_request, load_train_test, split_size, training_datasets

__all__ = [
    "load_dataset", "available_datasets", "DATASETS", "DatasetInfo", "DataMissingError", "ChecksumError",
    "Checksum", "PUBLISHED", "resolve_root", "semeion_folds", "semeion_split_indices", "SEMEION_SPLIT_SEED",
    "gaussian_mixture", "random_labels", "teacher_regression", "Augment", "random_crop", "horizontal_flip",
    "random_affine", "affine", "NORMALISATION", "Normalise", "normalise", "TensorLoader",
    "PAPER_ORDER", "paper_order_key", "SYNTHETIC", "SyntheticInfo", "TrainTestData", "load_train_test",
    "training_datasets", "split_size", "check_request",
]


def available_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`.

    >>> available_datasets()
    ['mnist', 'kmnist', 'semeion', 'svhn', 'cifar10', 'cifar100']
    """
    return list(DATASETS)
