"""The Gram matrices of J without forming J: ``Jᵀ J`` (p × p) over sample blocks, and ``J Jᵀ`` (the empirical NTK).

``JᵀJ = Σ_b J_bᵀ J_b`` where J_b holds the rows of a block of samples (sample-major rows, so a block of
samples is a contiguous block of rows). :func:`column_gram` computes each J_b with the engine's
:func:`~dynamics.engine.jacobian.jacobian` on that block alone and adds J_bᵀJ_b into a float64 p × p
accumulator (BLAS ``dsyrk``: half the flops of a general product), together with ``JᵀY`` and ``‖Y‖²``.
Peak memory: the p × p accumulator plus one block of rows (``block_rows · p`` numbers). It needs a per-sample
function (no BatchNorm in ``"batch"`` or ``"frozen"`` mode, whose statistics depend on the whole batch).

:func:`row_gram` is ``J Jᵀ`` (nk × nk, sample-major) from :func:`dynamics.ntk`, which never forms J either.

>>> import torch, torch.nn as nn
>>> _ = torch.manual_seed(0)
>>> net = nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 2)).double()
>>> x, Y = torch.randn(7, 3, dtype=torch.float64), torch.randn(14, dtype=torch.float64)
>>> from dynamics.engine.jacobian import jacobian
>>> J = jacobian(net, x)
>>> acc = column_gram(net, x, Y, block_samples=3)
>>> bool(torch.allclose(acc.gram, J.T @ J, atol=1e-13) and torch.allclose(acc.jt_y, J.T @ Y, atol=1e-13))
True
"""

from __future__ import annotations

import math
import time
import logging
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from scipy.linalg import blas
from torch import nn

from dynamics.engine.jacobian import jacobian
from dynamics.engine.ntk import ntk
from dynamics.engine.parameters import ParamSpec
from dynamics.errors import InputError, NonFiniteError

__all__ = ["GramAccumulation", "column_gram", "row_gram", "PER_SAMPLE_BN_MODES"]

log = logging.getLogger(__name__)

F64 = torch.float64
PER_SAMPLE_BN_MODES = (None, "eval")


@dataclass
class GramAccumulation:
    """JᵀJ (p × p, float64), JᵀY (p,), ‖Y‖², the rows seen and the seconds spent."""

    gram: torch.Tensor
    jt_y: torch.Tensor
    y_norm2: float
    rows: int
    seconds: float


def column_gram(model: nn.Module, x: torch.Tensor, Y: torch.Tensor, params: ParamSpec = None,
                bn_mode: Optional[str] = None, dtype: torch.dtype = F64, block_samples: int = 64,
                indices: Optional[torch.Tensor] = None) -> GramAccumulation:
    """Accumulate JᵀJ and JᵀY over blocks of ``block_samples`` samples (J never formed).

    Args:
        x: inputs (n, ...); Y: stacked targets (n·k,), sample-major, float64.
        indices: the samples to use (a subset S; default all), in this order.
        block_samples: samples per block; J_b has ``block_samples·k`` rows.

    Raises:
        InputError: a BatchNorm mode whose statistics depend on the batch; NonFiniteError: J is not finite
        on some block (named).
    """
    if bn_mode not in PER_SAMPLE_BN_MODES:
        raise InputError(f"bn_mode={bn_mode!r} normalises with the statistics of the whole batch, so J cannot be "
                         f"accumulated over sample blocks; use bn_mode='eval', or method='dense' on a subset")
    start = time.perf_counter()
    idx = torch.arange(x.shape[0]) if indices is None else indices
    G: Optional[np.ndarray] = None
    c: Optional[torch.Tensor] = None
    k = Y.numel() // x.shape[0]
    y_norm2, rows = 0.0, 0
    report_every = max(1, len(idx) // 10)
    for lo in range(0, len(idx), block_samples):
        if lo // report_every != (lo + block_samples) // report_every:
            log.info("JᵀJ: %d of %d samples accumulated, %.0f s", lo, len(idx), time.perf_counter() - start)
        sel = idx[lo:lo + block_samples]
        Jb = jacobian(model, x[sel.to(x.device)], params=params, bn_mode=bn_mode, dtype=dtype).to(F64)
        if not torch.isfinite(Jb).all():
            raise NonFiniteError(f"J contains NaN or inf on samples {sel[:5].tolist()}...; the model is not "
                                 f"finite-differentiable there (check its parameters and these inputs)")
        yb = Y.reshape(-1, k)[sel.to(Y.device)].reshape(-1).to(Jb)
        Jn = np.ascontiguousarray(Jb.cpu().numpy())
        if G is None:
            G = np.zeros((Jn.shape[1], Jn.shape[1]), dtype=np.float64, order="F")
            c = torch.zeros(Jn.shape[1], dtype=F64)
        # Jn is C-ordered (rows, p), i.e. Fortran-ordered Jnᵀ (p, rows): dsyrk(A = Jnᵀ) adds Jnᵀ Jn to G
        G = blas.dsyrk(1.0, Jn.T, beta=1.0, c=G, trans=0, lower=0, overwrite_c=1)
        c += (Jb.T @ yb).cpu()
        y_norm2 += float(yb @ yb)
        rows += Jn.shape[0]
    upper = np.triu(G)
    G = torch.from_numpy(upper + np.triu(upper, 1).T)
    return GramAccumulation(gram=G, jt_y=c, y_norm2=y_norm2, rows=rows, seconds=time.perf_counter() - start)


def row_gram(model: nn.Module, x, params: ParamSpec = None, bn_mode: Optional[str] = None,
             dtype: torch.dtype = F64, memory_budget: Optional[int] = None) -> torch.Tensor:
    """J Jᵀ as an (n·k, n·k) float64 matrix, sample-major, from :func:`dynamics.ntk` (J never formed)."""
    K = ntk(model, x, params=params, bn_mode=bn_mode, dtype=dtype, memory_budget=memory_budget)
    n, _, k, _ = K.shape
    K = K.permute(0, 2, 1, 3).reshape(n * k, n * k).to(F64)
    if not torch.isfinite(K).all():
        raise NonFiniteError("the NTK J Jᵀ contains NaN or inf; the Jacobian at these parameters is not finite")
    return K


def gram_bytes(size: int) -> int:
    """Bytes for diagonalising a float64 size × size Gram: the matrix, its eigenvectors and LAPACK's workspace."""
    return 3 * size * size * 8


def block_samples_for(k: int, p: int, budget: int) -> int:
    """Samples per block so that one block of J (float64) plus its autograd intermediates (~4×) fits ``budget``."""
    return int(max(1, min(4096, budget // max(1, 4 * k * p * 8))))


def minimum_subset(p: int, k: int) -> int:
    """The smallest |S| with |S|·k > p, where the subset lower bound can be positive: ⌊p/k⌋ + 1."""
    return p // k + 1


def default_subset(n: int, p: int, k: int) -> int:
    """1.5× the minimum (so J_S is clearly tall), capped at n."""
    return int(min(n, math.ceil(1.5 * minimum_subset(p, k))))
