"""The structured NTK: per-layer kernels from layer inputs and output gradients, without per-parameter Jacobians.

For a layer z = W x + b evaluated on sample i, ∂f_a(x_i)/∂W = g_{i,a} x_iᵀ with g_{i,a} = ∂f_a(x_i)/∂z_i, so its
contribution to K is

    K[i, a, j, b] += (x_i·x_j + 1[bias]) (g_{i,a}·g_{j,b})                      rule "linear-gram"

(the (XXᵀ)⊙(GGᵀ) kernel; with only the bias selected the first factor is 1, with only the weight it is x_i·x_j).
A Linear applied at several positions t (sequences) sums over them: rule "linear-psg" forms the per-sample
gradients Σ_t g_t x_tᵀ and contracts them. A Conv2d is a Linear on the patches U = unfold(x) at L positions:

* "conv-psg": per-sample gradients Σ_l g_{·,l} U_{·,l}ᵀ (k·C_out·P numbers per sample), then a contraction;
* "conv-patch": patch Grams A_ij = U_iᵀ U_j (L x L) contracted with the output gradients, never forming
  per-sample gradients; cheaper when L is small and C_out·P large.

The cheaper of the two is chosen per layer by :func:`dynamics.engine.ntk_plan.conv_rule`. BatchNorm's affine
parameters enter linearly after the normalisation, y = γ ⊙ x̂ + β, so ∂f/∂γ_c = Σ_positions g_c x̂_c and
∂f/∂β_c = Σ_positions g_c ("bn-affine"; x̂ uses the statistics the layer normalises with: running ones in
"eval", the frozen ones in "frozen", those of the batch in "batch" -- they do not depend on γ, β). Layers
without a rule (anything else, shared parameters, repeated calls) go through the autograd fallback: the rows of
J restricted to those parameters, contracted ("autograd").

``bn_mode="batch"``: the outputs of sample i depend on z_j for every j, so g becomes g_{(i,a), j} and the rules
keep the cross-sample sums: "linear-gram-batch" contracts Σ_{j,j'} (x_j·x_j' + 1) (g_{r,j}·g_{s,j'}),
"conv-rowgrad-batch" forms each row's gradient Σ_j Σ_l g_{r,j,l} U_{j,l}ᵀ, "bn-affine-batch" likewise
Σ_j Σ_l g_{r,j,c,l} x̂_{j,c,l}, and "autograd-rows" takes the
fallback rows from VJPs of the whole-batch function. Output gradients come from one-hot cotangents vmapped by
``torch.autograd.grad(is_grads_batched=True)`` (over cotangents, never over samples).

Gradients with respect to layer outputs are taken by adding a zero tensor ε to each rule layer's output in a
forward hook on the private copy of the model and differentiating with respect to ε.

>>> import torch, torch.nn as nn
>>> from dynamics.engine.layer_probe import probe_structure
>>> sf = StackedFunction(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)), torch.randn(5, 3))
>>> C = capture(sf, probe_structure(sf), slice(0, 5))
>>> C["X"]["0"].shape, C["G"]["0"].shape     # inputs (B, d_in), output gradients (B, k, d_out)
(torch.Size([5, 3]), torch.Size([5, 2, 4]))
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from dynamics.engine.ntk_contraction import group_rows, mirror_upper, sample_tiles
from dynamics.engine.layer_probe import LayerInfo, Structure
from dynamics.engine.stacked import StackedFunction

__all__ = ["ntk_structured", "capture"]

log = logging.getLogger(__name__)


def capture(sf: StackedFunction, st: Structure, samples: slice) -> dict:
    """Layer inputs X and output gradients G for a tile.

    Per-sample functions: ``X[m]`` is ``(B, *in)`` and ``G[m]`` is ``(B, k, *out)`` for the samples in ``samples``.
    ``bn_mode="batch"``: ``X[m]`` is the whole batch ``(n, *in)`` and ``G[m]`` is ``(B*k, n, *out)``, one row per
    (sample in ``samples``, output). ``"fb"`` holds the fallback rows ``(B, k, p_fb)`` (or None).
    """
    k = sf.k
    result: dict = {"X": {}, "G": {}, "fb": None}
    if st.fallback_names:
        result["fb"] = group_rows(sf, st.fallback_names, samples, slice(0, k))
    if not st.layers:
        return result
    modules = dict(sf.module.named_modules())
    eps: dict[str, torch.Tensor] = {}
    bn = {layer.module for layer in st.layers if layer.kind == "batchnorm"}

    def make_hook(name):
        def hook(mod, inp, out):
            result["X"][name] = _normalised(mod, inp[0].detach()) if name in bn else inp[0].detach()
            e = torch.zeros_like(out, requires_grad=True)
            eps[name] = e
            return out + e
        return hook

    handles = [modules[layer.module].register_forward_hook(make_hook(layer.module)) for layer in st.layers]
    try:
        with torch.enable_grad():
            out = sf.call(sf.theta, sf.x[samples] if sf.per_sample else None)
    finally:
        for h in handles:
            h.remove()
    targets = [eps[layer.module] for layer in st.layers]
    if sf.per_sample:
        # cotangent c: output c of every sample of the tile (samples are independent), vmapped over c
        eye = torch.eye(k, dtype=out.dtype, device=out.device)
        go = eye[:, None, :].expand(k, out.shape[0], k).contiguous()
        try:
            grads = _grads(out, targets, go, retain=True, batched=True)
        except RuntimeError as exc:  # an op without a batching rule: one backward pass per output
            log.debug("batched gradients failed (%s); one backward pass per output", exc)
            per_c = [_grads(out, targets, go[c], retain=True, batched=False) for c in range(k)]
            grads = [torch.stack([g[i] for g in per_c]) for i in range(len(targets))]
        for layer, g in zip(st.layers, grads):
            result["G"][layer.module] = g.transpose(0, 1)  # (B, k, *out)
    else:
        rows = torch.arange(samples.start * k, samples.stop * k, device=out.device)
        cot = torch.zeros(len(rows), out.numel(), dtype=out.dtype, device=out.device)
        cot[torch.arange(len(rows), device=out.device), rows] = 1
        cot = cot.reshape(len(rows), *out.shape)
        try:
            grads = _grads(out, targets, cot, retain=True, batched=True)
        except RuntimeError as exc:  # an op without a batching rule: one backward pass per row
            log.debug("batched gradients failed (%s); one backward pass per row", exc)
            per_row = [_grads(out, targets, cot[r], retain=True, batched=False) for r in range(len(rows))]
            grads = [torch.stack([g[i] for g in per_row]) for i in range(len(targets))]
        for layer, g in zip(st.layers, grads):
            result["G"][layer.module] = g
    return result


def _normalised(mod, X: torch.Tensor) -> torch.Tensor:
    """x̂ of a BatchNorm layer: X normalised with the statistics the layer uses in its current mode."""
    shape = (1, -1) + (1,) * (X.dim() - 2)
    if mod.training or mod.running_mean is None:
        dims = [0] + list(range(2, X.dim()))
        mean, var = X.mean(dim=dims), X.var(dim=dims, unbiased=False)
    else:
        mean, var = mod.running_mean, mod.running_var
    return (X - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + mod.eps)


def _grads(out, targets, grad_out, retain: bool, batched: bool) -> list[torch.Tensor]:
    grads = torch.autograd.grad(out, targets, grad_out, retain_graph=retain, allow_unused=True,
                                is_grads_batched=batched)
    lead = grad_out.shape[:1] if batched else ()
    return [torch.zeros(*lead, *t.shape, dtype=t.dtype, device=t.device) if g is None else g
            for g, t in zip(grads, targets)]


# ------------------------------------------------------------------ per-sample rules: (B1, k, B2, k) blocks
def _psg(layer: LayerInfo, X: torch.Tensor, G: torch.Tensor, rule: str) -> torch.Tensor:
    """Per-sample gradients (B, k, m) of the layer's selected parameters (weight first, then bias)."""
    B, k = G.shape[:2]
    parts = []
    if rule == "bn-affine":
        Gf = G.reshape(B, k, layer.d_out, -1)
        if layer.weight:
            parts.append(torch.einsum("bacl,bcl->bac", Gf, X.reshape(B, layer.d_out, -1)))
        if layer.bias:
            parts.append(Gf.sum(-1))
    elif rule == "linear-psg":
        Xf = X.reshape(B, -1, layer.d_in)
        Gf = G.reshape(B, k, -1, layer.d_out)
        if layer.weight:
            parts.append(torch.einsum("bcto,bti->bcoi", Gf, Xf).reshape(B, k, -1))
        if layer.bias:
            parts.append(Gf.sum(2))
    else:
        Gf = G.reshape(B, k, layer.conv["C_out"], -1)
        if layer.weight:
            U = _unfold(layer, X)
            parts.append(torch.einsum("bcol,bpl->bcop", Gf, U).reshape(B, k, -1))
        if layer.bias:
            parts.append(Gf.sum(-1))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


