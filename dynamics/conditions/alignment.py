"""The data architecture alignment condition: vec(Y) ∈ Col J(θ), measured by r = ‖(I − P) vec(Y)‖ / ‖vec(Y)‖.

Two paths give the same report fields:

``"dense"``
    Forms J (n·k × p) and diagonalises the smaller Gram matrix (:class:`~.column_space.ColumnSpace`): exact
    up to rounding, with the numerical rank decided by a stated tolerance (``rank_rtol``; default: the
    matrix_rank convention on the Gram eigenvalues, σ > sqrt(max(nk, p)·eps)·σ_max, see the column_space module).
``"lsqr"``
    Matrix-free: ``scipy.sparse.linalg.lsqr`` on ``JacobianOperator.to_scipy()`` solves min_z ‖J z − Y‖.
    At its final iterate z the report gives

    * the **upper bound** ``residual = ‖Y − J z‖ / ‖Y‖``, recomputed with one extra product (not LSQR's
      recurrence): rigorous for any z, since J z ∈ Col J, up to the rounding of that product;
    * ``optimality = ‖Jᵀ r‖`` for r = Y − J z, from one extra adjoint product;
    * the **lower bound** ``sqrt(‖r‖² − (‖Jᵀ r‖ / σ₊)²) / ‖Y‖``: r = (I − P)Y + e with e ∈ Col J orthogonal
      to (I − P)Y and ‖Jᵀ e‖ = ‖Jᵀ r‖ ≥ σ₊‖e‖. It is rigorous when the σ₊ used does not exceed the true
      smallest non-zero singular value: pass a known lower bound as ``sigma_min=``. Otherwise σ₊ is LSQR's
      estimate ``anorm / acond`` = 1/‖R_k⁻¹‖_F from its bidiagonalisation (Paige & Saunders), which is at
      most the smallest Ritz value; it is a heuristic (notes say so), used for the lower bound only when
      LSQR converged (istop 1, 2, 4, 5), where it was below the dense σ₊ in all 120 random tiny networks we
      tried. Before convergence it can overestimate σ₊ badly, so no lower bound is given then.

    ``holds`` when the upper bound ≤ ``rtol``; ``conclusive`` is False when the upper bound exceeds ``rtol``
    and the lower bound does not. ``rank`` and ``sigma_max`` are None (not computed matrix-free).

The two paths answer the same question only where the numerical rank is unambiguous. ``"dense"`` treats
singular values below its threshold (about 1e-7·σ_max by default) as zero; LSQR, given enough iterations,
fits through any direction it can see, so a J with genuine singular values between ~1e-14 and ~1e-7 of
σ_max can give a smaller LSQR residual (seen on tiny tanh networks with width 1). Compare ``rank`` and
``sigma_min`` of the dense report, or use ``ColumnSpace.from_jacobian(J, method="svd")`` to resolve them.

``"auto"`` picks ``"dense"`` when the smaller Gram fits 256 MiB (min(nk, p)²·8 bytes) and J fits 1 GiB
(nk·p·8 bytes), else ``"lsqr"``.

``holds`` iff ``residual ≤ rtol``, default ``rtol = 1e-6``.

>>> import torch, torch.nn as nn
>>> _ = torch.manual_seed(0)
>>> net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 2))
>>> x, y = torch.randn(5, 3), torch.randn(5, 2)
>>> rep = check_alignment(net, x, y)          # J is 10 x 98 of rank 10: every Y is aligned
>>> rep.holds, rep.rank, rep.method
(True, 10, 'dense')
>>> abs(check_alignment(net, x, y, method="lsqr").residual - rep.residual) < 1e-6
True
"""

from __future__ import annotations

import logging
import math
import time
from typing import Optional

import numpy as np
import torch
from torch import nn

from dynamics.conditions.column_space import ColumnSpace, check_positive_tolerance
from dynamics.conditions.reports import AlignmentReport
from dynamics.conditions.targets import normalise_targets
from dynamics.engine.jacobian import JacobianOperator
from dynamics.engine.parameters import ParamSpec
from dynamics.errors import InputError, MethodError

__all__ = ["check_alignment", "alignment_residual", "choose_method", "DEFAULT_ALIGNMENT_RTOL", "METHODS"]

log = logging.getLogger(__name__)

DEFAULT_ALIGNMENT_RTOL = 1e-6
METHODS = ("auto", "dense", "lsqr")
GRAM_BUDGET = 256 * 2**20
DENSE_J_BUDGET = 2**30
LSQR_CONLIM = 1e14


def choose_method(m: int, p: int) -> str:
    """``"dense"`` when min(m, p)²·8 ≤ 256 MiB and m·p·8 ≤ 1 GiB, else ``"lsqr"`` (m = n·k rows)."""
    return "dense" if min(m, p) ** 2 * 8 <= GRAM_BUDGET and m * p * 8 <= DENSE_J_BUDGET else "lsqr"


