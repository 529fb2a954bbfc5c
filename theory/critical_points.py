"""Statements 3 and 4 of THEORY.md: what critical points and zero-loss points look like under the assumption.

Derived from the definitions in Kawaguchi et al. (2022), square loss:

* Sufficiency (3). At a critical point θ̄, Jᵀ(f_X − Y) = 0, so f_X − Y ⊥ Col J; with f_X ∈ Col J this gives
  f_X = PY and L(θ̄) = ½‖(I − P)Y‖² = ½ dist(Y, Col J(θ̄))². If alignment holds there (r = 0), L(θ̄) = 0.
* Necessity (4). If f_X(θ) = Y then Y = f_X = J_S θ_S ∈ Col J(θ): every global minimum with zero loss is aligned.

Numerically θ̄ is only approximately critical: the check measures ‖∇L‖/(σ_max‖Y‖) and reports the slack
‖∇L‖²/(2σ₊²) that statement 2 allows between L and ½ dist².

>>> import torch
>>> from dynamics.models import MLP
>>> from theory.descent import minimise
>>> _ = torch.manual_seed(0)
>>> x, y = torch.randn(8, 2), torch.randn(8, 1)
>>> fit = minimise(MLP(2, 1, depth=1, width=16, activation="tanh"), x, y)
>>> check_sufficiency(fit.model, x, y).holds, check_necessity(fit.model, x, y).holds
(True, True)
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from dynamics.engine.jacobian import jacobian
from dynamics.engine.parameters import ParamSpec
from dynamics.errors import InputError
from theory.geometry import loss_geometry
from theory.report import StatementReport

__all__ = ["check_sufficiency", "check_necessity", "readout_subset"]


def _tol(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InputError(f"{what} must be a positive number, got {value!r}")
    return float(value)


def readout_subset(model: nn.Module) -> Optional[list[str]]:
    """The parameter names of ``model.readout`` (the set S of the on-model structure for the project's models).

    >>> from dynamics.models import MLP
    >>> readout_subset(MLP(3, 2, depth=1, width=4))
    ['readout.weight', 'readout.bias']
    """
    readout = getattr(model, "readout", None)
    if not isinstance(readout, nn.Module):
        return None
    ids = {id(p) for p in readout.parameters()}
    return [name for name, p in model.named_parameters() if id(p) in ids and p.requires_grad] or None


def check_sufficiency(model: nn.Module, x, y, params: ParamSpec = None, bn_mode: Optional[str] = None,
                      grad_tol: float = 1e-6, rtol: float = 1e-6, rank_rtol: Optional[float] = None,
                      setting: str = "", expected: bool = True) -> StatementReport:
    """Statement 3 at a (numerical) critical point: L(θ̄) = ½ dist(Y, Col J(θ̄))².

    Args:
        model: the model at θ̄ (e.g. :func:`theory.descent.minimise`'s result).
        x, y, params, bn_mode, rank_rtol: as for :func:`theory.geometry.loss_geometry`.
        grad_tol: θ̄ counts as critical when ‖∇L‖ / (σ_max(J)‖Y‖) ≤ grad_tol.
        rtol: |L − ½ dist²| ≤ rtol·½‖Y‖².

    Holds when θ̄ is critical and the two sides agree. The report also says whether θ̄ is aligned (r ≤ rtol)
    and then a global minimum (L ≤ rtol·½‖Y‖²).
    """
    grad_tol, rtol = _tol(grad_tol, "grad_tol"), _tol(rtol, "rtol")
    g = loss_geometry(model, x, y, params, bn_mode, rank_rtol)
    scale = max(g.y_norm2_half, 1e-300)
    loss, half_dist2 = g.loss, g.dist2_half
    sigma = g.space.sigma_min or 0.0
    slack = g.grad_norm ** 2 / (2 * sigma ** 2) / scale if sigma > 0 else 0.0
    critical = g.relative_grad_norm <= grad_tol
    q = {"L": loss, "half_dist2": half_dist2, "rel_gap": abs(loss - half_dist2) / scale,
         "r": g.alignment_residual, "rel_grad": g.relative_grad_norm, "bound_slack": slack,
         "rank": g.space.rank, "nk": g.n * g.k, "critical": critical}
    holds = critical and q["rel_gap"] <= rtol
    note = "L(θ̄) vs ½dist(Y, Col J)², gap relative to ½‖Y‖²"
    if not critical:
        note = f"not a critical point (‖∇L‖/(σ_max‖Y‖) = {g.relative_grad_norm:.3g} > {grad_tol:g}); " + note
    return StatementReport("3", "sufficiency", setting or f"{type(model).__name__}, n={g.n}, k={g.k}, p={g.p}", q,
                           {"grad_tol": grad_tol, "rtol": rtol}, holds, expected, notes=note)


def check_necessity(model: nn.Module, x, y, params: ParamSpec = None, bn_mode: Optional[str] = None,
                    fit_tol: float = 1e-6, rtol: float = 1e-5, subset: ParamSpec = "readout",
                    rank_rtol: Optional[float] = None, setting: str = "", expected: bool = True) -> StatementReport:
    """Statement 4 at a zero-loss point: f_X(θ) = Y implies r(θ) = 0 (and Y = J_S θ_S).

    Args:
        fit_tol: θ counts as a zero-loss point when ‖f_X − Y‖/‖Y‖ ≤ fit_tol.
        rtol: the verdict: r(θ) ≤ rtol (choose rtol ≥ fit_tol: r ≤ ‖(I−P)f_X‖/‖Y‖ + ‖f_X − Y‖/‖Y‖).
        subset: the set S (parameter names, regex or modules) for the reported ‖Y − J_S θ_S‖/‖Y‖;
            ``"readout"`` (default) uses ``model.readout`` when the model has one; None skips it.
        Other arguments as for :func:`check_sufficiency`.

    Holds when θ fits Y and r ≤ rtol; a θ that does not fit is reported as not applicable (holds False).
    """
    fit_tol, rtol = _tol(fit_tol, "fit_tol"), _tol(rtol, "rtol")
    g = loss_geometry(model, x, y, params, bn_mode, rank_rtol)
    y_norm = float(torch.linalg.vector_norm(g.y))
    if y_norm == 0:
        raise InputError("targets are all zero; necessity is about fitting non-zero targets")
    fit = float(torch.linalg.vector_norm(g.residual_vector)) / y_norm
    q = {"fit_residual": fit, "r": g.alignment_residual, "f_off_colJ": g.on_model_residual,
         "rank": g.space.rank, "nk": g.n * g.k}
    names = readout_subset(model) if subset == "readout" else subset
    if names is not None:
        js = jacobian(model, x, params=names, bn_mode=bn_mode, dtype=torch.float64)
        theta_s = torch.cat([p.detach().to(torch.float64).reshape(-1) for n_, p in model.named_parameters()
                             if n_ in set(_names(model, names))])
        q["Y_minus_JS_thetaS"] = float(torch.linalg.vector_norm(g.y - js @ theta_s)) / y_norm
    fits = fit <= fit_tol
    holds = fits and q["r"] <= rtol
    note = "zero-loss point ⇒ Y ∈ Col J" if fits else \
        f"not a zero-loss point (‖f−Y‖/‖Y‖ = {fit:.3g} > {fit_tol:g}): statement not applicable"
    return StatementReport("4", "necessity", setting or f"{type(model).__name__}, n={g.n}, k={g.k}, p={g.p}", q,
                           {"fit_tol": fit_tol, "rtol": rtol}, holds, expected, notes=note)


def _names(model: nn.Module, spec: ParamSpec) -> list[str]:
    from dynamics.engine.parameters import select_parameters

    return [name for name, _ in select_parameters(model, spec)]
