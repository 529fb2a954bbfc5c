"""A batch iterator over tensors held in memory (on the training device), with seeded, resumable shuffles.

The shuffle of epoch ``e`` is ``randperm(N)`` from a CPU generator seeded with (seed, e), and the augmentation
of batch ``b`` of epoch ``e`` draws from a generator on the data's device seeded with (seed, e, b). A run that
stops after any batch and restores :meth:`TensorLoader.state_dict` therefore continues with exactly the batches
it would have seen. Each batch is one ``index_select`` plus the transform: no per-sample Python work.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch

from dynamics.errors import InputError

__all__ = ["TensorLoader"]

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _seed(*keys: int) -> int:
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0] >> 1)


class TensorLoader:
    """Iterate over (xb, yb) batches of in-memory tensors.

    Args:
        x: inputs (N, ...); y: targets (N, ...).
        batch_size: samples per batch.
        shuffle: a new seeded permutation each epoch; ``False`` keeps the order.
        seed: base seed of the shuffles and of the transform's generator.
        drop_last: drop the last incomplete batch.
        device: move x and y there once at construction (e.g. ``"cuda"``); default: leave them where they are.
        transform: ``transform(xb, generator) -> xb`` applied per batch (e.g. :class:`Augment`).

    A full pass advances the epoch by one; :meth:`set_epoch` sets it explicitly. ``state_dict()`` /
    ``load_state_dict()`` save and restore (epoch, batches already served this epoch). Iterating again after
    leaving a loop early continues the epoch where it stopped.

    >>> loader = TensorLoader(torch.arange(10.), torch.arange(10), batch_size=4, seed=0)
    >>> [len(yb) for _, yb in loader], len(loader), loader.epoch
    ([4, 4, 2], 3, 1)
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        device: torch.device | str | None = None,
        transform: Transform | None = None,
    ) -> None:
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise InputError(f"x and y must be tensors, got {type(x).__name__} and {type(y).__name__}")
        if len(x) != len(y):
            raise InputError(f"x has {len(x)} samples but y has {len(y)}")
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        if device is not None:
            x, y = x.to(device), y.to(device)
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, int(seed), drop_last
        self.transform = transform
        self.epoch = 0
        self.position = 0

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle of ``epoch`` and start it from its first batch."""
        self.epoch, self.position = int(epoch), 0

    def state_dict(self) -> dict[str, int]:
        """``{"seed", "epoch", "position"}``: enough to continue this loader exactly."""
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a :meth:`state_dict` of a loader built with the same data and arguments."""
        if int(state["seed"]) != self.seed:
            raise InputError(f"state was saved with seed {state['seed']}, this loader has seed {self.seed}")
        if not 0 <= int(state["position"]) <= len(self):
            raise InputError(f"position {state['position']} is outside 0..{len(self)} batches")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    def permutation(self, epoch: int | None = None) -> torch.Tensor:
        """Sample order of ``epoch`` (default: the current one), int64 (N,) on the data's device."""
        n = len(self.x)
        if not self.shuffle:
            return torch.arange(n, device=self.x.device)
        g = torch.Generator().manual_seed(_seed(self.seed, self.epoch if epoch is None else epoch))
        return torch.randperm(n, generator=g).to(self.x.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        perm = self.permutation()
        for b in range(self.position, len(self)):
            idx = perm[b * self.batch_size:(b + 1) * self.batch_size]
            xb, yb = self.x.index_select(0, idx), self.y.index_select(0, idx)
            if self.transform is not None:
                g = torch.Generator(device=self.x.device).manual_seed(_seed(self.seed, self.epoch, b, 1))
                xb = self.transform(xb, g)
            self.position = b + 1
            yield xb, yb
        self.epoch, self.position = self.epoch + 1, 0