def _unfold(layer: LayerInfo, X: torch.Tensor) -> torch.Tensor:
    """Patches U (B, C_in*kh*kw, L) in the weight's (C_in, kh, kw) order, as ``F.unfold`` gives them.

    Built from strided views (``Tensor.unfold``) and one copy: on CPU ``F.unfold`` (im2col) is ~10x slower.
    """
    c = layer.conv
    (kh, kw), (dh, dw), (ph, pw), (sh, sw) = c["kernel_size"], c["dilation"], c["padding"], c["stride"]
    xp = F.pad(X, (pw, pw, ph, ph)) if ph or pw else X
    V = xp.unfold(2, dh * (kh - 1) + 1, sh).unfold(3, dw * (kw - 1) + 1, sw)[..., ::dh, ::dw]
    B, C, Ho, Wo = V.shape[:4]
    return V.permute(0, 1, 4, 5, 2, 3).reshape(B, C * kh * kw, Ho * Wo)


def _pair(P1: torch.Tensor, P2: torch.Tensor) -> torch.Tensor:
    """(B1, k, m) x (B2, k, m) -> (B1, k, B2, k)."""
    B1, k, m = P1.shape
    B2 = P2.shape[0]
    return (P1.reshape(B1 * k, m) @ P2.reshape(B2 * k, m).T).reshape(B1, k, B2, k)


