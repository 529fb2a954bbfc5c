"""The on-model structure assumption: f_X(θ) = J_S(θ) θ_S for a parameter group S.

Equivalently (Euler), f is positively homogeneous of degree 1 in θ_S with the other parameters held fixed,
so f_X ∈ Col J. :func:`check_on_model_structure` tests both forms numerically, in float64 by default:

* Euler residual     ‖f_X − J_S θ_S‖ / ‖f_X‖, from one Jacobian-vector product J·(θ_S, 0);
* scaling residual   max_c ‖f_X(c θ_S) − c f_X(θ_S)‖ / ‖c f_X(θ_S)‖ over the positive scales c.

(When f_X = 0 both are absolute.) The assumption holds when both are ≤ ``rtol`` (default 1e-8 in float64,
1e-4 in lower precision).

Where it holds: any network whose read-out is affine in its own parameters (S = the last layer's weight and
bias), with BatchNorm and skip connections inside; bias-free ReLU networks (S = any one layer). A
normalisation *with* affine parameters after the last linear layer (``LayerNorm(elementwise_affine=True)``,
``BatchNorm1d(affine=True)``) also satisfies it, with S = that layer's (γ, β): f = γ ⊙ n(·) + β is linear in
them. Where it fails: a nonlinear output map (sigmoid/tanh head), a normalisation *without* affine parameters
after the last linear layer (``LayerNorm(elementwise_affine=False)``; ``BatchNorm1d(affine=False)``, which is
scale-invariant with batch statistics and affine-but-not-homogeneous with running statistics), parameters
entering non-homogeneously (θ², exp θ), or a read-out that does not train.

BatchNorm in training mode needs ``bn_mode`` as everywhere in the toolkit; the check never touches the
model's running buffers.

>>> import torch, torch.nn as nn
>>> _ = torch.manual_seed(0)
>>> net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
>>> rep = check_on_model_structure(net, torch.randn(5, 3))
>>> rep.holds, rep.subset
(True, ['2.weight', '2.bias'])
>>> check_on_model_structure(nn.Sequential(net, nn.Sigmoid()), torch.randn(5, 3)).holds
False
"""

from __future__ import annotations

import logging
import math
import re
import time
from typing import Iterable, Optional, Sequence, Union

import torch
from torch import nn

from dynamics.conditions.column_space import check_positive_tolerance
from dynamics.conditions.guard import guarded
from dynamics.conditions.reports import Candidate, OnModelReport
from dynamics.engine.jacobian import JacobianOperator
from dynamics.engine.parameters import group_by_module, select_parameters
from dynamics.engine.precision import exact_matmul
from dynamics.errors import InputError, ParameterSelectionError

__all__ = ["check_on_model_structure", "default_on_model_rtol", "CAUSES"]

log = logging.getLogger(__name__)

CAUSES = ("typical causes: a nonlinearity after the last linear layer (sigmoid/tanh head), a normalisation "
          "without affine parameters after it, parameters entering non-homogeneously (θ², exp θ), or a "
          "read-out with requires_grad=False")

SubsetSpec = Union[str, "re.Pattern[str]", Sequence[str], nn.Module]


def default_on_model_rtol(dtype: torch.dtype) -> float:
    """1e-8 for float64, 1e-4 for lower precision."""
    return 1e-8 if dtype == torch.float64 else 1e-4


