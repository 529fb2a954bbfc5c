"""The interface every model of :mod:`dynamics.models` shares: hidden representation, then a linear read-out.

``forward(x) = readout(features(x))`` where ``readout`` is an ``nn.Linear``. The read-out is affine in its own
parameters, so f(x, θ) = Σ_{k∈S} θ_k ∂f/∂θ_k holds with S = the read-out's weight and bias (the on-model
structure of THEORY.md). ``features(x)`` returns the read-out's input, shape (N, feature_dim); the training
framework keeps a frozen copy of it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch
from torch import nn

from dynamics.errors import InputError

__all__ = ["Classifier", "as_size", "readout_of", "residual_stages"]


def as_size(input_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """Normalise ``input_size`` (``28`` or ``(28, 28)`` or ``None``) to ``(H, W)`` or ``None``.

    >>> as_size(16), as_size((16, 20)), as_size(None)
    ((16, 16), (16, 20), None)
    """
    if input_size is None:
        return None
    if isinstance(input_size, int):
        return (input_size, input_size)
    size = tuple(int(s) for s in input_size)
    if len(size) != 2 or min(size) < 1:
        raise InputError(f"input_size must be an int or a pair (H, W) of positive ints, got {input_size!r}")
    return size  # type: ignore[return-value]


def readout_of(model: nn.Module) -> nn.Linear:
    """The read-out of ``model``: the one place in the toolkit that decides which ``nn.Linear`` it is.

    ``model.readout`` when that attribute is an ``nn.Linear`` (every :class:`Classifier`, and the framework's
    augmented model, whose read-out is its base network's); otherwise the last ``nn.Linear`` in
    ``model.modules()`` order (for an ``nn.Sequential``, the last one applied).

    Raises:
        InputError: the model has no ``nn.Linear`` at all.

    >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> readout_of(net) is net[2]
    True
    >>> readout_of(nn.Sequential(nn.ReLU()))
    Traceback (most recent call last):
    ...
    dynamics.errors.InputError: Sequential has no nn.Linear read-out (no `readout` attribute and no nn.Linear ...
    """
    direct = getattr(model, "readout", None)
    if isinstance(direct, nn.Linear):
        return direct
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    if last is None:
        raise InputError(f"{type(model).__name__} has no nn.Linear read-out (no `readout` attribute and no "
                         "nn.Linear module); give the model a final nn.Linear, exposed as `model.readout`")
    return last


def residual_stages(block: Callable[[int, int, int], nn.Module], in_planes: int, planes: Sequence[int],
                    num_blocks: Sequence[int]) -> tuple[nn.Sequential, int]:
    """The stages of a ResNet: stage i holds ``num_blocks[i]`` blocks ``block(in, out, stride)`` of width
    ``planes[i]``; the first block of every stage after the first has stride 2.

    Returns:
        (the stages as one ``nn.Sequential`` of per-stage ``nn.Sequential``s, the output width).

    >>> stages, width = residual_stages(lambda i, o, s: nn.Conv2d(i, o, 3, s, 1), 4, [4, 8], [1, 2])
    >>> width, [len(st) for st in stages], stages[1][0].stride
    (8, [1, 2], (2, 2))
    """
    c = in_planes
    stages = []
    for i, (p, nb) in enumerate(zip(planes, num_blocks)):
        blocks = []
        for j in range(nb):
            blocks.append(block(c, p, 2 if (i > 0 and j == 0) else 1))
            c = p
        stages.append(nn.Sequential(*blocks))
    return nn.Sequential(*stages), c


class Classifier(nn.Module, ABC):
    """Base class: ``features`` (N, ...) -> (N, feature_dim), then ``readout: nn.Linear`` -> logits (N, k).

    Subclasses set ``in_channels``, ``num_classes``, ``feature_dim``, ``readout`` and implement
    ``_features``. ``min_size`` is the smallest spatial input a convolutional model accepts (``None`` for
    models that take any size or vectors); ``input_size`` is the exact (H, W) a model requires, if any.
    """

    in_channels: int
    num_classes: int
    feature_dim: int
    readout: nn.Linear
    input_size: tuple[int, int] | None = None
    min_size: int | None = None

    @abstractmethod
    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """The representation (N, feature_dim) that the read-out maps to the logits."""

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`InputError` when ``x`` (N, C, H, W) or (C, H, W) cannot go through this model."""
        if x.dim() < 3:
            raise InputError(
                f"{type(self).__name__} takes images (N, C, H, W); got a tensor of shape {tuple(x.shape)}"
            )
        c, h, w = x.shape[-3:]
        if c != self.in_channels:
            raise InputError(
                f"{type(self).__name__} was built for {self.in_channels} input channel(s), got input of shape "
                f"{tuple(x.shape)}; create it with in_channels={c}"
            )
        if self.input_size is not None and (h, w) != self.input_size:
            raise InputError(
                f"{type(self).__name__} was built for {self.input_size[0]}x{self.input_size[1]} inputs, got "
                f"{h}x{w}; create it with input_size=({h}, {w})"
            )
        if self.min_size is not None and min(h, w) < self.min_size:
            raise InputError(
                f"{type(self).__name__} needs inputs of at least {self.min_size}x{self.min_size} "
                f"(its stride-2 stages), got {h}x{w}"
            )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The hidden representation fed to the read-out, shape (N, feature_dim)."""
        self.check_input(x)
        return self._features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes)."""
        return self.readout(self.features(x))
