"""The cost model behind ``dynamics.ntk(method="auto")``: estimated multiply-adds and peak bytes of each method.

Symbols: n1, n2 samples (n2 = n1 and half the pairs when x2 is None), k outputs, p selected parameters,
F the forward multiply-adds per sample and a the activation elements per sample (both measured by
:func:`dynamics.engine.layer_probe.probe_structure`), s the bytes per element, G the parameter groups
(selected parameters of one module), m_g the size of group g. A row block is B samples x c outputs.

``jacobian`` (one Jacobian and one contraction when J fits; else contraction per group)
    whole: rows of all n1 (+ n2) samples once, F·(1 + 2k) per sample, and 2·n1·n2·k²·p for the product.
    Memory: all rows (n1 + n2)·k·p plus a block of B·k·p and activations. Per group: each group recomputes its Jacobian rows, F·(1 + 2c) per sample and output chunk (forward plus c
    backward passes; all n in ``bn_mode="batch"``, where every row needs the whole batch);
    contraction: 2·n1·n2·k²·m_g per group. Memory: two row blocks B·c·m_g (or all rows of the group when they
    fit: then nothing is recomputed) plus activations 3·B·(1 + c)·a.
``ntvp`` (K·e_j = J(x1) (J(x2)ᵀ e_j))
    vjp for each column block, then one jvp over x1 per column: 2·F·n1·n2·k. Memory: r = B·c cotangents
    of size p (or m_g when the parameters must be split), their jvps over B samples: 3·r·B·a.
``structured`` (per-layer rules)
    capture of layer inputs and output gradients: F·(1 + 2k) per sample; per layer the rule's own ``cost``
    and ``memory`` (:mod:`dynamics.engine.rules`; e.g. Linear n1·n2·(d_in + k²·d_out), Conv2d the cheaper of
    per-sample gradients n·k·C_out·P·L + n1·n2·k²·C_out·P and patch Grams
    n1·n2·(L²·P + k·C_out·L² + k²·C_out·L)); the fallback
    groups as in ``jacobian``, all at once. Memory: captures of two tiles, B·(Σ inputs + k·Σ outputs + k·p_fb)
    plus the largest rule temporary.

``auto`` takes the feasible method with the fewest estimated multiply-adds; tile sizes are the largest that
fit the workspace that ``memory_budget`` leaves (:mod:`dynamics.engine.memory`: K, the private copy of the
model and a slack are counted against it). Estimates, not measurements: they rank the
methods by orders of magnitude, which is what the choice needs.

>>> import torch, torch.nn as nn
>>> from dynamics.engine.layer_probe import probe_structure
>>> sf = StackedFunction(nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 3)), torch.randn(16, 8))
>>> plans = {m: plan_method(m, sf, sf, True, probe_structure(sf), 2**30) for m in METHODS}
>>> min(plans.values(), key=lambda p: p.flops).method, plans["structured"].rules
('structured', {'0': 'linear-gram', '2': 'linear-gram'})
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from dynamics.engine.layer_probe import Structure
from dynamics.engine.rules import Dims
from dynamics.engine.stacked import StackedFunction

__all__ = ["Plan", "plan_method", "METHODS"]

METHODS = ("jacobian", "ntvp", "structured")


@dataclass
class Plan:
    """Tiles and estimates for one method. ``feasible`` is False when even the smallest tile exceeds the budget."""

    method: str
    feasible: bool
    flops: float = math.inf
    peak_bytes: float = 0.0
    tile1: int = 1  # x1 samples per tile (rows per chunk in bn_mode="batch")
    tile2: int = 1
    out_chunk: int = 1
    cache: bool = False  # x2 blocks computed once and kept
    param_chunks: list = field(default_factory=list)
    rules: dict = field(default_factory=dict)
    min_bytes: float = 0.0


def _largest(fits: Callable[[int], bool], hi: int) -> int:
    """Largest b in [1, hi] with fits(b) (fits monotone decreasing), 0 if none."""
    if not fits(1):
        return 0
    lo = 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _chunks(k: int) -> list[int]:
    out, c = [], k
    while c > 1:
        out.append(c)
        c = (c + 1) // 2
    return out + [1]


def plan_method(method: str, sf1: StackedFunction, sf2: StackedFunction, sym: bool, st: Structure,
                budget: float) -> Plan:
    """Tiles and cost estimates of ``method`` within ``budget`` bytes of intermediates."""
    return {"jacobian": _plan_jacobian, "ntvp": _plan_ntvp, "structured": _plan_structured}[method](
        sf1, sf2, sym, st, budget)


def _dims(sf1, sf2, sym, st):
    n1, n2, k, s = sf1.n, sf2.n, sf1.k, sf1.itemsize
    pairs = n1 * n2 / (2 if sym else 1) if sf1.per_sample else n1 * n2
    return n1, n2, k, s, st.act_per_sample, st.flops_per_sample, pairs, sf1.per_sample


def _row_cost(per_sample, F, B, c, n):
    """Multiply-adds to compute a row block of B samples x c outputs (whole batch n in batch mode)."""
    return B * F * (1 + 2 * c) if per_sample else n * F * (1 + 2 * B * c)


def _plan_jacobian(sf1, sf2, sym, st, budget):
    n1, n2, k, s, a, F, pairs, ps = _dims(sf1, sf2, sym, st)
    sizes = {g: sum(sf1.numels[sf1.names.index(n)] for n in names) for g, names in st.groups.items()}
    m = max(sizes.values())
    N = max(n1, n2)

    def temp(B, c):
        act = 3 * B * (1 + c) * a if ps else 3 * N * a * (1 + B * c)
        return s * (B * c * m + act + B * B * c * c)

    n_rows = (n1 + (0 if sym else n2)) * k
    # one Jacobian of all selected parameters and one contraction, when J (and its row blocks) fit
    B = _largest(lambda b: s * n_rows * sf1.p + s * b * k * sf1.p + temp(b, k) <= budget, max(n1, n2))
    if B:
        plan = Plan("jacobian", True, tile1=B, tile2=B, out_chunk=k, cache=True, param_chunks=[list(sf1.names)],
                    rules={"all parameters": "jacobian-contraction"}, min_bytes=2 * s * m + temp(1, 1),
                    peak_bytes=s * n_rows * sf1.p + s * B * k * sf1.p + temp(B, k))
        nb1, nb2 = math.ceil(n1 / B), math.ceil(n2 / B)
        plan.flops = (nb1 + (0 if sym else nb2)) * _row_cost(ps, F, B, k, N) + 2 * pairs * k * k * sf1.p
        return plan
    B = _largest(lambda b: s * n_rows * m + temp(b, k) <= budget, max(n1, n2))
    plan = Plan("jacobian", True, param_chunks=[names for names in st.groups.values()],
                rules={g: "jacobian-contraction" for g in st.groups}, min_bytes=2 * s * m + temp(1, 1))
    if B:
        plan.tile1 = plan.tile2 = B
        plan.out_chunk, plan.cache = k, True
        plan.peak_bytes = s * n_rows * m + temp(B, k)
    else:
        for c in _chunks(k):
            B = _largest(lambda b: 2 * s * b * c * m + temp(b, c) <= budget, max(n1, n2))
            if B:
                plan.tile1 = plan.tile2 = B
                plan.out_chunk = c
                plan.peak_bytes = 2 * s * B * c * m + temp(B, c)
                break
        else:
            return Plan("jacobian", False, min_bytes=plan.min_bytes)
    B, c = plan.tile1, plan.out_chunk
    nb1, nb2 = math.ceil(n1 / B) * math.ceil(k / c), math.ceil(n2 / B) * math.ceil(k / c)
    blocks2 = (0 if sym else nb2) if plan.cache else (nb1 * nb2 / (2 if sym else 1))
    per_block = _row_cost(ps, F, B, c, N)
    plan.flops = sum((nb1 + blocks2) * per_block + 2 * pairs * k * k * sz for sz in sizes.values())
    return plan


def _plan_ntvp(sf1, sf2, sym, st, budget):
    n1, n2, k, s, a, F, pairs, ps = _dims(sf1, sf2, sym, st)
    groups = list(st.groups.values())
    candidates = [[list(sf1.names)]] + ([groups] if len(groups) > 1 else [])
    min_bytes = math.inf
    for chunks in candidates:
        m = max(sum(sf1.numels[sf1.names.index(n)] for n in names) for names in chunks)
        for c in _chunks(k):
            if ps:
                def mem(B, c=c, m=m):
                    r = B * c
                    return s * (2 * r * m + 3 * B * a * (1 + r) + 3 * r * B * a + r * B * k)
            else:
                def mem(B, c=c, m=m):
                    r = B * c
                    return s * (2 * r * m + 3 * n2 * a * (1 + r) + 3 * r * n1 * a + r * n1 * k)
            min_bytes = min(min_bytes, mem(1, 1))
            B = _largest(lambda b: mem(b) <= budget, n2)
            if B:
                cols = n2 * k
                n_col_blocks = math.ceil(n2 / B) * math.ceil(k / c)
                if ps:
                    vjp = n2 * F * (1 + 2 * c) * math.ceil(k / c)
                    jvp = 2 * F * pairs * k + n_col_blocks * n1 * F
                else:
                    vjp = n_col_blocks * n2 * F * (1 + 2 * B * c)
                    jvp = cols * 2 * n1 * F + n_col_blocks * n1 * F
                return Plan("ntvp", True, flops=(vjp + jvp) * len(chunks), peak_bytes=mem(B),
                            tile1=B if ps else n1, tile2=B, out_chunk=c, param_chunks=chunks,
                            rules={"all parameters": "ntvp"} if len(chunks) == 1 else
                            {g: "ntvp" for g in st.groups},
                            min_bytes=min_bytes)
    return Plan("ntvp", False, min_bytes=min_bytes)


def _structured_rules(st, d: Dims) -> dict:
    rules = {layer.module: layer.rule.variant(layer, d) for layer in st.layers}
    for mname in st.fallback:
        rules[mname] = "autograd" if d.per_sample else "autograd-rows"
    for mname in st.broadcast:
        rules[mname] = "broadcast-parameter"
    return rules


def _plan_structured(sf1, sf2, sym, st, budget):
    n1, n2, k, s, a, F, pairs, ps = _dims(sf1, sf2, sym, st)
    d = Dims(n1, n2, k, sym, ps)
    rules = _structured_rules(st, d)
    p_fb = sum(sf1.numels[sf1.names.index(n)] for n in st.fallback_names)
    p_bc = sum(sf1.numels[sf1.names.index(n)] for n in st.broadcast_names) if ps else 0
    sum_in = sum(layer.in_numel for layer in st.layers)
    sum_out = sum(layer.out_numel for layer in st.layers)
    N = max(n1, n2)
    rule_flops = 2 * pairs * k * k * (p_fb + p_bc)
    ne = n1 + (0 if sym else n2)

    def rule_temp(B1, B2):
        worst = B1 * B2 * k * k
        for layer in st.layers:
            worst = max(worst, layer.rule.memory(layer, rules[layer.module], B1, B2, d))
        return s * worst

    if ps:
        cap = s * (sum_in + k * sum_out + k * (p_fb + p_bc))  # per sample of a tile

        def mem(B, cached):
            held = ne * cap if cached else 2 * B * cap
            return held + s * 3 * 2 * B * a + rule_temp(B, B)
    else:
        # B samples per tile = B*k rows; a capture holds the whole batch's inputs and B*k x n output gradients
        def cap_rows(B):
            return s * (N * sum_in + B * k * (N * sum_out + p_fb))

        def mem(B, cached):
            held = ((n1 + (0 if sym else n2)) * k * (N * sum_out + p_fb) + 2 * N * sum_in) * s if cached \
                else 2 * cap_rows(B)
            return held + s * 3 * N * a * (1 + B * k) + rule_temp(B * k, B * k)
    hi = N
    plan = Plan("structured", True, rules=rules, param_chunks=[list(sf1.names)], out_chunk=k, min_bytes=mem(1, False))
    B = _largest(lambda b: mem(b, True) <= budget, hi)
    if B:
        plan.cache = True
    else:
        B = _largest(lambda b: mem(b, False) <= budget, hi)
        if not B:
            return Plan("structured", False, min_bytes=plan.min_bytes)
    plan.tile1 = plan.tile2 = B
    plan.peak_bytes = mem(B, plan.cache)
    if ps:
        nb1 = math.ceil(n1 / B)
        captured = n1 + ((0 if sym else n2) if plan.cache else nb1 * n2 / (2 if sym else 1))
        capture = captured * F * (1 + 2 * k) * (2 if p_fb else 1)
    else:
        nb1, nb2 = math.ceil(n1 / B), math.ceil(n2 / B)
        captured = nb1 + ((0 if sym else nb2) if plan.cache else nb1 * nb2 / (2 if sym else 1))
        capture = captured * N * F * (1 + 2 * B * k) * (2 if p_fb else 1)
    for layer in st.layers:
        rule_flops += layer.rule.cost(layer, rules[layer.module], d)
    plan.flops = capture + rule_flops
    return plan
