"""BatchNorm1d/2d/3d affine parameters: y = γ ⊙ x̂ + β, linear in (γ, β) after the normalisation.

∂f/∂γ_c = Σ_positions g_c x̂_c and ∂f/∂β_c = Σ_positions g_c, where x̂ uses the statistics the layer normalises
with: running ones in ``"eval"``, the frozen ones in ``"frozen"``, those of the batch in ``"batch"`` (they do not
depend on γ, β, so the rule is exact in every mode).

Variants: ``"bn-affine"`` (per-sample gradients, contracted); ``"bn-affine-batch"`` (each row's gradient summed
over the batch). Only the exact classes: a subclass such as BatchNorm followed by an activation falls back.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dynamics.engine.rules.base import Dims, LayerInfo, LayerRule, cat_parts

__all__ = ["BatchNormAffineRule"]


class BatchNormAffineRule(LayerRule):
    name = "batchnorm"
    types = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

    def describe(self, layer: LayerInfo, module: nn.Module, in_shape: tuple, out_shape: tuple) -> None:
        layer.d_in = layer.d_out = module.num_features
        layer.positions = math.prod(out_shape[2:])

    def variant(self, layer: LayerInfo, d: Dims) -> str:
        return "bn-affine" if d.per_sample else "bn-affine-batch"

    def cost(self, layer: LayerInfo, variant: str, d: Dims) -> float:
        if variant == "bn-affine":
            return d.ne * d.k * layer.out_numel + d.pairs * d.k * d.k * 2 * layer.d_out
        return (d.n1 + d.n2) * d.k * d.N * layer.out_numel + d.n1 * d.k * d.n2 * d.k * 2 * layer.d_out

    def memory(self, layer: LayerInfo, variant: str, B1: int, B2: int, d: Dims) -> float:
        if variant == "bn-affine":
            return (B1 + B2) * d.k * 2 * layer.d_out
        return (B1 + B2) * 2 * layer.d_out + B1 * d.N * layer.out_numel

    def capture_input(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """x̂: the input normalised with the statistics the layer uses in its current mode."""
        shape = (1, -1) + (1,) * (x.dim() - 2)
        if module.training or module.running_mean is None:
            dims = [0] + list(range(2, x.dim()))
            mean, var = x.mean(dim=dims), x.var(dim=dims, unbiased=False)
        else:
            mean, var = module.running_mean, module.running_var
        return (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + module.eps)

    def per_sample_grads(self, layer: LayerInfo, X: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
        B, k = G.shape[:2]
        Gf = G.reshape(B, k, layer.d_out, -1)
        parts = []
        if layer.weight:
            parts.append(torch.einsum("bacl,bcl->bac", Gf, X.reshape(B, layer.d_out, -1)))
        if layer.bias:
            parts.append(Gf.sum(-1))
        return cat_parts(parts)

    def row_grads(self, layer: LayerInfo, X: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
        r, n = G.shape[:2]
        g = G.reshape(r, n, layer.d_out, -1)
        parts = [torch.einsum("rncl,ncl->rc", g, X.reshape(n, layer.d_out, -1))] if layer.weight else []
        if layer.bias:
            parts.append(g.sum((1, 3)))
        return cat_parts(parts)
