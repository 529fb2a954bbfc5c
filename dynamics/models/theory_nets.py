"""Small networks built for the theory checks of THEORY.md.

- :class:`ReLUChain`: the width-1 bias-free ReLU chain of statement 6 (rank J <= d_x for any depth).
- :class:`NonlinearHeadMLP`: an MLP whose output passes through sigmoid/tanh after the read-out, so the
  on-model structure fails (f is not 1-homogeneous in any parameter group).
- :class:`NormalisedHeadMLP`: an MLP with a normalisation (BatchNorm1d or LayerNorm, no affine) after the
  read-out, so f is scale-invariant in the read-out and the on-model structure fails.

All three expose ``readout`` (the last ``nn.Linear``), ``features`` and ``feature_dim`` like every model here.
"""

from __future__ import annotations

import torch
from torch import nn

from dynamics.errors import InputError
from dynamics.models.mlp import MLP

__all__ = ["ReLUChain", "NonlinearHeadMLP", "NormalisedHeadMLP"]


class ReLUChain(MLP):
    """f(x) = w_L relu(w_{L-1} ... relu(w_2 relu(w_1ᵀx + b_1))) with every hidden layer of width 1.

    ``depth`` counts the Linear layers: ``Linear(in_features, 1)``, then ``depth - 2`` scalar layers
    ``Linear(1, 1)``, then the read-out ``Linear(1, out_features)``; ReLU between them, no biases except an
    optional first-layer bias (``bias_first=True``). ``depth=1`` is the linear map ``Linear(in_features,
    out_features)``.

    >>> torch.manual_seed(0) and None
    >>> m = ReLUChain(depth=4, in_features=3)
    >>> [tuple(p.shape) for p in m.parameters()]
    [(1, 3), (1, 1), (1, 1), (1, 1)]
    """

    def __init__(self, depth: int, in_features: int, out_features: int = 1, bias_first: bool = False) -> None:
        if depth < 1:
            raise InputError(f"ReLUChain needs depth >= 1 Linear layers, got {depth}")
        nn.Module.__init__(self)
        self.input_shape = (in_features,)
        self.in_channels, self.num_classes = in_features, out_features
        layers: list[nn.Module] = []
        d = in_features
        for layer in range(depth - 1):
            layers += [nn.Linear(d, 1, bias=bias_first and layer == 0), nn.ReLU()]
            d = 1
        self.body = nn.Sequential(*layers)
        self.feature_dim = d
        self.readout = nn.Linear(d, out_features, bias=bias_first and depth == 1)


class NonlinearHeadMLP(MLP):
    """``head(readout(features(x)))`` with ``head`` = sigmoid or tanh: violates the on-model structure.

    >>> m = NonlinearHeadMLP(4, 2, head="tanh", depth=1, width=3)
    >>> bool(m(torch.randn(5, 4)).abs().max() < 1)
    True
    """

    def __init__(self, in_features: int, num_classes: int, head: str = "sigmoid", **options) -> None:
        heads = {"sigmoid": torch.sigmoid, "tanh": torch.tanh}
        if head not in heads:
            raise InputError(f"unknown head {head!r}; choose one of {sorted(heads)}")
        super().__init__(in_features, num_classes, **options)
        self.head = head
        self._head = heads[head]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._head(self.readout(self.features(x)))


class NormalisedHeadMLP(MLP):
    """``norm(readout(features(x)))`` with a non-affine BatchNorm1d or LayerNorm over the k outputs.

    f is invariant to scaling the read-out's weight and bias together, so f ∉ span of that group's Jacobian
    columns in general: the on-model structure fails. Needs ``num_classes >= 2`` for LayerNorm.

    >>> m = NormalisedHeadMLP(4, 3, norm="layernorm", depth=1, width=5)
    >>> torch.allclose(m(torch.randn(6, 4)).mean(dim=1), torch.zeros(6), atol=1e-6)
    True
    """

    def __init__(self, in_features: int, num_classes: int, norm: str = "batchnorm", **options) -> None:
        if norm == "layernorm" and num_classes < 2:
            raise InputError("LayerNorm over a single output is identically zero; use num_classes >= 2")
        super().__init__(in_features, num_classes, **options)
        if norm == "batchnorm":
            self.norm: nn.Module = nn.BatchNorm1d(num_classes, affine=False)
        elif norm == "layernorm":
            self.norm = nn.LayerNorm(num_classes, elementwise_affine=False)
        else:
            raise InputError(f"unknown norm {norm!r}; choose 'batchnorm' or 'layernorm'")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.readout(self.features(x)))
