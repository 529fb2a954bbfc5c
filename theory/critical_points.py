"""Statements 3 and 4 of THEORY.md: what critical points and zero-loss points look like under the assumption.

Derived from the definitions in Kawaguchi et al. (2022), square loss:

* Sufficiency (3). At a critical point θ̄, Jᵀ(f_X − Y) = 0, so f_X − Y ⊥ Col J; with f_X ∈ Col J this gives
  f_X = PY and L(θ̄) = ½‖(I − P)Y‖² = ½ dist(Y, Col J(θ̄))². If alignment holds there (r = 0), L(θ̄) = 0.
* Necessity (4). If f_X(θ) = Y then Y = f_X = J_S θ_S ∈ Col J(θ): every global minimum with zero loss is aligned.

Numerically θ̄ is only approximately critical: the check measures ‖∇L‖/(σ_max‖Y‖) and reports the slack
‖∇L‖²/(2σ₊²) that statement 2 allows between L and ½ dist². Both checks say when they are trivial
(rank J = nk: every Y is aligned and every critical point has zero loss).

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
from dynamics.engine.parameters import ParamSpec, select_parameters
from dynamics.errors import InputError
from dynamics.models.base import readout_of
from theory.geometry import loss_geometry
from theory.report import StatementReport

__all__ = ["check_sufficiency", "check_necessity", "readout_subset", "CLAIMS"]

CLAIMS = ("identity", "global_minimum")


def _tol(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InputError(f"{what} must be a positive number, got {value!r}")
    return float(value)


def readout_subset(model: nn.Module) -> list[str]:
    """The trainable parameter names of the model's read-out (:func:`dynamics.models.base.readout_of`): the set
    S of the on-model structure for networks with an affine read-out.

    >>> from dynamics.models import MLP
    >>> readout_subset(MLP(3, 2, depth=1, width=4))
    ['readout.weight', 'readout.bias']
    """
    ids = {id(p) for p in readout_of(model).parameters()}
    return [name for name, p in model.named_parameters() if id(p) in ids and p.requires_grad]


def check_sufficiency(model: nn.Module, x, y, params: ParamSpec = None, bn_mode: Optional[str] = None,
                      grad_tol: float = 1e-6, rtol: float = 1e-6, rank_rtol: Optional[float] = None,
                      claim: str = "identity", setting: str = "", expected: bool = True) -> StatementReport:
    """Statement 3 at a (numerical) critical point θ̄.

    Args:
        model: the model at θ̄ (e.g. :func:`theory.descent.minimise`'s result).
        x, y, params, bn_mode, rank_rtol: as for :func:`theory.geometry.loss_geometry`.
        grad_tol: θ̄ counts as critical when ‖∇L‖ / (σ_max(J)‖Y‖) ≤ grad_tol.
        rtol: |L − ½ dist²| ≤ rtol·½‖Y‖² (and, for the global-minimum claim, L ≤ rtol·½‖Y‖²).
        claim: ``"identity"``: L(θ̄) = ½ dist(Y, Col J(θ̄))² at every critical point (non-trivial when
            dist > 0); ``"global_minimum"``: the sufficiency conclusion, θ̄ critical ⇒ L(θ̄) = 0. It holds when
            θ̄ is aligned; at a critical point *without* alignment it must fail (the control).

    The row is ``trivial`` when rank J = nk (then P = I, dist = 0 and every critical point has L = 0).
    """
    grad_tol, rtol = _tol(grad_tol, "grad_tol"), _tol(rtol, "rtol")
    if claim not in CLAIMS:
        raise InputError(f"claim must be one of {CLAIMS}, got {claim!r}")
    g = loss_geometry(model, x, y, params, bn_mode, rank_rtol)
    scale = max(g.y_norm2_half, 1e-300)
    loss, half_dist2 = g.loss, g.dist2_half
    sigma = g.space.sigma_min or 0.0
    slack = g.grad_norm ** 2 / (2 * sigma ** 2) / scale if sigma > 0 else 0.0
    critical = g.relative_grad_norm <= grad_tol
    q = {"p": g.p, "nk": g.n * g.k, "rank": g.space.rank, "L": loss, "half_dist2": half_dist2,
         "rel_gap": abs(loss - half_dist2) / scale, "r": g.alignment_residual, "rel_grad": g.relative_grad_norm,
         "bound_slack": slack, "critical": critical}
    holds = critical and q["rel_gap"] <= rtol
    note = "L(θ̄) vs ½dist(Y, Col J)², gap relative to ½‖Y‖²"
    name = "sufficiency"
    if claim == "global_minimum":
        q["L_rel"] = loss / scale
        holds = holds and q["L_rel"] <= rtol
        name = "sufficiency (global minimum)"
        note = "critical ⇒ L = ½dist² = 0 when aligned; " + note
    if not critical:
        note = f"not a critical point (‖∇L‖/(σ_max‖Y‖) = {g.relative_grad_norm:.3g} > {grad_tol:g}); " + note
    trivial = g.space.full_row_rank
    if trivial:
        note += "; TRIVIAL: rank J = nk, every critical point has L = 0"
    return StatementReport("3", name, setting or f"{type(model).__name__}, n={g.n}, k={g.k}, p={g.p}", q,
                           {"grad_tol": grad_tol, "rtol": rtol}, holds, expected, notes=note, trivial=trivial)


def check_necessity(model: nn.Module, x, y, params: ParamSpec = None, bn_mode: Optional[str] = None,
                    fit_tol: float = 1e-4, subset: ParamSpec = "readout", rank_rtol: Optional[float] = None,
                    setting: str = "", expected: bool = True) -> StatementReport:
    """Statement 4 at a (numerically) zero-loss point: f_X(θ) = Y implies Y ∈ Col J(θ).

    Quantitatively, under the assumption f_X ∈ Col J: r = ‖(I−P)Y‖/‖Y‖ = ‖(I−P)(Y − f_X)‖/‖Y‖ ≤ ‖f_X − Y‖/‖Y‖.
    So the verdict's tolerance is not a constant but the measured fit itself, plus the column space's stated
    rounding error on a projection of f_X (``accuracy``·‖f_X‖/‖Y‖):

        holds  ⇔  fit ≤ fit_tol  and  r ≤ r_bound = fit + accuracy·‖f_X‖/‖Y‖ + 1e-15.

    Args:
        fit_tol: θ counts as a zero-loss point when fit = ‖f_X − Y‖/‖Y‖ ≤ fit_tol (otherwise the statement
            does not apply and the row fails).
        subset: S (parameter names, regex or modules) for the reported ‖Y − J_S θ_S‖/‖Y‖; ``"readout"``
            (default) uses :func:`dynamics.models.base.readout_of`; None skips it.
        Other arguments as for :func:`check_sufficiency`.

    The row is ``trivial`` when rank J = nk (every Y is in Col J at every θ).
    """
    fit_tol = _tol(fit_tol, "fit_tol")
    g = loss_geometry(model, x, y, params, bn_mode, rank_rtol)
    y_norm = float(torch.linalg.vector_norm(g.y))
    if y_norm == 0:
        raise InputError("targets are all zero; necessity is about fitting non-zero targets")
    fit = float(torch.linalg.vector_norm(g.residual_vector)) / y_norm
    f_norm = float(torch.linalg.vector_norm(g.f))
    r_bound = fit + g.space.accuracy * f_norm / y_norm + 1e-15
    q = {"p": g.p, "nk": g.n * g.k, "rank": g.space.rank, "fit_residual": fit, "r": g.alignment_residual,
         "r_bound": r_bound, "f_off_colJ": g.on_model_residual}
    if subset is not None:
        names = readout_subset(model) if subset == "readout" else [n for n, _ in select_parameters(model, subset)]
        js = jacobian(model, x, params=names, bn_mode=bn_mode, dtype=torch.float64)
        theta_s = torch.cat([p.detach().to(torch.float64).reshape(-1) for n_, p in model.named_parameters()
                             if n_ in set(names)])
        q["Y_minus_JS_thetaS"] = float(torch.linalg.vector_norm(g.y - js @ theta_s)) / y_norm
    fits = fit <= fit_tol
    holds = fits and q["r"] <= r_bound
    note = "zero-loss point ⇒ Y ∈ Col J: r ≤ ‖f−Y‖/‖Y‖ (+ rounding)" if fits else \
        f"not a zero-loss point (‖f−Y‖/‖Y‖ = {fit:.3g} > {fit_tol:g}): statement not applicable"
    trivial = g.space.full_row_rank
    if trivial:
        note += "; TRIVIAL: rank J = nk, every Y is in Col J"
    return StatementReport("4", "necessity", setting or f"{type(model).__name__}, n={g.n}, k={g.k}, p={g.p}", q,
                           {"fit_tol": fit_tol, "r_bound": "fit + accuracy·‖f‖/‖Y‖"}, holds, expected, notes=note,
                           trivial=trivial)
