"""A plain convolutional network: conv blocks with max-pooling, flatten, linear read-out."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dynamics.errors import InputError
from dynamics.models.activations import activation as make_activation
from dynamics.models.base import Classifier, as_size

__all__ = ["CNN"]


class CNN(Classifier):
    """``[conv3x3 -> (BatchNorm) -> activation -> maxpool 2]`` per entry of ``channels``, flatten, ``Linear``.

    The flattened size depends on the input size, so ``input_size`` is fixed at construction and checked at
    every call (a 16x16 input to a model built for 28x28 raises :class:`InputError`).

    Args:
        in_channels, num_classes: input channels and number of outputs.
        input_size: (H, W) of the inputs; each side must be at least 2**len(channels).
        channels: output channels of each block before the width multiplier.
        width: width multiplier applied to ``channels``.
        batchnorm: ``BatchNorm2d`` after each conv (the conv then has no bias).
        activation: activation name.

    >>> m = CNN(1, 10, input_size=16, channels=(4, 8))
    >>> m(torch.zeros(2, 1, 16, 16)).shape, m.feature_dim
    (torch.Size([2, 10]), 128)
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        input_size: int | Sequence[int] | None = None,
        channels: Sequence[int] = (32, 64),
        width: float = 1.0,
        batchnorm: bool = False,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        size = as_size(input_size)
        if size is None:
            raise InputError("CNN flattens its last feature map, so it needs input_size=(H, W) (e.g. 28 for MNIST)")
        self.min_size = 2 ** len(channels)
        if min(size) < self.min_size:
            raise InputError(
                f"CNN with {len(channels)} pooling blocks needs inputs of at least {self.min_size}x{self.min_size}, "
                f"got input_size={size}; use fewer channels entries or a larger input"
            )
        self.in_channels, self.num_classes, self.input_size = in_channels, num_classes, size
        layers: list[nn.Module] = []
        c = in_channels
        h, w = size
        for ch in channels:
            out = max(1, round(ch * width))
            layers.append(nn.Conv2d(c, out, 3, padding=1, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm2d(out))
            layers += [make_activation(activation), nn.MaxPool2d(2)]
            c, h, w = out, h // 2, w // 2
        self.body = nn.Sequential(*layers)
        self.feature_dim = c * h * w
        self.readout = nn.Linear(self.feature_dim, num_classes)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).flatten(start_dim=x.dim() - 3)
