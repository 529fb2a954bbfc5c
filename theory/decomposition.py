"""Statements 1 and 2 of THEORY.md: the loss decomposition and the gradient bound, at any θ.

Derived from the definitions in Kawaguchi et al. (2022). Under the on-model structure f_X = J_S θ_S ∈ Col J,
so f_X − Y splits into P(f_X − Y) ∈ Col J and −(I − P)Y ⊥ Col J, and for every θ

    L(θ) = ½‖P(f_X − Y)‖² + ½‖(I − P)Y‖²                                             (statement 1)
    ½‖(I − P)Y‖² ≤ L(θ) ≤ ½‖(I − P)Y‖² + ‖∇L(θ)‖² / (2σ₊²)                           (statement 2)

with σ₊ the smallest non-zero singular value of J (the upper side because ∇L = JᵀP(f_X − Y) and
‖Jᵀu‖ ≥ σ₊‖u‖ on Col J). The terms are measured by :func:`dynamics.conditions.decomposition.loss_decomposition_terms`
(nothing assumed); differences are compared relative to ``scale = max(L, ½‖P(f−Y)‖² + ½‖(I−P)Y‖²)``.

>>> import torch
>>> from dynamics.models import MLP
>>> _ = torch.manual_seed(0)
>>> net, x, y = MLP(3, 2, depth=1, width=3, activation="tanh"), torch.randn(10, 3), torch.randn(10, 2)
>>> check_loss_decomposition(net, x, y).holds, check_gradient_bound(net, x, y).holds
(True, True)
"""

from __future__ import annotations

from typing import Optional

from torch import nn

from dynamics.engine.parameters import ParamSpec
from dynamics.errors import InputError
from dynamics.conditions.decomposition import LossDecomposition, loss_decomposition_terms
from theory.report import StatementReport

__all__ = ["check_loss_decomposition", "check_gradient_bound", "decomposition_quantities", "bound_quantities",
           "decomposition_holds", "gradient_bound_holds", "DEFAULT_RTOL", "GRADIENT_RTOL"]

DEFAULT_RTOL = 1e-8
# ‖Jᵀ(f−Y) − ∇L_autograd‖ / (‖J‖_F‖f−Y‖): both are float64 sums of ≤ nk products, so rounding gives ≲ nk·eps
# (≈ 2e-13 at nk = 1000); 1e-10 leaves 500× headroom and still catches any wrong gradient (a sign error gives
# ~‖∇L‖/(‖J‖‖f−Y‖), ≥ 1e-3 away from critical points).
GRADIENT_RTOL = 1e-10


def _check_rtol(rtol: float) -> float:
    if not isinstance(rtol, (int, float)) or not rtol >= 0:
        raise InputError(f"rtol must be a non-negative number, got {rtol!r}")
    return float(rtol)


def decomposition_quantities(t: LossDecomposition) -> dict:
    """Both sides of statement 1 from the measured terms: L, ½‖P(f−Y)‖², ½‖(I−P)Y‖², the relative gap."""
    scale = _scale(t)
    return {"p": t.p, "nk": t.nk, "rank": t.rank, "L": t.loss, "proj_term": t.fit_term,
            "dist_term": t.misalignment_term, "rel_gap": abs(t.gap) / scale, "f_off_colJ": t.output_residual}


def _scale(t: LossDecomposition) -> float:
    """max(L, ½‖P(f−Y)‖² + ½‖(I−P)Y‖²): what the gap and the slacks are relative to."""
    return max(t.loss, t.fit_term + t.misalignment_term, 1e-300)


def decomposition_holds(loss: float, proj_term: float, dist_term: float, scale: float, rtol: float) -> bool:
    """|L − ½‖P(f−Y)‖² − ½‖(I−P)Y‖²| ≤ rtol·scale.

    >>> decomposition_holds(1.0, 0.25, 0.75, 1.0, 1e-8), decomposition_holds(1.0, 0.25, 0.7, 1.0, 1e-8)
    (True, False)
    """
    return abs(loss - proj_term - dist_term) <= rtol * scale


