"""The data architecture alignment condition: vec(Y) ∈ Col J(θ), measured by r = ‖(I − P) vec(Y)‖ / ‖vec(Y)‖.

Every route returns rigorous two-sided bounds ``residual_lower ≤ r ≤ residual_upper`` (up to the stated
floating-point accuracy of the route and its numerical-rank convention, both in the report) and
``conclusive``: True when the bounds settle ``holds`` (upper ≤ rtol, or lower > rtol). Routes, by cost:

``"dense"``
    Forms J (n·k × p) and :class:`~.column_space.ColumnSpace` (eigh of the smaller Gram). Exact:
    lower = upper = r (± the route's accuracy ``max(nk, p)·eps·(σ_max/σ_r)²``).
``"gram"``
    Exact without forming J. When n·k ≤ p, the Gram J Jᵀ (n·k × n·k) is the empirical NTK
    (:func:`dynamics.ntk`). When n·k > p, JᵀJ (p × p) is accumulated in float64 over sample blocks
    (:func:`~.gram.column_gram`), diagonalised (JᵀJ = V Σ² Vᵀ) and
    r² = 1 − ‖Σ_r⁻¹ V_rᵀ JᵀY‖² / ‖Y‖², with the rank tolerance of ColumnSpace. Cost: n·k·p² flops to
    accumulate plus ~9p³ for the eigendecomposition; memory ~3p² numbers.
``"subset"``
    Two bounds from a seeded subset S of samples (``subset_size``, default 1.5·(⌊p/k⌋ + 1), capped at n):
    * lower: for every z, ‖Y − Jz‖² ≥ ‖Y_S − J_S z‖², so dist(Y, Col J) ≥ dist(Y_S, Col J_S), i.e.
      r ≥ r_S·‖Y_S‖/‖Y‖. The QR factorisation [J_S, Y_S] = QR gives dist(Y_S, span Q₁) = |R[p, p]| ≤
      dist(Y_S, Col J_S) without any numerical rank decision (:mod:`.subset_bound`). It can be positive only
      when |S|·k > p (otherwise J_S generically has full row rank and r_S = 0). Cost 2|S|kp² − ⅔p³ flops;
    * upper: z_S = the least-squares solution on S; J z_S ∈ Col J, so r ≤ ‖Y − J z_S‖/‖Y‖, evaluated on all
      samples by forward-mode products (J never formed); and the least-squares fit of the read-out's own
      columns on all samples (Col J_R ⊆ Col J; n·k × (d + 1)·k, cheap). The smaller is reported.
``"lsqr"`` (fallback)
    ``scipy.sparse.linalg.lsqr`` on ``JacobianOperator.to_scipy()``. Upper bound ‖Y − J z‖/‖Y‖ at its final
    iterate (recomputed with one extra product); lower bound sqrt(‖r‖² − (‖Jᵀr‖/σ₊)²)/‖Y‖, rigorous only with
    a known lower bound ``sigma_min=`` on σ₊ (otherwise LSQR's estimate anorm/acond, a heuristic used only
    after convergence; notes say so). The report gives its iteration count.
``"auto"``
    ``"dense"`` when J and its smaller Gram fit ``memory_budget``; else ``"gram"`` when the Gram fits (n·k ≤ p:
    the NTK; n·k > p: JᵀJ, per-sample BatchNorm only); else ``"lsqr"``. Exact routes cost time: at
    p ≈ 20,000 the eigendecomposition alone takes ~40 min on one CPU core; ``"subset"`` bounds are faster.

``trivial`` is True when rank J = n·k: then P = I and every Y is aligned, whatever the network learned (the
over-parameterised regime). It is False whenever p < n·k (rank J ≤ p), and None when unknown (LSQR, p ≥ nk).

``holds`` iff ``residual_upper ≤ rtol`` (default ``rtol = 1e-6``); ``residual`` is the route's estimate
(exact routes: r; bound routes: the upper bound).

>>> import torch, torch.nn as nn
>>> _ = torch.manual_seed(0)
>>> net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 2))
>>> x, y = torch.randn(5, 3), torch.randn(5, 2)
>>> rep = check_alignment(net, x, y)          # J is 10 x 98 of rank 10: every Y is aligned, trivially
>>> rep.holds, rep.trivial, rep.rank, rep.method
(True, True, 10, 'dense')
>>> x, y = torch.randn(200, 3), torch.randn(200, 2)   # 400 rows, 98 columns: r > 0 possible
>>> rep = check_alignment(net, x, y, method="subset", subset_size=80)
>>> rep.trivial, rep.conclusive, 0 < rep.residual_lower <= rep.residual_upper
(False, True, True)
>>> exact = check_alignment(net, x, y, method="gram")
>>> rep.residual_lower <= exact.residual <= rep.residual_upper
True
"""

