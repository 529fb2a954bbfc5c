"""Tiny problems shared by the training tests (generated data, seconds to train)."""

from __future__ import annotations

import torch

from dynamics.training import TrainConfig


def blobs(n: int = 64, dim: int = 6, k: int = 3, seed: int = 0, spread: float = 3.0):
    """Well-separated Gaussian blobs: (x (n, dim) float32, y (n,) int64)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, dim, generator=g) * spread
    y = torch.arange(n) % k
    x = centres[y] + torch.randn(n, dim, generator=g)
    return x, y


def random_label_data(n: int = 40, dim: int = 5, k: int = 3, seed: int = 0):
    """Random labels on random points: a width-2 bottleneck network cannot fit them."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g), torch.randint(0, k, (n,), generator=g)


#: the runner's tests fix the framework's phase-2 step: constant, one step removes half a batch's residual along
#: its top direction (the framework's own defaults are the framework tests' business)
CONSTANT_ZETA_STEP = {"zeta_step": 0.5, "zeta_step_final": 0.5}


def small_config(**kw) -> TrainConfig:
    base = dict(dataset="toy", model="mlp", model_options={"width": 16, "depth": 1}, epochs=4, batch_size=8,
                lr=0.05, momentum=0.9, weight_decay=0.0, schedule="none", loss="ce", **CONSTANT_ZETA_STEP)
    base.update(kw)
    return TrainConfig(**base)


def plateau_config(modified: bool, **kw) -> TrainConfig:
    """Square loss, a width-2 bottleneck MLP, SGD: the base run plateaus well above zero training loss."""
    base = dict(dataset="toy", model="mlp", model_options={"width": 2, "depth": 1}, epochs=60, batch_size=10,
                lr=0.05, momentum=0.9, weight_decay=0.0, schedule="none", loss="mse", modified=modified,
                tau=30 if modified else None, **CONSTANT_ZETA_STEP)
    base.update(kw)
    return TrainConfig(**base)
