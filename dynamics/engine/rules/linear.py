"""``nn.Linear``: z = W x + b, so ∂f_a(x_i)/∂W = Σ_t g_{i,a,t} x_{i,t}ᵀ over the positions t sharing W.

Variants:

``"linear-gram"`` (one position per sample)
    K[i, a, j, b] += (x_i·x_j + 1[bias]) (g_{i,a}·g_{j,b}): the (XXᵀ)⊙(GGᵀ) kernel, no per-sample gradients
    (with only the bias selected the first factor is 1, with only the weight it is x_i·x_j).
``"linear-psg"`` (several positions: sequences, images treated as tokens)
    per-sample gradients Σ_t g_t x_tᵀ (k·d_out·d_in numbers per sample), contracted.
``"linear-gram-batch"`` (``bn_mode="batch"``: g depends on every sample)
    Σ_{j,j'} (x_j·x_j' + 1) (g_{r,j}·g_{s,j'}) over the whole batch's positions.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dynamics.engine.rules.base import Dims, LayerInfo, LayerRule, cat_parts, gram

__all__ = ["LinearRule"]


class LinearRule(LayerRule):
    name = "linear"
    types = (nn.Linear,)

    def describe(self, layer: LayerInfo, module: nn.Module, in_shape: tuple, out_shape: tuple) -> None:
        layer.d_in, layer.d_out = module.in_features, module.out_features
        layer.positions = math.prod(in_shape[1:-1])

    def variant(self, layer: LayerInfo, d: Dims) -> str:
        if not d.per_sample:
            return "linear-gram-batch"
        return "linear-gram" if layer.positions == 1 else "linear-psg"

    def cost(self, layer: LayerInfo, variant: str, d: Dims) -> float:
        t, di, do, k = layer.positions, layer.d_in, layer.d_out, d.k
        if variant == "linear-gram":
            return d.pairs * ((di if layer.weight else 0) + k * k * do)
        if variant == "linear-psg":
            return d.ne * k * do * di * t + d.pairs * k * k * do * di
        return (d.n1 * t) * (d.n2 * t) * di + d.n1 * k * (d.n1 * t) * (d.n2 * t) * do \
            + d.n1 * k * d.n2 * k * d.n2 * t * do

    def memory(self, layer: LayerInfo, variant: str, B1: int, B2: int, d: Dims) -> float:
        if variant == "linear-gram":
            return 2 * B1 * B2 * (1 + d.k * d.k)
        if variant == "linear-psg":
            return (B1 + B2) * d.k * layer.d_out * layer.d_in
        return B1 * d.N * layer.out_numel + d.N * d.N * layer.positions ** 2

    def per_sample_grads(self, layer: LayerInfo, X: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
        B, k = G.shape[:2]
        Xf = X.reshape(B, -1, layer.d_in)
        Gf = G.reshape(B, k, -1, layer.d_out)
        parts = []
        if layer.weight:
            parts.append(torch.einsum("bcto,bti->bcoi", Gf, Xf).reshape(B, k, -1))
        if layer.bias:
            parts.append(Gf.sum(2))
        return cat_parts(parts)

    def pair_block(self, layer: LayerInfo, variant: str, X1, G1, X2, G2, cache: dict) -> torch.Tensor:
        if variant != "linear-gram":
            return super().pair_block(layer, variant, X1, G1, X2, G2, cache)
        k, same = G1.shape[1], X1 is X2 and G1 is G2
        X1, X2 = X1.reshape(X1.shape[0], layer.d_in), X2.reshape(X2.shape[0], layer.d_in)
        A = gram(X1, X1 if same else X2) if layer.weight else X1.new_zeros(X1.shape[0], X2.shape[0])
        if layer.bias:
            A = A + 1
        g1 = G1.reshape(-1, layer.d_out)
        GG = gram(g1, g1 if same else G2.reshape(-1, layer.d_out)).reshape(G1.shape[0], k, G2.shape[0], k)
        return A[:, None, :, None] * GG

    def batch_block(self, layer: LayerInfo, variant: str, X1, G1, X2, G2) -> torch.Tensor:
        r1, r2 = G1.shape[0], G2.shape[0]
        Xf1, Xf2 = X1.reshape(-1, layer.d_in), X2.reshape(-1, layer.d_in)
        A = Xf1 @ Xf2.T if layer.weight else Xf1.new_zeros(Xf1.shape[0], Xf2.shape[0])
        if layer.bias:
            A = A + 1
        g1 = G1.reshape(r1, -1, layer.d_out)
        g2 = G2.reshape(r2, -1, layer.d_out)
        H = torch.einsum("rJo,JM->rMo", g1, A)
        return H.reshape(r1, -1) @ g2.reshape(r2, -1).T
