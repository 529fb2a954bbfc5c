"""What the NTK algorithms need to know about a network: its layers, their shapes and costs, and which rule fits.

One forward pass with hooks over one sample (the whole batch in ``bn_mode="batch"``) records, for every module
that owns selected parameters, the per-sample input and output shapes and how often it ran. Each such module
gets the rule of :data:`dynamics.engine.rules.RULES` that applies to it (exact type, unchanged forward, no hooks;
see :mod:`dynamics.engine.rules`) when it is also called exactly once, owns no parameter shared with another
module, and keeps the samples along dimension 0. Everything else -- custom layers, subclasses that override
``forward``, parameters shared between modules or modules called several times, parameters registered on
container modules -- is left to the autograd fallback, with the reason recorded. Exception: a container's
parameter of shape (1, ...) that is broadcast over the samples (class token, position embedding) is verified to
be so on two samples and then differentiated per sample in the same backward pass as the rules' layers
(``Structure.broadcast``), not by the fallback.

It also counts the multiply-adds of a forward pass per sample (Linear and convolution layers, plus one
operation per activation element), the ``F`` of the cost model in :mod:`dynamics.engine.ntk_plan`.

>>> import torch, torch.nn as nn
>>> from dynamics.engine.stacked import StackedFunction
>>> net = nn.Sequential(nn.Linear(3, 4), nn.PReLU(), nn.Linear(4, 2))
>>> s = probe_structure(StackedFunction(net, torch.randn(5, 3)))
>>> [(l.module, l.kind) for l in s.layers], s.fallback
([('0', 'linear'), ('2', 'linear')], {'1': 'PReLU has no structured rule'})
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import nn

from dynamics.engine.parameters import group_by_module
from dynamics.engine.rules import LayerInfo, no_rule_reason, rule_for
from dynamics.engine.stacked import StackedFunction

__all__ = ["LayerInfo", "Structure", "probe_structure"]


@dataclass
class Structure:
    """Layers with rules, the fallback groups (module -> reason), and per-sample forward cost / activations."""

    layers: list[LayerInfo]
    fallback: dict[str, str]
    fallback_names: list[str]
    flops_per_sample: float
    act_per_sample: float
    groups: dict[str, list[str]]  # module name -> selected parameter names, in column order
    broadcast: dict[str, list[str]] = field(default_factory=dict)  # module -> parameters broadcast over samples

    @property
    def broadcast_names(self) -> list[str]:
        return [n for names in self.broadcast.values() for n in names]


def probe_structure(sf: StackedFunction) -> Structure:
    """Run one hooked forward pass of ``sf.module`` and classify every module owning selected parameters."""
    selected = set(sf.names)
    modules = dict(sf.module.named_modules())
    owners: dict[str, list[tuple[str, str]]] = {}
    uses = Counter()
    for mname, m in modules.items():
        for pname, p in m._parameters.items():
            if p is None:
                continue
            uses[id(p)] += 1
            full = f"{mname}.{pname}" if mname else pname
            if full in selected:
                owners.setdefault(mname, []).append((pname, full))
    xb = sf.x[:1] if sf.per_sample else None
    nb = 1 if sf.per_sample else sf.n
    calls: Counter = Counter()
    shapes: dict[str, tuple] = {}
    cost = [0.0, 0.0]  # multiply-adds, activation elements

    def make_hook(mname):
        def hook(mod, inp, out):
            calls[mname] += 1
            if not isinstance(out, torch.Tensor):
                return
            cost[1] += out.numel() / nb
            if isinstance(mod, nn.Linear):
                cost[0] += out.numel() / nb * mod.in_features
            elif isinstance(mod, nn.modules.conv._ConvNd):
                cost[0] += out.numel() / nb * mod.in_channels // mod.groups * math.prod(mod.kernel_size)
            if mname in owners and inp and isinstance(inp[0], torch.Tensor):
                shapes[mname] = (tuple(inp[0].shape), tuple(out.shape))
        return hook

    # the rules are chosen before our own probing hooks are registered (a hook makes a rule step aside)
    chosen = {mname: rule_for(modules[mname]) for mname in owners}
    reasons = {mname: no_rule_reason(modules[mname]) for mname, r in chosen.items() if r is None}
    handles = [m.register_forward_hook(make_hook(name)) for name, m in modules.items()]
    try:
        with torch.no_grad():
            sf.call(sf.theta, xb)
    finally:
        for h in handles:
            h.remove()

    layers: list[LayerInfo] = []
    fallback: dict[str, str] = {}
    for mname, owned in owners.items():
        m, rule = modules[mname], chosen[mname]
        reason = reasons.get(mname) or _refusal(m, rule, calls[mname], shapes.get(mname), nb,
                                                [uses[id(m._parameters[p])] for p, _ in owned])
        if reason:
            fallback[mname] = reason
            continue
        full = dict(owned)
        in_shape, out_shape = shapes[mname]
        info = LayerInfo(mname, rule, full.get("weight"), full.get("bias"), in_shape[1:], out_shape[1:])
        rule.describe(info, m, in_shape, out_shape)
        layers.append(info)
    groups = group_by_module(sf.names)
    broadcast = {}
    if sf.per_sample:  # parameters of container modules added to or concatenated with every sample
        for mname in list(fallback):
            if groups[mname] and all(_broadcast_over_samples(sf, n) for n in groups[mname]):
                broadcast[mname] = groups[mname]
                del fallback[mname]
    in_fallback = {n for mname in fallback for n in groups[mname]}
    fallback_names = [n for n in sf.names if n in in_fallback]
    flops = 2 * cost[0] + cost[1]
    return Structure(layers, fallback, fallback_names, max(flops, 1.0), max(sf.activation_numel / sf.n, 1.0), groups,
                     broadcast)


@torch.no_grad()
def _broadcast_over_samples(sf: StackedFunction, name: str) -> bool:
    """Whether parameter ``name`` of shape (1, ...) enters each sample through broadcasting along dimension 0.

    Such a parameter (class token, position embedding) can be replaced by one copy per sample, P + e_i, and
    ∂f(x_i)/∂P = ∂f(x_i)/∂e_i. Checked on two samples: with e = 0 the outputs are bitwise those of the model,
    and changing e_2 leaves the outputs of sample 1 bitwise unchanged while the copy is used for sample 2 only.
    """
    P = sf.theta[name]
    if P.dim() < 2 or P.shape[0] != 1 or not P.is_floating_point():
        return False
    xb = sf.x[:2] if sf.n >= 2 else sf.x[:1].repeat(2, *([1] * (sf.x.dim() - 1)))
    e = torch.zeros((2,) + tuple(P.shape[1:]), dtype=P.dtype, device=P.device)
    try:
        base = sf.call(sf.theta, xb)
        same = sf.call({**sf.theta, name: P + e}, xb)
        e[1] = 1.0 + P[0].abs()
        moved = sf.call({**sf.theta, name: P + e}, xb)
    except Exception:  # the module does not accept one copy per sample: not this pattern
        return False
    return bool(torch.equal(same, base) and torch.equal(moved[0], base[0]))


def _refusal(m: nn.Module, rule, calls: int, shapes, nb: int, uses: list[int]) -> str:
    """Why module ``m``, of a type that has ``rule``, cannot use it in this network ("" when it can)."""
    if any(u > 1 for u in uses):
        return "a parameter shared with another module"
    if calls != 1:
        return f"called {calls} times per forward pass (a rule needs exactly one call)"
    if shapes is None:
        return "no tensor input/output observed"
    (in_shape, out_shape) = shapes
    if not in_shape or in_shape[0] != nb or out_shape[0] != nb:
        return "its batch dimension is not the sample dimension"
    return rule.refusal(m, in_shape, out_shape)
