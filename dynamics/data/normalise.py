"""Per-dataset, per-channel normalisation constants (mean, std of the training images in [0, 1]).

MNIST and Semeion were computed here from the shared files (population mean and std over all pixels of the
training split; Semeion's training split is the fixed 1000-row split). KMNIST, SVHN, CIFAR-10 and CIFAR-100
are the widely published values for their training sets (files not available here); the test
``test_normalisation_constants_match_training_data`` recomputes each when ``$DYNAMICS_DATA`` has the data.
"""

from __future__ import annotations

import torch
from torch import nn

from dynamics.errors import InputError

__all__ = ["NORMALISATION", "normalise", "Normalise"]

NORMALISATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "kmnist": ((0.1918,), (0.3483,)),
    "semeion": ((0.3279,), (0.4694,)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def _stats(dataset: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if dataset not in NORMALISATION:
        raise InputError(f"no normalisation constants for {dataset!r}; known: {sorted(NORMALISATION)}")
    mean, std = NORMALISATION[dataset]
    if x.dim() < 3 or x.shape[-3] != len(mean):
        raise InputError(f"{dataset} normalisation expects (N, {len(mean)}, H, W) images, got {tuple(x.shape)}")
    shape = (len(mean), 1, 1)
    return (torch.tensor(mean, dtype=x.dtype, device=x.device).view(shape),
            torch.tensor(std, dtype=x.dtype, device=x.device).view(shape))


def normalise(x: torch.Tensor, dataset: str) -> torch.Tensor:
    """``(x - mean) / std`` per channel with the constants of ``dataset``.

    >>> normalise(torch.full((1, 1, 2, 2), 0.1307), "mnist").abs().max().item() < 1e-6
    True
    """
    mean, std = _stats(dataset, x)
    return (x - mean) / std


class Normalise(nn.Module):
    """:func:`normalise` as a module (e.g. the first layer of a model, or a loader transform)."""

    def __init__(self, dataset: str) -> None:
        super().__init__()
        if dataset not in NORMALISATION:
            raise InputError(f"no normalisation constants for {dataset!r}; known: {sorted(NORMALISATION)}")
        self.dataset = dataset

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return normalise(x, self.dataset)