def _layer_block(layer: LayerInfo, rule: str, C1: dict, C2: dict, psg1: dict) -> torch.Tensor:
    """The layer's contribution to the block of K between the tiles of captures C1 and C2 (psg1 caches C1's)."""
    name = layer.module
    X1, G1, X2, G2 = C1["X"][name], C1["G"][name], C2["X"][name], C2["G"][name]
    k = G1.shape[1]
    if rule == "linear-gram":  # one position: X (B, d_in) up to singleton dimensions
        X1, X2 = X1.reshape(X1.shape[0], layer.d_in), X2.reshape(X2.shape[0], layer.d_in)
        A = X1 @ X2.T if layer.weight else X1.new_zeros(X1.shape[0], X2.shape[0])
        if layer.bias:
            A = A + 1
        GG = (G1.reshape(-1, layer.d_out) @ G2.reshape(-1, layer.d_out).T).reshape(G1.shape[0], k, G2.shape[0], k)
        return A[:, None, :, None] * GG
    if rule == "conv-patch":
        C_out = layer.conv["C_out"]
        g1 = G1.reshape(G1.shape[0], k, C_out, -1)
        g2 = G2.reshape(G2.shape[0], k, C_out, -1)
        block = torch.einsum("iao,jbo->iajb", g1.sum(-1), g2.sum(-1)) if layer.bias else 0
        if layer.weight:
            A = torch.einsum("ipl,jpm->ijlm", _unfold(layer, X1), _unfold(layer, X2))
            H = torch.einsum("ijlm,iaol->ijaom", A, g1)
            block = block + torch.einsum("ijaom,jbom->iajb", H, g2)
        return block
    if name not in psg1:
        psg1[name] = _psg(layer, X1, G1, rule)
    P1 = psg1[name]
    P2 = P1 if C2 is C1 else _psg(layer, X2, G2, rule)
    return _pair(P1, P2)


