"""Hypothesis strategies for the theory tests: random tiny MLPs with the on-model structure, data and targets."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from dynamics.models import MLP

ACTS = ["relu", "tanh", "gelu", "softplus", "leaky_relu", "identity"]


@st.composite
def tiny_problems(draw, max_n: int = 8, max_k: int = 3):
    """(model float64, x (n, d), y (n, k)) with n, k, d, depth, width, activation and bias drawn."""
    d = draw(st.integers(1, 4))
    k = draw(st.integers(1, max_k))
    n = draw(st.integers(1, max_n))
    depth = draw(st.integers(0, 2))
    width = draw(st.integers(1, 5))
    act = draw(st.sampled_from(ACTS))
    bias = draw(st.booleans())
    seed = draw(st.integers(0, 2 ** 16))
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = MLP(d, k, depth=depth, width=width, activation=act, bias=bias).double()
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.randn(n, k, generator=gen, dtype=torch.float64)
    return model, x, y