from __future__ import annotations

import logging
import math
import time
from typing import Optional

import numpy as np
import torch
from scipy.sparse.linalg import lsqr
from torch import nn

from dynamics.conditions.column_space import ColumnSpace, check_positive_tolerance
from dynamics.conditions.gram import (PER_SAMPLE_BN_MODES, block_samples_for, column_gram, default_subset,
                                      gram_bytes, minimum_subset, row_gram)
from dynamics.conditions.guard import guarded
from dynamics.conditions.reports import AlignmentReport
from dynamics.conditions.subset_bound import subset_bytes, subset_lower_bound
from dynamics.conditions.targets import normalise_targets
from dynamics.engine.jacobian import JacobianOperator, jacobian
from dynamics.engine.parameters import ParamSpec
from dynamics.errors import InputError, MemoryBudgetError, MethodError
from dynamics.models.base import readout_of

__all__ = ["check_alignment", "alignment_residual", "choose_method", "DEFAULT_ALIGNMENT_RTOL", "METHODS",
           "DEFAULT_ALIGNMENT_MEMORY_BUDGET"]

log = logging.getLogger(__name__)

DEFAULT_ALIGNMENT_RTOL = 1e-6
METHODS = ("auto", "dense", "gram", "subset", "lsqr")
DEFAULT_ALIGNMENT_MEMORY_BUDGET = 2 * 2**30
LSQR_CONLIM = 1e14
EPS = float(np.finfo(np.float64).eps)


def dense_bytes(m: int, p: int) -> int:
    """Bytes of the dense route: J (m·p), its smaller Gram and eigenvectors, the basis (float64)."""
    return 8 * (m * p + 3 * min(m, p) ** 2 + m * min(m, p))


def choose_method(m: int, p: int, memory_budget: int = DEFAULT_ALIGNMENT_MEMORY_BUDGET,
                  per_sample: bool = True) -> str:
    """The ``"auto"`` route for an m × p Jacobian (m = n·k rows) within ``memory_budget`` bytes.

    >>> choose_method(100, 10_000), choose_method(30, 20_000_000), choose_method(50_000, 19_810)
    ('dense', 'gram', 'lsqr')
    >>> choose_method(50_000, 19_810, memory_budget=16 * 2**30)
    'gram'
    """
    if dense_bytes(m, p) <= memory_budget:
        return "dense"
    if m <= p and gram_bytes(m) <= memory_budget:
        return "gram"
    if m > p and per_sample and gram_bytes(p) <= memory_budget:
        return "gram"
    return "lsqr"


