"""The empirical neural tangent kernel K = J(x1) J(x2)ᵀ, by one of several exact algorithms.

``K[i, j]`` is the k x k block ``J_i J_jᵀ`` where ``J_i = ∂f(x1_i)/∂θ_S`` (k x p) are the rows of
:func:`dynamics.jacobian` for sample i: ``K[i, j, a, b] = Σ_q ∂f_a(x1_i)/∂θ_q · ∂f_b(x2_j)/∂θ_q``. Reshaped as
``K.permute(0, 2, 1, 3).reshape(n1*k, n2*k)`` it is the sample-major Gram matrix ``J(x1) J(x2)ᵀ``.

BatchNorm (``bn_mode``, see :mod:`dynamics.engine.batchnorm`): with ``"batch"`` or ``"frozen"``, x1 and x2 are
each one batch with its own statistics, ``K = J(x1) J(x2)ᵀ`` with J(x1) the Jacobian of the batch function on x1
and J(x2) that on x2 (so ``ntk(m, x, x)`` equals ``ntk(m, x)``, but ``ntk(m, x1, x2)`` is not a sub-block of the
kernel of the concatenated batch). ``"eval"`` (and networks without BatchNorm) are per-sample functions.

Methods (all exact; they differ in speed and memory, see :mod:`dynamics.engine.ntk_plan` for the cost model):

``"jacobian"``  per parameter group (the selected parameters of one module), rows of J for tiles of x1 and x2,
                contracted and accumulated (:mod:`dynamics.engine.ntk_contraction`);
``"ntvp"``      NTK-vector products K·e_j = J(x1)(J(x2)ᵀ e_j) from VJPs and vmapped JVPs;
``"structured"`` per-layer kernels from the rules of :mod:`dynamics.engine.rules` (Linear as (XXᵀ)⊙(GGᵀ),
                Conv2d incl. grouped/depthwise by patches, BatchNorm and LayerNorm affine parameters from the
                normalised inputs), each on the exact layer type only; autograd for every other layer
                (:mod:`dynamics.engine.ntk_by_layer`);
``"auto"``      the feasible method with the fewest estimated operations (never ``"ntvp"`` when an operation of the
                network has no forward-mode derivative, see :mod:`dynamics.engine.forward_mode`).

Memory (:mod:`dynamics.engine.memory`): ``memory_budget`` is the total the call may allocate -- K, the private copy
of the model, and the intermediates of the tiles (x1 samples x x2 samples x outputs x parameter groups), sized by
the cost model. ``"jacobian"`` forms J once and contracts it when J fits, else works per parameter group; the
smallest tile is one sample, one output and one parameter group for ``"jacobian"``, one cotangent for
``"ntvp"``, one sample with all its outputs for ``"structured"``; below that, MemoryBudgetError. K is filled in
place in its final layout and accumulated in the compute dtype, with TF32 off.

Random networks (Dropout, stochastic depth in training mode) are refused, naming the layer
(:mod:`dynamics.engine.randomness`); attention runs through differentiable kernels inside the call
(:mod:`dynamics.engine.attention`).

>>> import torch, torch.nn as nn, dynamics
>>> _ = torch.manual_seed(0)
>>> net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 2))
>>> x = torch.randn(5, 3)
>>> K, info = ntk(net, x, dtype=torch.float64, return_info=True)
>>> K.shape                                     # (n1, n2, k, k)
torch.Size([5, 5, 2, 2])
>>> info.method, info.rules
('structured', {'0': 'linear-gram', '2': 'linear-gram'})
>>> J = dynamics.jacobian(net, x, dtype=torch.float64)
>>> bool(torch.allclose(K.permute(0, 2, 1, 3).reshape(10, 10), J @ J.T))
True
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Optional, Union

import torch
from torch import nn

from dynamics.engine.forward_mode import forward_mode_refusal
from dynamics.engine.ntk_contraction import ntk_jacobian, ntk_ntvp
from dynamics.engine.ntk_plan import METHODS, plan_method
from dynamics.engine.layer_probe import probe_structure
from dynamics.engine.memory import Budget, check_budget, format_bytes
from dynamics.engine.ntk_by_layer import ntk_structured
from dynamics.engine.parameters import ParamSpec
from dynamics.engine.precision import exact_matmul
from dynamics.engine.stacked import StackedFunction
from dynamics.errors import InputError, MemoryBudgetError, MethodError
from dynamics.inputs import as_batch, pair_dtype_notice

__all__ = ["ntk", "NTKInfo", "ntk_plans"]

log = logging.getLogger(__name__)


@dataclass
class NTKInfo:
    """How a kernel was computed.

    Attributes:
        method: the algorithm used; ``requested``: what was asked for (``"auto"`` or the method).
        rules: layer (module name) -> rule variant ("linear-gram", "linear-psg", "conv-psg", "conv-patch",
            "bn-affine", "layernorm-affine", "autograd", ...; the ``-batch``/``-rows`` variants in
            ``bn_mode="batch"``);
            for ``"jacobian"``/``"ntvp"`` the parameter groups processed.
        fallback: module -> why it has no structured rule.
        tile1, tile2: samples per tile of x1 and x2; out_chunk: outputs per block; n_param_chunks: parameter
            groups processed one after another; cached: x2 blocks computed once and kept.
        estimated_flops: the cost model's estimate per method (multiply-adds; ``inf`` when infeasible).
        estimated_peak_bytes: the cost model's peak for the method used: intermediates, K, the private copy of
            the model and converted inputs (what ``memory_budget`` bounds).
        wall_time_s: time of the whole call.
    """

    method: str
    requested: str
    n1: int
    n2: int
    k: int
    p: int
    dtype: str
    bn_mode: Optional[str]
    symmetric: bool
    rules: dict = field(default_factory=dict)
    fallback: dict = field(default_factory=dict)
    tile1: int = 0
    tile2: int = 0
    out_chunk: int = 0
    n_param_chunks: int = 0
    cached: bool = False
    estimated_flops: dict = field(default_factory=dict)
    estimated_peak_bytes: float = 0.0
    memory_budget: Optional[int] = None
    wall_time_s: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["estimated_flops"] = {m: (None if v == float("inf") else v) for m, v in self.estimated_flops.items()}
        return d

    def __str__(self) -> str:
        lines = [f"NTK {self.n1} x {self.n2} samples, k={self.k}, p={self.p}, {self.dtype}, bn_mode={self.bn_mode}"
                 f"{' (x2 = x1, symmetric)' if self.symmetric else ''}",
                 f"  method: {self.method} (requested {self.requested}); wall time {self.wall_time_s:.3f} s",
                 f"  tiles: {self.tile1} x1 samples x {self.tile2} x2 samples x {self.out_chunk} outputs, "
                 f"{self.n_param_chunks} parameter chunk(s){', x2 blocks cached' if self.cached else ''}",
                 f"  estimated peak memory: {format_bytes(self.estimated_peak_bytes)}"
                 + (f" (budget {format_bytes(self.memory_budget)})" if self.memory_budget else ""),
                 "  estimated multiply-adds: " + ", ".join(
                     f"{m} {v:.3g}" if v != float("inf") else f"{m} infeasible"
                     for m, v in self.estimated_flops.items())]
        if self.rules:
            lines.append("  rules: " + ", ".join(f"{layer or '<root>'}: {r}" for layer, r in self.rules.items()))
        reasons: dict = {}
        for layer, why in self.fallback.items():
            reasons.setdefault(why, []).append(layer or "<root>")
        for why, layers in reasons.items():
            lines.append(f"  autograd fallback for {', '.join(layers)}: {why}")
        return "\n".join(lines)


def _prepare(model, x1, x2, params, bn_mode, dtype):
    sf1 = StackedFunction(model, x1, params, bn_mode, dtype)
    if x2 is None:
        return sf1, sf1, True
    pair_dtype_notice(x1, x2, sf1.dtype)
    x2t = as_batch(x2, sf1.dtype, sf1.device, what="x2")
    if tuple(x2t.shape[1:]) != tuple(sf1.x.shape[1:]):
        raise InputError(f"x1 and x2 must have the same feature shape: x1 has shape {tuple(sf1.x.shape)} "
                         f"(features {tuple(sf1.x.shape[1:])}), x2 has shape {tuple(x2t.shape)} "
                         f"(features {tuple(x2t.shape[1:])})")
    return sf1, StackedFunction(model, x2t, params, bn_mode, dtype), False


def ntk_plans(sf1: StackedFunction, sf2: StackedFunction, sym: bool, budget: float):
    """(structure, {method: Plan}) for a prepared problem: the inputs of the ``"auto"`` choice."""
    st = probe_structure(sf1)
    return st, {m: plan_method(m, sf1, sf2, sym, st, budget) for m in METHODS}


def ntk(model: nn.Module, x1, x2=None, params: ParamSpec = None, bn_mode: Optional[str] = None,
        method: str = "auto", dtype: Optional[torch.dtype] = None, memory_budget: Optional[int] = None, *,
        return_info: bool = False) -> Union[torch.Tensor, tuple[torch.Tensor, NTKInfo]]:
    """The empirical NTK between x1 and x2, shape ``(n1, n2, k, k)``, ``K[i, j] = J(x1)_i J(x2)_jᵀ``.

    Args:
        model: any ``nn.Module`` mapping a batch to outputs ``(n, ...)`` (flattened to k per sample).
        x1: inputs ``(n1, ...)``; x2: inputs ``(n2, ...)`` with the same feature shape, or None for x2 = x1
            (then only blocks on and above the diagonal are computed and K is exactly symmetric).
        params: which parameters θ_S (see :mod:`dynamics.engine.parameters`).
        bn_mode: ``"eval" | "batch" | "frozen"``; required when a BatchNorm layer is in training mode.
        method: ``"auto" | "jacobian" | "ntvp" | "structured"`` (see the module docstring).
        dtype: compute and accumulation dtype (default: the model's); ``torch.float64`` for checks.
        memory_budget: total bytes the call may allocate, K included (see :mod:`dynamics.engine.memory`);
            default: K plus 1 GiB of intermediates.
        return_info: also return an :class:`NTKInfo`.

    Raises:
        MethodError: unknown method. InputError: x1/x2 feature shapes differ, bad inputs (as
        :func:`dynamics.jacobian`). MemoryBudgetError: K or the smallest tile does not fit ``memory_budget``.
    """
    start = time.perf_counter()
    if method != "auto" and method not in METHODS:
        raise MethodError(f"unknown NTK method {method!r}; valid methods are 'auto', "
                          + ", ".join(repr(m) for m in METHODS))
    check_budget(memory_budget)
    sf1, sf2, sym = _prepare(model, x1, x2, params, bn_mode, dtype)
    if sf2.k != sf1.k:  # pragma: no cover - same model, same feature shape
        raise InputError(f"the model gives {sf1.k} outputs per sample on x1 but {sf2.k} on x2")
    n1, n2, k = sf1.n, sf2.n, sf1.k
    k_bytes = n1 * n2 * k * k * sf1.itemsize
    mem = Budget(memory_budget, k_bytes, f"the kernel itself ({n1} x {n2} x {k} x {k})",
                 "compute it in blocks of samples (ntk(model, x1[a:b], x2[c:d])) or raise the budget",
                 fixed_bytes=sf1.private_bytes + (0 if sym else sf2.private_bytes))
    budget = mem.workspace
    st, plans = ntk_plans(sf1, sf2, sym, budget)
    if method == "auto":
        feasible = [p for p in plans.values() if p.feasible]
        if not feasible:
            raise _budget_error(plans.values(), mem)
        plan = min(feasible, key=lambda p: p.flops)
        if plan.method == "ntvp" and forward_mode_refusal(sf1):  # auto never picks a method that cannot run
            plans["ntvp"].feasible, plans["ntvp"].flops = False, float("inf")
            feasible.remove(plan)
            if not feasible:
                raise _budget_error([p for p in plans.values() if p.method != "ntvp"], mem)
            plan = min(feasible, key=lambda p: p.flops)
    else:
        plan = plans[method]
        if not plan.feasible:
            raise _budget_error([plan], mem)
        why = forward_mode_refusal(sf1) if method == "ntvp" else ""
        if why:
            raise MethodError(f"method='ntvp' needs forward-mode derivatives, but {why}; use method='jacobian', "
                              f"'structured' or 'auto' (reverse mode only)")
    K = torch.zeros(n1, n2, k, k, dtype=sf1.dtype, device=sf1.device)
    Kf = K.permute(0, 2, 1, 3)  # the algorithms fill K through this (n1, k, n2, k) view: no copy at the end
    with exact_matmul():
        if plan.method == "jacobian":
            ntk_jacobian(sf1, sf2, sym, plan, Kf)
        elif plan.method == "ntvp":
            ntk_ntvp(sf1, sf2, sym, plan, Kf)
        else:
            ntk_structured(sf1, sf2, sym, plan, st, Kf)
    if not return_info:
        return K
    info = NTKInfo(method=plan.method, requested=method, n1=n1, n2=n2, k=k, p=sf1.p, dtype=str(sf1.dtype),
                   bn_mode=sf1.bn_mode, symmetric=sym, rules=dict(plan.rules),
                   fallback=dict(st.fallback) if plan.method == "structured" else {},
                   tile1=plan.tile1, tile2=plan.tile2, out_chunk=plan.out_chunk,
                   n_param_chunks=len(plan.param_chunks), cached=plan.cache,
                   estimated_flops={m: p.flops for m, p in plans.items()},
                   estimated_peak_bytes=plan.peak_bytes + mem.held, memory_budget=memory_budget,
                   wall_time_s=time.perf_counter() - start)
    log.debug("ntk: %s", info)
    return K, info


def _budget_error(plans, mem: Budget) -> MemoryBudgetError:
    plans = list(plans)
    smallest = min(p.min_bytes for p in plans)
    names = "method(s) " + ", ".join(p.method for p in plans)
    what = _SMALLEST[plans[0].method] if len(plans) == 1 else "for the least demanding method"
    return mem.too_small(names, smallest, what)


_SMALLEST = {"jacobian": "one sample, one output, one parameter group", "ntvp": "one cotangent, one sample",
             "structured": "one sample with all its outputs"}
