"""A rigorous lower bound on the alignment residual from a subset of the samples, by one QR factorisation.

Derivation. Let S be a subset of the samples, J_S and Y_S the rows of J and Y that belong to it. For every z,
‖Y − Jz‖² = ‖Y_S − J_S z‖² + (the other rows) ≥ ‖Y_S − J_S z‖², so

    dist(Y, Col J) = min_z ‖Y − Jz‖ ≥ min_z ‖Y_S − J_S z‖ = dist(Y_S, Col J_S),   i.e.  r ≥ r_S·‖Y_S‖/‖Y‖.

Computation, without a numerical rank decision. Factor A = [J_S, Y_S] (m × (p + 1), m = |S|·k) by Householder QR,
A = QR. The first p columns of Q span a space that contains Col J_S (J_S = Q₁R₁), so

    |R[p, p]| = ‖(I − Q₁Q₁ᵀ) Y_S‖ = dist(Y_S, span Q₁) ≤ dist(Y_S, Col J_S),

and r ≥ |R[p, p]| / ‖Y‖. It can be positive only when m > p, i.e. |S|·k > p (otherwise span Q₁ is the whole
space). Householder QR is backward stable: the computed R is the exact factor of A + ΔA with each column of ΔA
at most about m·eps times that column; the Y part of that error is subtracted from the bound
(``|R[p, p]| − m·eps·‖Y_S‖``), the J part means the bound is for a Jacobian within that relative distance.
Cost: 2mp² − ⅔p³ flops (LAPACK ``dgeqrf``, blocked), memory m·(p + 1) + p² numbers; no eigendecomposition
(≈ 5× fewer flops than JᵀJ plus ``eigh`` at p ≈ 20,000).

The same factorisation gives a candidate z = R₁⁻¹ (QᵀY_S)₁ (least squares on S) for the upper bound
‖Y − Jz‖/‖Y‖ on all samples.

>>> import torch, torch.nn as nn
>>> _ = torch.manual_seed(0)
>>> net = nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 2)).double()     # p = 20
>>> x, Y = torch.randn(40, 3, dtype=torch.float64), torch.randn(80, dtype=torch.float64)
>>> bound = subset_lower_bound(net, x, Y, torch.arange(40))                       # S = all samples: exact
>>> from dynamics.conditions.column_space import ColumnSpace
>>> from dynamics.engine.jacobian import jacobian
>>> exact = ColumnSpace.from_jacobian(jacobian(net, x), method="svd").relative_residual(Y)
>>> abs(bound.lower - exact) < 1e-12
True
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from scipy.linalg import solve_triangular
from scipy.linalg.lapack import dgeqrf, dgeqrf_lwork
from torch import nn

from dynamics.conditions.gram import PER_SAMPLE_BN_MODES
from dynamics.engine.jacobian import jacobian
from dynamics.engine.parameters import ParamSpec
from dynamics.errors import InputError, NonFiniteError

__all__ = ["SubsetBound", "subset_lower_bound", "subset_bytes"]

log = logging.getLogger(__name__)

F64 = torch.float64
EPS = float(np.finfo(np.float64).eps)


@dataclass
class SubsetBound:
    """``lower``: the lower bound on r (relative to ‖Y‖); ``z``: least-squares coefficients on S (None when R₁ is
    singular); ``rows``: m = |S|·k; ``seconds_jacobian``, ``seconds_qr``: the two phases."""

    lower: float
    z: Optional[torch.Tensor]
    rows: int
    seconds_jacobian: float
    seconds_qr: float


def subset_bytes(rows: int, p: int) -> int:
    """Bytes of the QR route: [J_S, Y_S] (rows × (p + 1)) and R₁ (p × p), float64."""
    return 8 * (rows * (p + 1) + p * p)


def subset_lower_bound(model: nn.Module, x: torch.Tensor, Y: torch.Tensor, indices: torch.Tensor,
                       params: ParamSpec = None, bn_mode: Optional[str] = None, dtype: torch.dtype = F64,
                       block_samples: int = 64) -> SubsetBound:
    """r ≥ |R[p, p]|/‖Y‖ from the QR factorisation of [J_S, Y_S] (module docstring); J_S built by sample blocks.

    Args:
        x: inputs (n, ...); Y: stacked targets (n·k,), sample-major; indices: the samples S.
    """
    if bn_mode not in PER_SAMPLE_BN_MODES:
        raise InputError(f"bn_mode={bn_mode!r} is a function of the whole batch, so a subset of samples is a "
                         f"different function; use bn_mode='eval' for subset bounds")
    start = time.perf_counter()
    k = Y.numel() // x.shape[0]
    Yk = Y.reshape(-1, k).to(F64)
    A: Optional[np.ndarray] = None
    row = 0
    for lo in range(0, len(indices), block_samples):
        sel = indices[lo:lo + block_samples]
        Jb = jacobian(model, x[sel.to(x.device)], params=params, bn_mode=bn_mode, dtype=dtype).to(F64).cpu()
        if not torch.isfinite(Jb).all():
            raise NonFiniteError(f"J contains NaN or inf on samples {sel[:5].tolist()}...; the model is not "
                                 f"finite-differentiable there (check its parameters and these inputs)")
        if A is None:
            A = np.empty((len(indices) * k, Jb.shape[1] + 1), dtype=np.float64, order="F")
        A[row:row + Jb.shape[0], :-1] = Jb.numpy()
        A[row:row + Jb.shape[0], -1] = Yk[sel.to(Yk.device)].reshape(-1).cpu().numpy()
        row += Jb.shape[0]
    seconds_jacobian = time.perf_counter() - start
    m, p = A.shape[0], A.shape[1] - 1
    y_s = float(np.linalg.norm(A[:, -1]))
    log.info("subset bound: [J_S, Y_S] (%d x %d) built in %.0f s; QR factorisation", m, p + 1, seconds_jacobian)
    start = time.perf_counter()
    lwork, _ = dgeqrf_lwork(m, p + 1)
    qr, _tau, _work, info = dgeqrf(A, lwork=int(lwork), overwrite_a=1)
    if info != 0:  # pragma: no cover - LAPACK argument error
        raise NonFiniteError(f"LAPACK dgeqrf failed with info={info}")
    distance = abs(float(qr[p, p])) if m > p else 0.0
    lower = max(distance - m * EPS * y_s, 0.0) / float(Y.norm())
    diag = np.abs(np.diag(qr[:p, :p]))
    z = None
    if p and diag.min() > 0 and math.isfinite(float(diag.min())):
        with np.errstate(all="ignore"):
            coef = solve_triangular(qr[:p, :p], qr[:p, p], lower=False, check_finite=False)
        if np.all(np.isfinite(coef)):
            z = torch.from_numpy(np.ascontiguousarray(coef))
    return SubsetBound(lower=lower, z=z, rows=m, seconds_jacobian=seconds_jacobian,
                       seconds_qr=time.perf_counter() - start)
