"""``nn.Conv2d`` (any ``groups``, so depthwise too): a Linear on the patches U = unfold(x) at L output positions.

Variants (``groups=1``: the cheaper by multiply-adds for the problem; ``groups>1``: per-sample gradients):

``"conv-psg"``
    per-sample gradients Σ_l g_{·,l} U_{·,l}ᵀ per group (k·C_out·P numbers per sample, P = C_in/groups·kh·kw),
    then a contraction.
``"conv-patch"`` (``groups=1``)
    patch Grams A_ij = U_iᵀ U_j (L x L) contracted with the output gradients, never forming per-sample gradients;
    cheaper when L is small and C_out·P large.
``"conv-rowgrad-batch"`` (``bn_mode="batch"``)
    each row's gradient Σ_j Σ_l g_{r,j,l} U_{j,l}ᵀ over the whole batch, contracted.

Only zero padding given as numbers is covered (``padding_mode="zeros"``, not ``"same"``/``"valid"`` strings).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dynamics.engine.rules.base import Dims, LayerInfo, LayerRule, cat_parts

__all__ = ["Conv2dRule", "unfold_patches"]


def unfold_patches(layer: LayerInfo, X: torch.Tensor) -> torch.Tensor:
    """Patches U (B, C_in*kh*kw, L) in the weight's (C_in, kh, kw) order, as ``F.unfold`` gives them.

    Built from strided views (``Tensor.unfold``) and one copy: on CPU ``F.unfold`` (im2col) is ~10x slower.
    """
    c = layer.conv
    (kh, kw), (dh, dw), (ph, pw), (sh, sw) = c["kernel_size"], c["dilation"], c["padding"], c["stride"]
    xp = F.pad(X, (pw, pw, ph, ph)) if ph or pw else X
    V = xp.unfold(2, dh * (kh - 1) + 1, sh).unfold(3, dw * (kw - 1) + 1, sw)[..., ::dh, ::dw]
    B, C, Ho, Wo = V.shape[:4]
    return V.permute(0, 1, 4, 5, 2, 3).reshape(B, C * kh * kw, Ho * Wo)


class Conv2dRule(LayerRule):
    name = "conv2d"
    types = (nn.Conv2d,)

    def refusal(self, module: nn.Module, in_shape: tuple, out_shape: tuple) -> str:
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            return "padding other than explicit zero padding"
        if len(in_shape) != 4:
            return "unbatched or non-4D input"
        return ""

    def describe(self, layer: LayerInfo, module: nn.Module, in_shape: tuple, out_shape: tuple) -> None:
        layer.conv = dict(P=module.in_channels // module.groups * math.prod(module.kernel_size),
                          C_out=module.out_channels, L=math.prod(out_shape[2:]), groups=module.groups,
                          kernel_size=module.kernel_size, dilation=module.dilation, padding=module.padding,
                          stride=module.stride)

    def variant(self, layer: LayerInfo, d: Dims) -> str:
        if not d.per_sample:
            return "conv-rowgrad-batch"
        if layer.conv["groups"] != 1:
            return "conv-psg"
        c = layer.conv
        psg = d.ne * d.k * c["C_out"] * c["P"] * c["L"] + d.pairs * d.k * d.k * c["C_out"] * c["P"]
        return "conv-psg" if psg <= self._patch_cost(layer, d) else "conv-patch"

    @staticmethod
    def _patch_cost(layer: LayerInfo, d: Dims) -> float:
        c, k = layer.conv, d.k
        return d.pairs * (c["L"] ** 2 * c["P"] + k * c["C_out"] * c["L"] ** 2 + k * k * c["C_out"] * c["L"])

    def cost(self, layer: LayerInfo, variant: str, d: Dims) -> float:
        c, k = layer.conv, d.k
        if variant == "conv-psg":
            return d.ne * k * c["C_out"] * c["P"] * c["L"] + d.pairs * k * k * c["C_out"] * c["P"]
        if variant == "conv-patch":
            return self._patch_cost(layer, d)
        return (d.n1 + d.n2) * k * d.N * c["C_out"] * c["P"] * c["L"] + d.n1 * k * d.n2 * k * c["C_out"] * c["P"]

    def memory(self, layer: LayerInfo, variant: str, B1: int, B2: int, d: Dims) -> float:
        c = layer.conv
        if variant == "conv-psg":
            return (B1 + B2) * d.k * c["C_out"] * c["P"]
        if variant == "conv-patch":
            return B1 * B2 * (c["L"] ** 2 + d.k * c["C_out"] * c["L"])
        return (B1 + B2) * c["C_out"] * c["P"] + B1 * d.N * layer.out_numel

    def per_sample_grads(self, layer: LayerInfo, X: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
        B, k = G.shape[:2]
        c = layer.conv
        g = c["groups"]
        Gf = G.reshape(B, k, g, c["C_out"] // g, -1)
        parts = []
        if layer.weight:
            U = unfold_patches(layer, X).reshape(B, g, c["P"], -1)
            parts.append(torch.einsum("bcgol,bgpl->bcgop", Gf, U).reshape(B, k, -1))
        if layer.bias:
            parts.append(Gf.sum(-1).reshape(B, k, -1))
        return cat_parts(parts)

    def pair_block(self, layer: LayerInfo, variant: str, X1, G1, X2, G2, cache: dict) -> torch.Tensor:
        if variant != "conv-patch":
            return super().pair_block(layer, variant, X1, G1, X2, G2, cache)
        k = G1.shape[1]
        C_out = layer.conv["C_out"]
        g1 = G1.reshape(G1.shape[0], k, C_out, -1)
        g2 = G2.reshape(G2.shape[0], k, C_out, -1)
        block = torch.einsum("iao,jbo->iajb", g1.sum(-1), g2.sum(-1)) if layer.bias else 0
        if layer.weight:
            A = torch.einsum("ipl,jpm->ijlm", unfold_patches(layer, X1), unfold_patches(layer, X2))
            H = torch.einsum("ijlm,iaol->ijaom", A, g1)
            block = block + torch.einsum("ijaom,jbom->iajb", H, g2)
        return block

    def row_grads(self, layer: LayerInfo, X: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
        r, n = G.shape[:2]
        c = layer.conv
        g = c["groups"]
        Gf = G.reshape(r, n, g, c["C_out"] // g, -1)
        parts = []
        if layer.weight:
            U = unfold_patches(layer, X).reshape(n, g, c["P"], -1)
            parts.append(torch.einsum("rngol,ngpl->rgop", Gf, U).reshape(r, -1))
        if layer.bias:
            parts.append(Gf.sum((1, 4)).reshape(r, -1))
        return cat_parts(parts)