def bound_quantities(t: LossDecomposition) -> dict:
    """The three numbers of statement 2 (lower, L, upper) with ‖∇L‖, σ₊ and the slacks relative to the scale."""
    scale = _scale(t)
    upper = t.upper_bound
    if t.sigma_min is None and t.gradient_norm == 0:  # J = 0: L = ½‖Y‖² = lower, nothing to bound
        upper = t.misalignment_term
    return {"p": t.p, "nk": t.nk, "rank": t.rank, "lower": t.misalignment_term, "L": t.loss, "upper": upper,
            "grad_norm": t.gradient_norm, "sigma_plus": t.sigma_min if t.sigma_min is not None else 0.0,
            "slack_lower": (t.loss - t.misalignment_term) / scale, "slack_upper": (upper - t.loss) / scale,
            "grad_mismatch": t.gradient_mismatch}


def gradient_bound_holds(loss: float, lower: float, upper: float, scale: float, rtol: float) -> bool:
    """lower − rtol·scale ≤ L ≤ upper + rtol·scale.

    >>> gradient_bound_holds(1.0, 0.5, 2.0, 1.0, 1e-8), gradient_bound_holds(0.4, 0.5, 2.0, 1.0, 1e-8)
    (True, False)
    """
    return lower - rtol * scale <= loss <= upper + rtol * scale


def check_loss_decomposition(model: nn.Module, x, y, params: ParamSpec = None, bn_mode: Optional[str] = None,
                             rtol: float = DEFAULT_RTOL, rank_rtol: Optional[float] = None,
                             setting: str = "", expected: bool = True) -> StatementReport:
    """Statement 1 at the model's current θ: L = ½‖P(f_X − Y)‖² + ½‖(I − P)Y‖², gap ≤ ``rtol``·max(L, both terms).

    Args:
        model, x, y, params, bn_mode, rank_rtol: as for
            :func:`dynamics.conditions.decomposition.loss_decomposition_terms`.
        rtol: tolerance on the relative gap.
        setting: words for the report; expected: False for a control that violates the assumption.

    Returns a :class:`~theory.report.StatementReport` with L, both terms, the relative gap and
    ``f_off_colJ`` = ‖(I − P)f_X‖/‖f_X‖ (zero under the on-model structure; the decomposition needs it).
    """
    rtol = _check_rtol(rtol)
    t = loss_decomposition_terms(model, x, y, params, bn_mode, rank_rtol=rank_rtol)
    q = decomposition_quantities(t)
    holds = q["rel_gap"] <= rtol
    return StatementReport("1", "loss decomposition", setting or _describe(model, x), q, {"rtol": rtol}, holds,
                           expected, notes="L vs ½‖P(f−Y)‖² + ½‖(I−P)Y‖², gap relative to max(L, sum of terms)"
                           + ("; TRIVIAL: rank J = nk, so P = I and the identity holds for any f" if t.trivial else ""),
                           trivial=t.trivial)


def check_gradient_bound(model: nn.Module, x, y, params: ParamSpec = None, bn_mode: Optional[str] = None,
                         rtol: float = DEFAULT_RTOL, rank_rtol: Optional[float] = None,
                         setting: str = "", expected: bool = True) -> StatementReport:
    """Statement 2 at the model's current θ: ½‖(I−P)Y‖² ≤ L ≤ ½‖(I−P)Y‖² + ‖∇L‖²/(2σ₊²), within ``rtol``·scale.

    Arguments as for :func:`check_loss_decomposition`. σ₊ is ColumnSpace's smallest singular value above its
    numerical-rank tolerance.
    """
    rtol = _check_rtol(rtol)
    t = loss_decomposition_terms(model, x, y, params, bn_mode, rank_rtol=rank_rtol)
    q = bound_quantities(t)
    holds = (gradient_bound_holds(q["L"], q["lower"], q["upper"], _scale(t), rtol)
             and q["grad_mismatch"] <= GRADIENT_RTOL)
    return StatementReport("2", "gradient bound", setting or _describe(model, x), q,
                           {"rtol": rtol, "grad_rtol": GRADIENT_RTOL}, holds, expected,
                           notes="½‖(I−P)Y‖² ≤ L ≤ ½‖(I−P)Y‖² + ‖∇L‖²/(2σ₊²), with ∇L = Jᵀ(f−Y) checked against "
                                 "autograd" + ("; TRIVIAL: rank J = nk, the lower side is 0" if t.trivial else ""),
                           trivial=t.trivial)


def _describe(model: nn.Module, x) -> str:
    p = sum(q.numel() for q in model.parameters() if q.requires_grad)
    return f"{type(model).__name__}, n={len(x)}, p={p}"