@guarded
def check_alignment(model: nn.Module, x, y, params: ParamSpec = None, bn_mode: Optional[str] = None,
                    method: str = "auto", rtol: Optional[float] = None, dtype: torch.dtype = torch.float64, *,
                    rank_rtol: Optional[float] = None, memory_budget: Optional[int] = None,
                    subset_size: Optional[int] = None, subset_seed: int = 0,
                    atol_lsqr: Optional[float] = None, iter_lim: Optional[int] = None,
                    sigma_min: Optional[float] = None, batch_size: Optional[int] = None,
                    expected: bool = True, control: bool = False) -> AlignmentReport:
    """Check vec(Y) ∈ Col J(θ) at the model's parameters θ on data (x, y), with two-sided bounds on r.

    Args:
        model: the network (never modified).
        x: inputs (n, ...).
        y: targets, (n, k) floats; (n,) floats when k = 1; integer class labels (n,) when k > 1 become
            one-hot rows (see :mod:`dynamics.conditions.targets`). Compared as vec(Y) = Y.reshape(-1),
            sample-major like the rows of J.
        params: the parameters forming J (default: all with ``requires_grad``).
        bn_mode: ``"eval" | "batch" | "frozen"``; required when a BatchNorm layer is in training mode.
        method: ``"auto" | "dense" | "gram" | "subset" | "lsqr"`` (module docstring).
        rtol: alignment holds iff the upper bound ≤ rtol (default 1e-6).
        dtype: compute dtype of J (float64 by default; Grams are accumulated in float64 regardless).
        rank_rtol: exact routes: relative rank threshold on σ/σ_max (default: ColumnSpace's).
        memory_budget: bytes the route may use (default 2 GiB); ``"auto"`` chooses within it, and an
            explicit ``"dense"``/``"gram"``/``"subset"`` that cannot fit raises MemoryBudgetError.
        subset_size, subset_seed: ``"subset"`` only: |S| (needs |S|·k > p) and the seed choosing S.
        atol_lsqr, iter_lim, sigma_min: ``"lsqr"`` only (module docstring; iter_lim default 10·min(nk, p) + 100).
        batch_size: samples per block of the matrix-free operator.
        expected, control: recorded in the report (a control is a case built so that alignment fails).

    Returns:
        :class:`~dynamics.conditions.reports.AlignmentReport`.

    Raises:
        InputError: bad y, non-positive tolerances or iter_lim, a subset larger than the data or too small
            to give a positive lower bound; MethodError: unknown method; MemoryBudgetError: the Gram of the
            requested route does not fit ``memory_budget`` (the message gives the size and the alternative);
            NonFiniteError: J is not finite.
    """
    start = time.perf_counter()
    if method not in METHODS:
        raise MethodError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    rtol = check_positive_tolerance(rtol, "rtol")
    rtol = DEFAULT_ALIGNMENT_RTOL if rtol is None else rtol
    rank_rtol = check_positive_tolerance(rank_rtol, "rank_rtol")
    atol_lsqr = check_positive_tolerance(atol_lsqr, "atol_lsqr")
    sigma_min = check_positive_tolerance(sigma_min, "sigma_min")
    budget = check_positive_tolerance(memory_budget, "memory_budget")
    budget = DEFAULT_ALIGNMENT_MEMORY_BUDGET if budget is None else int(budget)
    if iter_lim is not None and (isinstance(iter_lim, bool) or not isinstance(iter_lim, int) or iter_lim < 1):
        raise InputError(f"iter_lim must be a positive integer, got {iter_lim!r}")
    op = JacobianOperator(model, x, params=params, bn_mode=bn_mode, dtype=dtype, batch_size=batch_size)
    Y = normalise_targets(y, op.n, op.k).reshape(-1)
    m, p = op.shape
    per_sample = op.bn_mode in PER_SAMPLE_BN_MODES
    chosen = choose_method(m, p, budget, per_sample) if method == "auto" else method
    common = dict(rtol=rtol, method=chosen, n=op.n, k=op.k, p=p, params=op.param_names, bn_mode=op.bn_mode,
                  dtype=str(op.dtype).replace("torch.", ""), expected=expected, control=control)
    if float(Y.norm()) == 0.0:
        fields = _exact_fields(0.0, 0.0, None, trivial=None, notes=["Y = 0 lies in every column space"])
    elif chosen == "dense":
        _fits(dense_bytes(m, p), budget, f"the dense J ({m} x {p}) and its Gram", "method='gram' or 'subset'")
        J = op.dense().to(torch.float64)
        cs = ColumnSpace.from_jacobian(J, rtol=rank_rtol)
        fields = _exact_fields(cs.relative_residual(Y), cs.accuracy, cs)
        explicit = _dense_explicit_upper(cs, J, Y)
        if explicit < fields["residual_lower"]:     # two computations of r disagree: never a verdict from that
            fields.update(holds=False, conclusive=False)
            fields["notes"].append(
                f"inconsistent: an explicit fit gives r <= {explicit:.3g} but the projector gives r >= "
                f"{fields['residual_lower']:.3g}; the rank decision is unreliable here: try rank_rtol= or "
                f"method='gram'")
        else:
            fields["residual_upper"] = min(fields["residual_upper"], explicit)
    elif chosen == "gram":
        fields = _gram(model, op, Y, rank_rtol, budget, dtype)
    elif chosen == "subset":
        fields = _subset(model, op, Y, budget, dtype, subset_size, subset_seed)
    else:
        fields = _lsqr(op, Y, rtol, atol_lsqr, iter_lim, sigma_min)
    fields.setdefault("holds", fields["residual_upper"] <= rtol)
    fields.setdefault("conclusive", fields["holds"] or (fields["residual_lower"] or 0.0) > rtol)
    if not fields["conclusive"]:
        fields["notes"].append("inconclusive: the upper bound exceeds rtol and the lower bound does not; use "
                               "method='gram' (exact), a larger subset_size, or sigma_min= for LSQR")
    report = AlignmentReport(**fields, **common, time_s=time.perf_counter() - start)
    lower = "?" if report.residual_lower is None else f"{report.residual_lower:.3g}"
    log.info("alignment (%s): r in [%s, %.3g], holds %s", chosen, lower, report.residual_upper, report.holds)
    return report


