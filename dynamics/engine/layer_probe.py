"""What the NTK algorithms need to know about a network: its layers, their shapes and costs, and which rule fits.

One forward pass with hooks over one sample (the whole batch in ``bn_mode="batch"``) records, for every module
that owns selected parameters, the per-sample input and output shapes and how often it ran. From that:

* ``Linear`` (exactly ``nn.Linear``, called once per forward, batch along dim 0) gets a Gram rule;
* ``Conv2d`` (exactly ``nn.Conv2d``, ``groups=1``, zero padding given as numbers, called once) gets a
  patch rule;
* BatchNorm (1d/2d/3d, affine, called once) gets the affine rule: γ and β enter linearly after normalisation;
* everything else -- custom layers, LayerNorm, parameters shared between modules or modules called several
  times -- is left to the autograd fallback, with the reason recorded.

It also counts the multiply-adds of a forward pass per sample (Linear and convolution layers, plus one
operation per activation element), the ``F`` of the cost model in :mod:`dynamics.engine.ntk_plan`.

>>> import torch, torch.nn as nn
>>> from dynamics.engine.stacked import StackedFunction
>>> net = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
>>> s = probe_structure(StackedFunction(net, torch.randn(5, 3)))
>>> [(l.module, l.kind) for l in s.layers], s.fallback
([('0', 'linear'), ('2', 'linear')], {'1': 'LayerNorm has no structured rule'})
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from dynamics.engine.parameters import group_by_module
from dynamics.engine.stacked import StackedFunction

__all__ = ["LayerInfo", "Structure", "probe_structure"]


@dataclass
class LayerInfo:
    """A layer with a structured rule. Shapes are per sample (no batch dimension)."""

    module: str
    kind: str  # "linear" | "conv2d" | "batchnorm"
    weight: Optional[str]  # selected parameter names (None when not selected)
    bias: Optional[str]
    in_shape: tuple
    out_shape: tuple
    # linear: d_in, d_out, t (positions sharing the weight); conv2d: P = C_in*kh*kw, C_out, L = H_out*W_out
    d_in: int = 0
    d_out: int = 0
    positions: int = 1
    conv: dict = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [n for n in (self.weight, self.bias) if n is not None]

    @property
    def in_numel(self) -> int:
        return math.prod(self.in_shape)

    @property
    def out_numel(self) -> int:
        return math.prod(self.out_shape)


@dataclass
class Structure:
    """Layers with rules, the fallback groups (module -> reason), and per-sample forward cost / activations."""

    layers: list[LayerInfo]
    fallback: dict[str, str]
    fallback_names: list[str]
    flops_per_sample: float
    act_per_sample: float
    groups: dict[str, list[str]]  # module name -> selected parameter names, in column order


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
        m = modules[mname]
        reason = _rule_refusal(m, calls[mname], shapes.get(mname), nb, [uses[id(m._parameters[p])] for p, _ in owned])
        if reason:
            fallback[mname] = reason
            continue
        full = dict(owned)
        in_shape, out_shape = shapes[mname]
        kind = "linear" if type(m) is nn.Linear else "conv2d" if type(m) is nn.Conv2d else "batchnorm"
        info = LayerInfo(mname, kind, full.get("weight"), full.get("bias"), in_shape[1:], out_shape[1:])
        if kind == "batchnorm":  # channels C = d_out, positions per channel
            info.d_in = info.d_out = m.num_features
            info.positions = math.prod(out_shape[2:])
        elif kind == "linear":
            info.d_in, info.d_out = m.in_features, m.out_features
            info.positions = math.prod(in_shape[1:-1])
        else:
            info.conv = dict(P=m.in_channels * math.prod(m.kernel_size), C_out=m.out_channels,
                             L=math.prod(out_shape[2:]), kernel_size=m.kernel_size, dilation=m.dilation,
                             padding=m.padding, stride=m.stride)
        layers.append(info)
    groups = group_by_module(sf.names)
    in_fallback = {n for mname in fallback for n in groups[mname]}
    fallback_names = [n for n in sf.names if n in in_fallback]
    flops = 2 * cost[0] + cost[1]
    return Structure(layers, fallback, fallback_names, max(flops, 1.0), max(sf.activation_numel / sf.n, 1.0), groups)


def _rule_refusal(m: nn.Module, calls: int, shapes, nb: int, uses: list[int]) -> str:
    """Why module ``m`` cannot use a structured rule ("" when it can)."""
    name = type(m).__name__
    is_bn = isinstance(m, nn.modules.batchnorm._BatchNorm) and type(m) is not nn.SyncBatchNorm
    if type(m) not in (nn.Linear, nn.Conv2d) and not is_bn:
        return f"{name} has no structured rule"
    if any(u > 1 for u in uses):
        return "a parameter shared with another module"
    if calls != 1:
        return f"called {calls} times per forward pass (a rule needs exactly one call)"
    if shapes is None:
        return "no tensor input/output observed"
    (in_shape, out_shape) = shapes
    if not in_shape or in_shape[0] != nb or out_shape[0] != nb:
        return "its batch dimension is not the sample dimension"
    if type(m) is nn.Conv2d:
        if m.groups != 1:
            return "grouped convolution"
        if m.padding_mode != "zeros" or isinstance(m.padding, str):
            return "padding other than explicit zero padding"
        if len(in_shape) != 4:
            return "unbatched or non-4D input"
    return ""
