"""Fully connected network: ``depth`` hidden layers of ``width`` units, then a linear read-out."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from dynamics.errors import InputError
from dynamics.models.activations import activation as make_activation
from dynamics.models.base import Classifier, as_size

__all__ = ["MLP"]


class MLP(Classifier):
    """Multi-layer perceptron on flattened inputs.

    Args:
        in_features: input dimension after flattening (C*H*W for images).
        num_classes: number of outputs k.
        depth: number of hidden layers (0 gives a linear model; then ``features`` is the flattened input).
        width: units per hidden layer.
        activation: name from :data:`dynamics.models.activations.ACTIVATIONS`.
        bias: biases in every Linear layer (hidden and read-out).
        batchnorm: ``BatchNorm1d`` after each hidden Linear, before the activation.
        input_shape: trailing shape of one input, e.g. ``(1, 28, 28)``; default ``(in_features,)``.
            Inputs are flattened from the first dimension of this shape, so both (N, *input_shape) and an
            unbatched ``input_shape`` tensor work.

    >>> m = MLP(12, 3, depth=2, width=8)
    >>> m(torch.zeros(5, 12)).shape, m.features(torch.zeros(5, 12)).shape
    (torch.Size([5, 3]), torch.Size([5, 8]))
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        depth: int = 2,
        width: int = 128,
        activation: str = "relu",
        bias: bool = True,
        batchnorm: bool = False,
        input_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if in_features < 1 or num_classes < 1 or depth < 0 or width < 1:
            raise InputError(
                f"MLP needs in_features >= 1, num_classes >= 1, depth >= 0, width >= 1; got "
                f"in_features={in_features}, num_classes={num_classes}, depth={depth}, width={width}"
            )
        self.input_shape = tuple(input_shape) if input_shape is not None else (in_features,)
        if math.prod(self.input_shape) != in_features:
            raise InputError(f"input_shape {self.input_shape} does not have in_features={in_features} elements")
        self.in_channels = self.input_shape[0]
        self.num_classes = num_classes
        layers: list[nn.Module] = []
        d = in_features
        for _ in range(depth):
            layers.append(nn.Linear(d, width, bias=bias))
            if batchnorm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(make_activation(activation))
            d = width
        self.body = nn.Sequential(*layers)
        self.feature_dim = d
        self.readout = nn.Linear(d, num_classes, bias=bias)

    def check_input(self, x: torch.Tensor) -> None:
        n = len(self.input_shape)
        if x.dim() not in (n, n + 1) or tuple(x.shape[-n:]) != self.input_shape:
            raise InputError(
                f"{type(self).__name__} was built for inputs of shape (N, {', '.join(map(str, self.input_shape))})"
                f", got {tuple(x.shape)}; create it with matching in_channels/input_size"
            )

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.flatten(start_dim=x.dim() - len(self.input_shape)))

    @classmethod
    def build(
        cls,
        in_channels: int,
        num_classes: int,
        input_size: int | Sequence[int] | None = None,
        **options,
    ) -> MLP:
        """Registry builder: images (N, in_channels, H, W) with ``input_size=(H, W)``, or vectors
        (N, in_channels) with ``input_size=None``."""
        size = as_size(input_size)
        shape = (in_channels,) if size is None else (in_channels, *size)
        return cls(math.prod(shape), num_classes, input_shape=shape, **options)