def alignment_residual(model: nn.Module, x, y, params: ParamSpec = None, bn_mode: Optional[str] = None,
                       method: str = "auto", **kwargs) -> float:
    """Just the residual ‖(I − P) vec(Y)‖ / ‖vec(Y)‖ of :func:`check_alignment` (for probes and sweeps).

    >>> import torch, torch.nn as nn
    >>> net = nn.Linear(2, 1, bias=False)                # J = x: Col J is spanned by x's two columns
    >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    >>> alignment_residual(net, x, torch.tensor([[3.0], [4.0], [0.0]]))
    0.0
    >>> round(alignment_residual(net, x, torch.tensor([[0.0], [0.0], [2.0]])), 6)
    1.0
    """
    return check_alignment(model, x, y, params=params, bn_mode=bn_mode, method=method, **kwargs).residual


# ---------------------------------------------------------------------- the routes
def _fits(needed: int, budget: int, what: str, alternative: str) -> None:
    if needed > budget:
        raise MemoryBudgetError(f"{what} need {needed / 2**30:.2f} GiB, over the memory_budget of "
                                f"{budget / 2**30:.2f} GiB; raise memory_budget to at least {needed} bytes, or "
                                f"use {alternative}")


def _exact_fields(r: float, accuracy: float, cs: Optional[ColumnSpace], trivial: Optional[bool] = False,
                  notes: Optional[list] = None) -> dict:
    """Report fields of an exact route: r with the bounds r ∓ accuracy (the route's stated rounding error)."""
    if cs is not None:
        trivial = cs.full_row_rank
    return dict(residual=r, residual_lower=max(r - accuracy, 0.0), residual_upper=r + accuracy,
                accuracy=accuracy, trivial=trivial, rank=None if cs is None else cs.rank,
                sigma_min=None if cs is None else cs.sigma_min, sigma_min_source=None if cs is None else "exact",
                sigma_max=None if cs is None else cs.sigma_max, tolerance=None if cs is None else cs.tolerance,
                route=None if cs is None else cs.route, iterations=None, istop=None, optimality=None,
                subset_size=None, notes=list(notes or []))