# ------------------------------------------------------------------ batch-mode rules: (r1, r2) row blocks
def _batch_block(layer: LayerInfo, rule: str, C1: dict, C2: dict) -> torch.Tensor:
    name = layer.module
    X1, G1, X2, G2 = C1["X"][name], C1["G"][name], C2["X"][name], C2["G"][name]
    r1, r2 = G1.shape[0], G2.shape[0]
    if rule == "linear-gram-batch":
        Xf1, Xf2 = X1.reshape(-1, layer.d_in), X2.reshape(-1, layer.d_in)
        A = Xf1 @ Xf2.T if layer.weight else Xf1.new_zeros(Xf1.shape[0], Xf2.shape[0])
        if layer.bias:
            A = A + 1
        g1 = G1.reshape(r1, -1, layer.d_out)
        g2 = G2.reshape(r2, -1, layer.d_out)
        H = torch.einsum("rJo,JM->rMo", g1, A)
        return H.reshape(r1, -1) @ g2.reshape(r2, -1).T
    # conv-rowgrad-batch / bn-affine-batch: each row's gradient, summed over samples j and positions l
    P1, P2 = _rowgrad(layer, X1, G1), _rowgrad(layer, X2, G2)
    return P1 @ P2.T


def _rowgrad(layer: LayerInfo, X: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    r, n = G.shape[:2]
    if layer.kind == "batchnorm":
        g = G.reshape(r, n, layer.d_out, -1)
        parts = [torch.einsum("rncl,ncl->rc", g, X.reshape(n, layer.d_out, -1))] if layer.weight else []
        if layer.bias:
            parts.append(g.sum((1, 3)))
        return torch.cat(parts, dim=-1)
    g = G.reshape(r, n, layer.conv["C_out"], -1)
    parts = []
    if layer.weight:
        parts.append(torch.einsum("rnol,npl->rop", g, _unfold(layer, X)).reshape(r, -1))
    if layer.bias:
        parts.append(g.sum((1, 3)))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


# ------------------------------------------------------------------ driver
def ntk_structured(sf1: StackedFunction, sf2: StackedFunction, sym: bool, plan, st: Structure,
                   Kf: torch.Tensor) -> None:
    """Accumulate K from per-layer rules (``plan.rules``: module -> rule) tile by tile."""
    n1, n2, k = sf1.n, sf2.n, sf1.k
    tiles1 = sample_tiles(n1, plan.tile1)
    tiles2 = tiles1 if sym else sample_tiles(n2, plan.tile2)
    caps1 = caps2 = None
    if plan.cache:
        caps1 = [capture(sf1, st, s) for s in tiles1]
        caps2 = caps1 if sym else [capture(sf2, st, s) for s in tiles2]
    Kflat = Kf.view(n1 * k, n2 * k)
    for t1, s1 in enumerate(tiles1):
        C1 = caps1[t1] if caps1 is not None else capture(sf1, st, s1)
        psg1: dict = {}
        for t2, s2 in enumerate(tiles2):
            if sym and t2 < t1:
                continue
            if sym and t2 == t1:
                C2 = C1
            else:
                C2 = caps2[t2] if caps2 is not None else capture(sf2, st, s2)
            if sf1.per_sample:
                block = Kf[s1, :, s2, :]
                for layer in st.layers:
                    block += _layer_block(layer, plan.rules[layer.module], C1, C2, psg1)
                if C1["fb"] is not None:
                    block += _pair(C1["fb"], C2["fb"])
            else:
                block = Kflat[s1.start * k: s1.stop * k, s2.start * k: s2.stop * k]
                for layer in st.layers:
                    block += _batch_block(layer, plan.rules[layer.module], C1, C2)
                if C1["fb"] is not None:
                    block += C1["fb"].reshape(-1, C1["fb"].shape[-1]) @ C2["fb"].reshape(-1, C2["fb"].shape[-1]).T
    if sym:
        mirror_upper(Kf, tiles1)