def check_alignment(model: nn.Module, x, y, params: ParamSpec = None, bn_mode: Optional[str] = None,
                    method: str = "auto", rtol: Optional[float] = None, dtype: torch.dtype = torch.float64, *,
                    rank_rtol: Optional[float] = None, atol_lsqr: Optional[float] = None,
                    iter_lim: Optional[int] = None, sigma_min: Optional[float] = None,
                    batch_size: Optional[int] = None) -> AlignmentReport:
    """Check vec(Y) ∈ Col J(θ) at the model's parameters θ on data (x, y).

    Args:
        model: the network (never modified).
        x: inputs (n, ...).
        y: targets, (n, k) floats; (n,) floats when k = 1; integer class labels (n,) when k > 1 become
            one-hot rows (see :mod:`dynamics.conditions.targets`). Compared as vec(Y) = Y.reshape(-1),
            sample-major like the rows of J.
        params: the parameters forming J (default: all with ``requires_grad``).
        bn_mode: ``"eval" | "batch" | "frozen"``; required when a BatchNorm layer is in training mode.
        method: ``"auto" | "dense" | "lsqr"`` (module docstring).
        rtol: alignment holds iff the residual ≤ rtol (default 1e-6).
        dtype: compute dtype of J (float64 by default).
        rank_rtol: ``"dense"`` only: relative rank threshold on σ/σ_max (default: module docstring).
        atol_lsqr: ``"lsqr"`` only: LSQR's atol and btol (default 1e-12 in float64, 1e-6 otherwise).
        iter_lim: ``"lsqr"`` only: iteration limit (default 10·min(nk, p) + 100: without reorthogonalisation
            LSQR may need several times the rank to converge in floating point; istop 7 in the report
            says the limit was reached).
        sigma_min: ``"lsqr"`` only: a known lower bound on σ₊ making the lower bound rigorous.
        batch_size: samples per block of the operator (memory control for ``"lsqr"``).

    Returns:
        :class:`~dynamics.conditions.reports.AlignmentReport`.

    Raises:
        InputError: bad y (wrong shape, non-finite, n mismatch with x, k mismatch with the model output),
            non-positive tolerances or iter_lim; MethodError for an unknown method.
    """
    start = time.perf_counter()
    if method not in METHODS:
        raise MethodError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    rtol = check_positive_tolerance(rtol, "rtol")
    rtol = DEFAULT_ALIGNMENT_RTOL if rtol is None else rtol
    rank_rtol = check_positive_tolerance(rank_rtol, "rank_rtol")
    atol_lsqr = check_positive_tolerance(atol_lsqr, "atol_lsqr")
    sigma_min = check_positive_tolerance(sigma_min, "sigma_min")
    if iter_lim is not None and (isinstance(iter_lim, bool) or not isinstance(iter_lim, int) or iter_lim < 1):
        raise InputError(f"iter_lim must be a positive integer, got {iter_lim!r}")
    op = JacobianOperator(model, x, params=params, bn_mode=bn_mode, dtype=dtype, batch_size=batch_size)
    Y = normalise_targets(y, op.n, op.k).reshape(-1)
    m, p = op.shape
    chosen = choose_method(m, p) if method == "auto" else method
    common = dict(rtol=rtol, method=chosen, n=op.n, k=op.k, p=p, params=op.param_names, bn_mode=op.bn_mode,
                  dtype=str(op.dtype).replace("torch.", ""))
    if chosen == "dense":
        fields = _dense(op, Y, rtol, rank_rtol)
    else:
        fields = _lsqr(op, Y, rtol, atol_lsqr, iter_lim, sigma_min)
    report = AlignmentReport(**fields, **common, time_s=time.perf_counter() - start)
    log.info("alignment (%s): residual %.3g, holds %s", chosen, report.residual, report.holds)
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


# ---------------------------------------------------------------------- the two paths
def _dense(op: JacobianOperator, Y: torch.Tensor, rtol: float, rank_rtol: Optional[float]) -> dict:
    cs = ColumnSpace.from_jacobian(op.dense(), rtol=rank_rtol)
    residual = cs.relative_residual(Y)
    notes = ["Y = 0 lies in every column space"] if float(Y.norm()) == 0.0 else []
    return dict(holds=residual <= rtol, residual=residual, residual_lower_bound=residual, rank=cs.rank,
                sigma_min=cs.sigma_min, sigma_min_source="dense", sigma_max=cs.sigma_max, tolerance=cs.tolerance, iterations=None,
                istop=None, optimality=None, conclusive=True, notes=notes)


def _lsqr(op: JacobianOperator, Y: torch.Tensor, rtol: float, atol: Optional[float], iter_lim: Optional[int],
          sigma_min: Optional[float]) -> dict:
    from scipy.sparse.linalg import lsqr

    m, p = op.shape
    atol = atol if atol is not None else (1e-12 if op.dtype == torch.float64 else 1e-6)
    iter_lim = iter_lim if iter_lim is not None else 10 * min(m, p) + 100
    b = Y.numpy().astype(np.float64)
    b_norm = float(np.linalg.norm(b))
    if b_norm == 0.0:
        return dict(holds=True, residual=0.0, residual_lower_bound=0.0, rank=None, sigma_min=sigma_min,
                    sigma_min_source="given" if sigma_min is not None else None, sigma_max=None, tolerance=atol, iterations=0, istop=0, optimality=0.0, conclusive=True,
                    notes=["Y = 0 lies in every column space"])
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
    holds = upper <= rtol
    conclusive = holds or (lower is not None and lower > rtol)
    if istop in (3, 6, 7):
        notes.append(f"LSQR stopped with istop={istop} ({_ISTOP.get(istop)}) after {itn} iterations")
    if not conclusive:
        notes.append("inconclusive: the upper bound exceeds rtol but no lower bound above rtol is available; "
                     "raise iter_lim, tighten atol_lsqr, pass sigma_min, or use method='dense' on a subset of the data")
    return dict(holds=holds, residual=upper, residual_lower_bound=lower, rank=None, sigma_min=sigma,
                sigma_min_source=source, sigma_max=None, tolerance=atol, iterations=int(itn), istop=int(istop),
                optimality=g_norm, conclusive=conclusive, notes=notes)


_ISTOP = {0: "x = 0 is the solution", 1: "J z = Y to atol/btol", 2: "least-squares solution to atol",
          3: "condition estimate exceeded conlim", 4: "J z = Y to machine precision",
          5: "least-squares solution to machine precision", 6: "condition estimate exceeded 1/eps",
          7: "iteration limit reached"}