def _gram(model, op: JacobianOperator, Y: torch.Tensor, rank_rtol, budget: int, dtype) -> dict:
    m, p = op.shape
    if m <= p:
        _fits(gram_bytes(m), budget, f"the NTK J Jᵀ ({m} x {m}) and its eigendecomposition",
              "method='lsqr' (matrix-free)")
        cs = ColumnSpace.from_gram(row_gram(model, op.stacked.x, params=op.param_names, bn_mode=op.bn_mode,
                                            dtype=dtype), "rows", (m, p), op.dtype, rank_rtol)
        return _exact_fields(cs.relative_residual(Y), cs.accuracy, cs)
    _fits(gram_bytes(p), budget, f"JᵀJ ({p} x {p}) and its eigendecomposition",
          "method='subset' (a lower bound from fewer samples needs the same p x p Gram) or method='lsqr'")
    acc = column_gram(model, op.stacked.x, Y, params=op.param_names, bn_mode=op.bn_mode, dtype=dtype,
                      block_samples=block_samples_for(op.k, p, budget // 4))
    t_eig = time.perf_counter()
    log.info("gram route: JᵀJ (%d x %d) accumulated in %.0f s; eigendecomposition", p, p, acc.seconds)
    cs = ColumnSpace.from_gram(acc.gram, "columns", (m, p), op.dtype, rank_rtol)
    t_eig = time.perf_counter() - t_eig
    r = cs.relative_residual_from_adjoint(acc.y_norm2, acc.jt_y)
    explicit = _explicit_residual(op, Y, cs.least_squares(acc.jt_y))
    fields = _exact_fields(min(explicit, math.sqrt(r * r + cs.accuracy)), cs.accuracy, cs)
    # r² = 1 − ‖Σ⁻¹VᵀJᵀY‖²/‖Y‖² has absolute error ~accuracy (cancellation when r is small), so the lower
    # bound is sqrt(r² − accuracy); the upper bound is the smaller of sqrt(r² + accuracy) and the explicit
    # ‖Y − J z‖/‖Y‖ at the least-squares z (rigorous for any z, accurate when r is small)
    fields.update(residual_lower=math.sqrt(max(r * r - cs.accuracy, 0.0)), residual_upper=fields["residual"])
    fields["notes"].append(f"JᵀJ accumulated over {acc.rows} rows in {acc.seconds:.1f} s, eigendecomposition "
                           f"{t_eig:.1f} s; r from the Gram "
                           f"formula {r:.4g}, explicit ‖Y − J z‖/‖Y‖ {explicit:.4g}")
    return fields


def _readout_upper(model, op: JacobianOperator, Y: torch.Tensor, dtype) -> Optional[float]:
    """‖Y − J_R z_R‖/‖Y‖ for the least-squares z_R over the read-out's columns J_R (a few per output, all samples):
    Col J_R ⊆ Col J, so it bounds r from above, cheaply (J_R is n·k × (d + 1)·k). None when the model has no
    ``nn.Linear`` read-out among the parameters of J."""
    try:
        names = [n for n, p in model.named_parameters() if id(p) in {id(q) for q in readout_of(model).parameters()}]
    except InputError:
        return None
    names = [n for n in names if n in set(op.param_names)]
    if not names or 8 * op.n * op.k * sum(op.stacked.numels[op.param_names.index(n)] for n in names) > 2**30:
        return None
    J_r = jacobian(model, op.stacked.x, params=names, bn_mode=op.bn_mode, dtype=dtype).to(torch.float64)
    z = torch.linalg.lstsq(J_r, Y.to(J_r).unsqueeze(1), driver="gelsd").solution.squeeze(1)
    return float((Y.to(J_r) - J_r @ z).norm()) / float(Y.norm())


def _dense_explicit_upper(cs: ColumnSpace, J: torch.Tensor, Y: torch.Tensor) -> float:
    """A rigorous upper bound on r from an explicit fit: ‖Y − J z‖/‖Y‖ for the least-squares z within the kept
    directions, plus the rounding bound of computing Y − J z in float64, p·eps·(‖J‖_F‖z‖ + ‖Y‖)/‖Y‖.

    In exact arithmetic J z = P Y, so this equals r; unlike r ± accuracy it does not grow with (σ_max/σ_r)²,
    which matters when J has full row rank but is ill-conditioned (r = 0, and the verdict must say so)."""
    Y = Y.to(J)
    if cs.rank == 0:
        return 1.0
    s2 = cs.singular_values[: cs.rank].to(J).pow(2)
    if cs.right is not None:                       # JᵀJ route: z = V Σ⁻² Vᵀ JᵀY
        V = cs.right[:, : cs.rank]
        z = V @ ((V.T @ (J.T @ Y)) / s2)
    else:                                          # JJᵀ route: z = Jᵀ U Σ⁻² Uᵀ Y, so J z = U Uᵀ Y
        z = J.T @ (cs.basis @ ((cs.basis.T @ Y) / s2))
    y_norm = float(Y.norm())
    rounding = J.shape[1] * torch.finfo(torch.float64).eps * (float(J.norm()) * float(z.norm()) + y_norm)
    return (float((Y - J @ z).norm()) + rounding) / y_norm


def _explicit_residual(op: JacobianOperator, Y: torch.Tensor, z: torch.Tensor) -> float:
    """‖Y − J z‖/‖Y‖ by forward-mode products over the samples (J never formed): an upper bound on r."""
    with torch.no_grad():
        fit = (op @ z.to(op.dtype)).to(torch.float64)
    return float((Y.to(fit) - fit).norm()) / float(Y.norm())


def _subset(model, op: JacobianOperator, Y: torch.Tensor, budget: int, dtype, size: Optional[int],
            seed: int) -> dict:
    n, k = op.n, op.k
    m, p = op.shape
    need = minimum_subset(p, k)
    if need > n:
        raise InputError(f"the subset lower bound needs |S|·k > p, i.e. |S| ≥ {need} samples, but the data has only "
                         f"n = {n} (n·k = {m} ≤ p = {p}): any subset's J_S has full row rank generically, so the "
                         f"bound is necessarily 0; use method='gram' (exact, via the {m} x {m} NTK)")
    if size is None:
        size = default_subset(n, p, k)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InputError(f"subset_size must be a positive integer, got {size!r}")
    if size > n:
        raise InputError(f"subset_size={size} is larger than the data (n = {n}); pass subset_size ≤ {n}, or "
                         f"method='gram' for the exact residual on all samples")
    if size < need:
        raise InputError(f"subset_size={size} gives |S|·k = {size * k} ≤ p = {p}: J_S has full row rank "
                         f"generically, so the lower bound is necessarily 0; use subset_size ≥ {need} "
                         f"(|S|·k > p; {default_subset(n, p, k)} is the default)")
    _fits(subset_bytes(size * k, p), budget, f"[J_S, Y_S] ({size * k} x {p + 1}) and R₁ for its QR factorisation",
          f"a smaller subset_size (at least {need}) or method='lsqr'")
    gen = torch.Generator().manual_seed(seed)
    S = torch.randperm(n, generator=gen)[:size].sort().values
    bound = subset_lower_bound(model, op.stacked.x, Y, S, params=op.param_names, bn_mode=op.bn_mode, dtype=dtype,
                               block_samples=block_samples_for(k, p, budget // 4))
    upper = 1.0 if bound.z is None else min(_explicit_residual(op, Y, bound.z), 1.0)
    readout = _readout_upper(model, op, Y, dtype)
    notes = [f"lower bound dist(Y_S, span Q₁)/‖Y‖ ≤ r_S·‖Y_S‖/‖Y‖ ≤ r from the QR factorisation of [J_S, Y_S] on "
             f"|S| = {size} samples (no rank decision); upper bound: the smaller of ‖Y − J z_S‖/‖Y‖ at the "
             f"least-squares z on S ({upper:.4g}) and the least-squares fit of the read-out's columns "
             f"({'n/a' if readout is None else f'{readout:.4g}'}), both in Col J",
             f"times: J_S {bound.seconds_jacobian:.1f} s, QR {bound.seconds_qr:.1f} s"]
    if readout is not None:
        upper = min(upper, readout)
    return dict(residual=upper, residual_lower=bound.lower, residual_upper=upper, accuracy=bound.rows * EPS,
                trivial=False, rank=None, sigma_min=None, sigma_min_source=None, sigma_max=None, tolerance=None,
                route="qr([J_S, Y_S])", iterations=None, istop=None, optimality=None, subset_size=size,
                notes=notes)


def _lsqr(op: JacobianOperator, Y: torch.Tensor, rtol: float, atol: Optional[float], iter_lim: Optional[int],
          sigma_min: Optional[float]) -> dict:
    m, p = op.shape
    atol = atol if atol is not None else (1e-12 if op.dtype == torch.float64 else 1e-6)
    iter_lim = iter_lim if iter_lim is not None else 10 * min(m, p) + 100
    b = Y.numpy().astype(np.float64)
    b_norm = float(np.linalg.norm(b))
    A = op.to_scipy()
    z, istop, itn, _r1, _r2, anorm, acond, *_ = lsqr(A, b, damp=0.0, atol=atol, btol=atol, conlim=LSQR_CONLIM,
                                                     iter_lim=iter_lim)
    r = b - np.asarray(A.matvec(z), dtype=np.float64)
    r_norm = float(np.linalg.norm(r))
    g_norm = float(np.linalg.norm(np.asarray(A.rmatvec(r), dtype=np.float64)))
    upper = r_norm / b_norm
    notes = []
    converged = istop in (1, 2, 4, 5)
    sigma, source = None, None
    if sigma_min is not None:
        sigma, source = sigma_min, "given"
    elif acond > 0 and math.isfinite(acond) and anorm > 0:
        sigma, source = anorm / acond, "lsqr-estimate"
    lower = None
    if source == "given" or (source == "lsqr-estimate" and converged):
        lower = math.sqrt(max(r_norm ** 2 - (g_norm / sigma) ** 2, 0.0)) / b_norm
    if source == "lsqr-estimate":
        notes.append("sigma_min is LSQR's estimate anorm/acond" + (
            ", so the lower bound is heuristic" if converged else
            "; LSQR did not converge, so it may overestimate σ₊ and no lower bound is given") +
            "; pass sigma_min= (a known lower bound on σ₊) for a rigorous lower bound")
    if istop in (3, 6, 7):
        notes.append(f"LSQR stopped with istop={istop} ({_ISTOP.get(istop)}) after {itn} iterations")
    return dict(residual=upper, residual_lower=lower, residual_upper=upper, accuracy=None,
                trivial=False if p < m else None, rank=None, sigma_min=sigma, sigma_min_source=source,
                sigma_max=None, tolerance=atol, route="lsqr", iterations=int(itn), istop=int(istop),
                optimality=g_norm, subset_size=None, notes=notes)


_ISTOP = {0: "x = 0 is the solution", 1: "J z = Y to atol/btol", 2: "least-squares solution to atol",
          3: "condition estimate exceeded conlim", 4: "J z = Y to machine precision",
          5: "least-squares solution to machine precision", 6: "condition estimate exceeded 1/eps",
          7: "iteration limit reached"}
