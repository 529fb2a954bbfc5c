"""``nn.LayerNorm`` affine parameters: y = x̂ ⊙ γ + β over the trailing ``normalized_shape`` D.

x̂ is normalised per sample and position (it does not depend on γ, β), so with g the output gradient
∂f/∂γ = Σ_positions g ⊙ x̂ and ∂f/∂β = Σ_positions g, for sequences (positions = leading dimensions) and
for channels-last images alike.

Variants: ``"layernorm-affine"`` (per-sample gradients, contracted); ``"layernorm-affine-batch"``
(``bn_mode="batch"`` elsewhere in the network: each row's gradient summed over the batch).
A channels-first LayerNorm written as a subclass with its own ``forward`` (permute, normalise, permute back)
falls back to autograd, as every subclass does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dynamics.engine.rules.base import Dims, LayerInfo, LayerRule, cat_parts

__all__ = ["LayerNormRule"]


class LayerNormRule(LayerRule):
    name = "layernorm"
    types = (nn.LayerNorm,)

    def describe(self, layer: LayerInfo, module: nn.Module, in_shape: tuple, out_shape: tuple) -> None:
        layer.d_in = layer.d_out = math.prod(module.normalized_shape)
        layer.positions = math.prod(in_shape[1:]) // layer.d_out

    def variant(self, layer: LayerInfo, d: Dims) -> str:
        return "layernorm-affine" if d.per_sample else "layernorm-affine-batch"

    def cost(self, layer: LayerInfo, variant: str, d: Dims) -> float:
        if variant == "layernorm-affine":
            return 2 * d.ne * d.k * layer.out_numel + d.pairs * d.k * d.k * 2 * layer.d_out
        return (d.n1 + d.n2) * d.k * d.N * layer.out_numel + d.n1 * d.k * d.n2 * d.k * 2 * layer.d_out

    def memory(self, layer: LayerInfo, variant: str, B1: int, B2: int, d: Dims) -> float:
        if variant == "layernorm-affine":
            return (B1 + B2) * d.k * (2 * layer.d_out + layer.out_numel)
        return (B1 + B2) * 2 * layer.d_out + B1 * d.N * layer.out_numel

    def capture_input(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, module.normalized_shape, None, None, module.eps)

    def per_sample_grads(self, layer: LayerInfo, X: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
        B, k = G.shape[:2]
        Gf = G.reshape(B, k, -1, layer.d_out)
        parts = []
        if layer.weight:
            parts.append((Gf * X.reshape(B, 1, -1, layer.d_out)).sum(2))
        if layer.bias:
            parts.append(Gf.sum(2))
        return cat_parts(parts)

    def row_grads(self, layer: LayerInfo, X: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
        r = G.shape[0]
        g = G.reshape(r, -1, layer.d_out)
        parts = [torch.einsum("rjd,jd->rd", g, X.reshape(-1, layer.d_out))] if layer.weight else []
        if layer.bias:
            parts.append(g.sum(1))
        return cat_parts(parts)
