"""The structured NTK: per-layer kernels from layer inputs and output gradients, without per-parameter Jacobians.

Each layer with a rule (:mod:`dynamics.engine.rules`: Linear, Conv2d including grouped/depthwise, BatchNorm and
LayerNorm affine parameters) contributes its block from its inputs X and output gradients G: for z = W x + b on
sample i, ∂f_a(x_i)/∂W = g_{i,a} x_iᵀ with g_{i,a} = ∂f_a(x_i)/∂z_i, so the block is (x_i·x_j + 1)(g_{i,a}·g_{j,b})
("linear-gram"), and the other rules are variations of it (see each rule's module). Layers without a rule
(other types, subclasses that override ``forward``, shared parameters, repeated calls, parameters of container
modules) go through the autograd fallback: the rows of J restricted to those parameters, contracted
("autograd").

``bn_mode="batch"``: the outputs of sample i depend on z_j for every j, so g becomes g_{(i,a), j} and the rules
keep the cross-sample sums (the ``-batch`` variants of the rules), and "autograd-rows" takes the fallback rows from VJPs of the whole-batch function. Output gradients come from one-hot cotangents vmapped by
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

from dynamics.engine.layer_probe import Structure
from dynamics.engine.ntk_contraction import group_rows, mirror_upper, sample_tiles
from dynamics.engine.rules.base import pair
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
    result: dict = {"X": {}, "G": {}, "fb": None, "bc": None}
    if st.fallback_names:
        result["fb"] = group_rows(sf, st.fallback_names, samples, slice(0, k))
    bnames = st.broadcast_names if sf.per_sample else []
    if not st.layers and not bnames:
        return result
    modules = dict(sf.module.named_modules())
    eps: dict[str, torch.Tensor] = {}
    rule_of = {layer.module: layer.rule for layer in st.layers}

    def make_hook(name):
        def hook(mod, inp, out):
            result["X"][name] = rule_of[name].capture_input(mod, inp[0].detach())
            e = torch.zeros_like(out, requires_grad=True)
            eps[name] = e
            return out + e
        return hook

    handles = [modules[layer.module].register_forward_hook(make_hook(layer.module)) for layer in st.layers]
    theta, copies = dict(sf.theta), []
    B = samples.stop - samples.start
    for name in bnames:  # one copy per sample of each broadcast parameter: P + e_i, differentiated at e = 0
        P = sf.theta[name]
        copies.append(torch.zeros((B,) + tuple(P.shape[1:]), dtype=P.dtype, device=P.device, requires_grad=True))
        theta[name] = P + copies[-1]
    try:
        with torch.enable_grad():
            out = sf.call(theta, sf.x[samples] if sf.per_sample else None)
    finally:
        for h in handles:
            h.remove()
    targets = [eps[layer.module] for layer in st.layers] + copies
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
        if copies:
            per = [g.transpose(0, 1).reshape(B, k, -1) for g in grads[len(st.layers):]]
            result["bc"] = torch.cat(per, dim=-1)  # (B, k, p_bc): per-sample gradients, broadcast parameters
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


def _grads(out, targets, grad_out, retain: bool, batched: bool) -> list[torch.Tensor]:
    grads = torch.autograd.grad(out, targets, grad_out, retain_graph=retain, allow_unused=True,
                                is_grads_batched=batched)
    lead = grad_out.shape[:1] if batched else ()
    return [torch.zeros(*lead, *t.shape, dtype=t.dtype, device=t.device) if g is None else g
            for g, t in zip(grads, targets)]


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
                    name = layer.module
                    block += layer.rule.pair_block(layer, plan.rules[name], C1["X"][name], C1["G"][name],
                                                   C2["X"][name], C2["G"][name], psg1)
                if C1["fb"] is not None:
                    block += pair(C1["fb"], C2["fb"])
                if C1["bc"] is not None:
                    block += pair(C1["bc"], C2["bc"])
            else:
                block = Kf[s1, :, s2, :]  # rows (sample, output) of tile 1 x rows of tile 2
                B1, B2 = s1.stop - s1.start, s2.stop - s2.start
                for layer in st.layers:
                    name = layer.module
                    block += layer.rule.batch_block(layer, plan.rules[name], C1["X"][name], C1["G"][name],
                                                    C2["X"][name], C2["G"][name]).reshape(B1, k, B2, k)
                if C1["fb"] is not None:
                    fb1, fb2 = C1["fb"], C2["fb"]
                    block += (fb1.reshape(-1, fb1.shape[-1]) @ fb2.reshape(-1, fb2.shape[-1]).T).reshape(B1, k, B2, k)
    if sym:
        mirror_upper(Kf, tiles1)