@guarded
def check_on_model_structure(model: nn.Module, x, subset: SubsetSpec = "auto", bn_mode: Optional[str] = None,
                             rtol: Optional[float] = None, dtype: torch.dtype = torch.float64,
                             scales: Iterable[float] = (0.5, 2.0, 3.0)) -> OnModelReport:
    """Check f_X(θ) = J_S(θ) θ_S (Euler identity) and f_X(cθ_S) = c f_X(θ_S) (scaling) at the model's θ on x.

    Args:
        model: the network; never modified (a private copy is evaluated).
        x: inputs (n, ...), samples along dimension 0.
        subset: ``"auto"`` to search S among parameter groups (below); or S itself as a list of names, a
            regex (``re.fullmatch`` on names), a module or list of modules (see :mod:`dynamics.engine.parameters`).
        bn_mode: ``"eval" | "batch" | "frozen"``; required when a BatchNorm layer is in training mode.
        rtol: tolerance for both residuals; default 1e-8 in float64, 1e-4 otherwise.
        dtype: compute dtype (float64 by default: a true/false decision).
        scales: positive factors c for the scaling test.

    ``subset="auto"`` considers parameters with ``requires_grad=True`` only (the columns of J). Candidates, in
    the order tried: for each module owning parameters, in reverse ``named_parameters()`` order (read-out
    first), the module's full parameter set (e.g. ``{fc.weight, fc.bias}``), then each of its tensors alone
    (last first). The first candidate that holds is S; every candidate tried is in ``report.candidates``.
    When none holds, ``report.subset`` is the closest candidate and ``report.explanation`` says why.

    Returns:
        :class:`~dynamics.conditions.reports.OnModelReport`.

    Raises:
        InputError: empty subset, ``subset=None``, a non-positive rtol or scale (ParameterSelectionError for
            unknown names; BatchNormModeError for BatchNorm in training mode without ``bn_mode``).
    """
    start = time.perf_counter()
    rtol = check_positive_tolerance(rtol, "rtol")
    rtol = default_on_model_rtol(dtype) if rtol is None else rtol
    scales = _check_scales(scales)
    auto = isinstance(subset, str) and subset == "auto"
    if auto:
        candidates = _auto_candidates(model)
        names = sorted({n for _, group in candidates for n in group}, key=_order(model))
    else:
        if subset is None:
            raise InputError("subset=None is ambiguous: pass subset='auto' to search for S, or the names of S")
        if isinstance(subset, (list, tuple)) and len(subset) == 0:
            raise InputError("subset is empty: pass the parameter names of S (e.g. ['fc.weight', 'fc.bias']) "
                             "or subset='auto'")
        names = [n for n, _ in select_parameters(model, subset)]
        candidates = [(f"given subset ({len(names)} tensors)", names)]
    op = JacobianOperator(model, x, params=names, bn_mode=bn_mode, dtype=dtype)
    sf = op.stacked
    f_norm = float(op.outputs.norm())
    per_scale: dict[int, dict[float, float]] = {}   # candidate index -> {c: scaling residual}
    invariance: dict[int, float] = {}                # candidate index -> max_c ‖f(cθ_S) − f(θ_S)‖ / ‖f‖
    with exact_matmul():
        tried = _try_candidates(op, candidates, scales, rtol, per_scale, invariance)
    best = next((i for i, c in enumerate(tried) if c.holds), None)
    if best is None:
        best = min(range(len(tried)), key=lambda i: (tried[i].worst, i))
    chosen = tried[best]
    explanation = _explain(chosen, auto, rtol, f_norm, invariance[best])
    return OnModelReport(
        holds=chosen.holds, subset=list(chosen.names), euler_residual=chosen.euler_residual,
        scaling_residual=chosen.scaling_residual, scaling_residuals=per_scale[best], rtol=rtol,
        mode="auto" if auto else "given", candidates=tried, explanation=explanation, n=sf.n, k=sf.k,
        dtype=str(sf.dtype).replace("torch.", ""), bn_mode=sf.bn_mode, time_s=time.perf_counter() - start,
        p=sum(p.numel() for _, p in model.named_parameters() if p.requires_grad))


# ---------------------------------------------------------------------- helpers
def _try_candidates(op: JacobianOperator, candidates: list[tuple[str, list[str]]], scales: tuple[float, ...],
                    rtol: float, per_scale: dict, invariance: dict) -> list[Candidate]:
    """Residuals of each candidate group in order, stopping at the first that holds."""
    sf = op.stacked
    f = op.outputs.reshape(-1)
    f_norm = float(f.norm())
    tried: list[Candidate] = []
    for label, group in candidates:
        direction = sf.flatten({n: (t if n in group else torch.zeros_like(t)) for n, t in sf.theta.items()})
        euler = _relative(f - op @ direction, f_norm)
        scaled = {}
        inv = 0.0
        for c in scales:
            theta_c = {n: (c * t if n in group else t) for n, t in sf.theta.items()}
            with torch.no_grad():
                f_c = sf.evaluate(theta_c)
            scaled[c] = _relative(f_c - c * f, abs(c) * f_norm)
            inv = max(inv, _relative(f_c - f, f_norm))
        cand = Candidate(label=label, names=list(group), euler_residual=euler,
                         scaling_residual=max(scaled.values()),
                         holds=euler <= rtol and max(scaled.values()) <= rtol)
        invariance[len(tried)] = inv
        per_scale[len(tried)] = scaled
        tried.append(cand)
        log.debug("on-model candidate %s: euler %.3g, scaling %.3g", label, euler, cand.scaling_residual)
        if cand.holds:
            break
    return tried


def _relative(diff: torch.Tensor, denom: float) -> float:
    num = float(diff.norm())
    if not math.isfinite(num):
        return math.inf
    return num if denom == 0.0 else num / denom


def _check_scales(scales) -> tuple[float, ...]:
    try:
        values = tuple(float(c) for c in scales)
    except (TypeError, ValueError):
        raise InputError(f"scales must be an iterable of positive numbers, got {scales!r}") from None
    if not values:
        raise InputError("scales is empty: pass positive factors c for the test f(cθ_S) = c f(θ_S), e.g. (0.5, 2.0)")
    bad = [c for c in values if not math.isfinite(c) or c <= 0]
    if bad:
        raise InputError(f"scales must be finite and positive (positive homogeneity), got {bad}")
    return values


def _order(model: nn.Module):
    position = {n: i for i, (n, _) in enumerate(model.named_parameters())}
    return lambda name: position[name]


def _auto_candidates(model: nn.Module) -> list[tuple[str, list[str]]]:
    """Module groups then single tensors, read-out first (reverse ``named_parameters()`` order)."""
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ParameterSelectionError("no parameter of the model has requires_grad=True, so no subset S can be "
                                      "searched; pass subset=[names] to test a given S")
    groups = group_by_module(trainable)
    owners = sorted(groups, key=lambda o: trainable.index(groups[o][-1]), reverse=True)
    out: list[tuple[str, list[str]]] = []
    for owner in owners:
        group = groups[owner]
        where = f"module '{owner}'" if owner else "top-level parameters"
        if len(group) > 1:
            out.append((where, group))
        for name in reversed(group):
            out.append((f"tensor '{name}'", [name]))
    return out


def _explain(c: Candidate, auto: bool, rtol: float, f_norm: float, invariance: float) -> str:
    if c.holds:
        return (f"f_X = J_S θ_S to {c.euler_residual:.1e} and f(cθ_S) = c f(θ_S) to {c.scaling_residual:.1e} "
                f"(rtol {rtol:.0e}) with S = {c.label}: f is positively homogeneous of degree 1 in S, so f_X lies "
                f"in the column space of J.")
    head = ("no parameter group enters f homogeneously of degree 1: the closest candidate "
            if auto else "f is not positively homogeneous of degree 1 in the given subset: ")
    text = (f"{head}{c.label} has Euler residual {c.euler_residual:.3g} and scaling residual "
            f"{c.scaling_residual:.3g} (rtol {rtol:.0e}).")
    if f_norm == 0.0:
        text += " (f_X = 0 at these parameters, so the residuals are absolute.)"
    if f_norm > 0 and invariance <= min(1e-2, 0.1 * c.scaling_residual):
        text += (f" f is (nearly) invariant to scaling {c.label} (degree 0, change {invariance:.1e}), as after a "
                 f"normalisation without affine parameters.")
    return f"{text} {CAUSES[0].upper()}{CAUSES[1:]}."
