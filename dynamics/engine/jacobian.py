"""The Jacobian J = ∂f_X/∂θ_S as a dense matrix (:func:`jacobian`) or a matrix-free operator (:class:`JacobianOperator`).

Conventions (shared by the whole toolkit):

* rows are sample-major: row ``i*k + c`` is output ``c`` of sample ``i`` (shape ``(n*k, p)``);
* columns follow ``model.named_parameters()`` restricted to ``params``, each tensor flattened row-major;
* ``dtype=torch.float64`` computes on a float64 copy of the model; the model itself is never modified
  (parameters, buffers -- BatchNorm running statistics included --, training flags and dtype);
* BatchNorm in training mode requires ``bn_mode`` (see :mod:`dynamics.engine.batchnorm`).

>>> import torch, torch.nn as nn
>>> _ = torch.manual_seed(0)
>>> net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)).double()
>>> x = torch.randn(5, 3, dtype=torch.float64)
>>> J = jacobian(net, x)
>>> J.shape                       # (n*k, p) = (5*2, 3*8+8+8*2+2)
torch.Size([10, 50])
>>> op = JacobianOperator(net, x)
>>> v, u = torch.randn(50, dtype=torch.float64), torch.randn(10, dtype=torch.float64)
>>> bool(torch.allclose(op @ v, J @ v) and torch.allclose(op.T @ u, J.T @ u))
True
"""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator
from torch import nn
from torch.func import jacrev, jvp, vjp, vmap

from dynamics.engine.forward_mode import forward_mode_refusal, reverse_jvp
from dynamics.engine.memory import DEFAULT_WORKSPACE, Budget, check_budget
from dynamics.engine.parameters import ParamSpec
from dynamics.engine.precision import exact_matmul
from dynamics.engine.stacked import StackedFunction
from dynamics.errors import InputError
from dynamics.inputs import as_vectors

__all__ = ["jacobian", "JacobianOperator", "jacobian_rows"]

log = logging.getLogger(__name__)


def jacobian(model: nn.Module, x, params: ParamSpec = None, bn_mode: Optional[str] = None,
             dtype: Optional[torch.dtype] = None, *, memory_budget: Optional[int] = None) -> torch.Tensor:
    """The dense Jacobian of the stacked outputs, shape ``(n*k, p)``.

    Args:
        model: any ``nn.Module`` mapping a batch ``x`` (samples along dim 0) to outputs ``(n, ...)``;
            the trailing output dimensions are flattened to ``k``.
        x: inputs ``(n, ...)``; floating inputs are cast to the compute dtype.
        params: which parameters form the columns (see :mod:`dynamics.engine.parameters`).
        bn_mode: ``"eval" | "batch" | "frozen"``; required when a BatchNorm layer is in training mode.
        dtype: compute dtype (default: the model's). ``torch.float64`` for checks that decide true/false.
        memory_budget: total bytes the call may allocate, J included (see :mod:`dynamics.engine.memory`); a J
            that cannot fit raises :class:`~dynamics.errors.MemoryBudgetError` (use :class:`JacobianOperator` or
            :func:`dynamics.ntk`).

    Returns:
        J with ``J[i*k + c, :] = ∂f_c(x_i)/∂θ_S``.
    """
    check_budget(memory_budget)
    sf = StackedFunction(model, x, params, bn_mode, dtype)
    return jacobian_of(sf, memory_budget)


def jacobian_of(sf: StackedFunction, memory_budget: Optional[int] = None) -> torch.Tensor:
    """The dense Jacobian of a prepared :class:`StackedFunction` (see :func:`jacobian`)."""
    mem = Budget(memory_budget, sf.n * sf.k * sf.p * sf.itemsize, f"the dense Jacobian ({sf.n * sf.k} x {sf.p})",
                 "use JacobianOperator (matrix-free J·v, Jᵀ·u) or dynamics.ntk, which never forms J",
                 fixed_bytes=sf.private_bytes)
    budget = mem.workspace
    # per sample: its k rows twice (jacrev's per-parameter blocks, then their concatenation) and activations
    per_sample = sf.itemsize * sf.k * (2 * sf.p + 3 * sf.activation_numel / sf.n)
    smallest = per_sample if sf.per_sample else sf.itemsize * (2 * sf.p + 3 * sf.activation_numel + sf.n * sf.k)
    if budget < smallest:
        raise mem.too_small("jacobian", smallest, "one sample" if sf.per_sample else "one row")
    J = torch.empty(sf.n * sf.k, sf.p, dtype=sf.dtype, device=sf.device)
    with exact_matmul():
        if sf.per_sample:
            block = int(max(1, min(sf.n, budget // max(per_sample, 1))))
            for sl in sf.sample_blocks(block):
                J[sl.start * sf.k: sl.stop * sf.k] = per_sample_jacobian(sf, sl)
        else:
            J.copy_(jacobian_rows(sf, slice(0, sf.n), torch.arange(sf.n * sf.k, device=sf.device), budget))
    return J


def per_sample_jacobian(sf: StackedFunction, sl: slice) -> torch.Tensor:
    """Rows of J for the samples in ``sl`` via ``vmap(jacrev)`` over samples; ``((stop-start)*k, p)``.

    Only valid for per-sample functions (BatchNorm ``"eval"``/``"frozen"`` or none).
    """
    def f_single(theta, xi):
        return sf.evaluate(theta, xi.unsqueeze(0))

    try:
        jac = vmap(jacrev(f_single), in_dims=(None, 0))(sf.theta, sf.x[sl])
    except (RuntimeError, NotImplementedError) as exc:  # an op without a batching rule: rows by vjp instead
        log.debug("vmap over samples failed (%s); computing rows by vjp", exc)
        rows = torch.arange(0, (sl.stop - sl.start) * sf.k, device=sf.device)
        return jacobian_rows(sf, sl, rows, DEFAULT_WORKSPACE)
    B = sl.stop - sl.start
    return sf.flatten(jac).reshape(B * sf.k, sf.p)


def jacobian_rows(sf: StackedFunction, sl: slice, rows: torch.Tensor, budget: int) -> torch.Tensor:
    """Rows ``rows`` (indices into the block's flat outputs) of the Jacobian of block ``sl``, by vmapped VJPs.

    Works for every BatchNorm mode: the vmap runs over cotangent vectors, never over samples.
    """
    fb = sf.block_function(sl)
    out, vjp_fn = vjp(fb, sf.theta)
    m = len(rows)
    per_col = sf.itemsize * (sf.p + 3 * sf.activation_numel * (sl.stop - sl.start) / sf.n + out.numel())
    chunk = int(max(1, min(m, budget // max(per_col, 1))))
    result = torch.empty(m, sf.p, dtype=sf.dtype, device=sf.device)
    for start in range(0, m, chunk):
        idx = rows[start:start + chunk]
        cot = torch.zeros(len(idx), out.numel(), dtype=out.dtype, device=out.device)
        cot[torch.arange(len(idx)), idx] = 1
        (grads,) = vmap(vjp_fn)(cot)
        result[start:start + len(idx)] = sf.flatten(grads)
    return result


class JacobianOperator:
    """J as a linear operator: ``op @ v`` = J·v (forward mode), ``op.T @ u`` = Jᵀ·u (reverse mode), J never formed.

    Args:
        model, x, params, bn_mode, dtype: as for :func:`jacobian`.
        batch_size: samples per block for per-sample functions (memory control); default from
            ``memory_budget``. Ignored in ``bn_mode="batch"``, where the batch is one function.
        memory_budget: total bytes one product may allocate, its result included (see
            :mod:`dynamics.engine.memory`); default: the result plus 1 GiB.

    Shapes: ``op.shape == (n*k, p)``; ``op @ v`` takes ``(p,)`` or ``(p, m)``; ``op.T @ u`` takes ``(n*k,)`` or
    ``(n*k, m)``. Inputs may be tensors or numpy arrays; results are tensors in the operator's dtype.
    ``op.to_scipy()`` gives a ``scipy.sparse.linalg.LinearOperator`` for ``lsqr``/``eigsh``/``svds``.

    Attributes:
        param_names: selected parameter names, in column order.
        theta: the selected parameters as a flat ``(p,)`` tensor (θ_S).
        outputs: f(x, θ) as ``(n, k)``.
    """

    def __init__(self, model: nn.Module, x, params: ParamSpec = None, bn_mode: Optional[str] = None,
                 dtype: Optional[torch.dtype] = None, *, batch_size: Optional[int] = None,
                 memory_budget: Optional[int] = None):
        self.memory_budget = check_budget(memory_budget)
        self._sf = StackedFunction(model, x, params, bn_mode, dtype)
        sf = self._sf
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        if batch_size is None:
            per_sample = sf.itemsize * 4 * max(sf.activation_numel / sf.n, 1)
            room = self._workspace(2 * sf.p * sf.itemsize)
            batch_size = int(max(1, min(sf.n, room // per_sample)))
        self.batch_size = batch_size
        self._blocks = sf.sample_blocks(batch_size)
        self._forward_mode: Optional[bool] = None  # decided at the first product

    # ------------------------------------------------------------------ facts
    @property
    def shape(self) -> tuple[int, int]:
        return (self._sf.n * self._sf.k, self._sf.p)

    @property
    def dtype(self) -> torch.dtype:
        return self._sf.dtype

    @property
    def device(self) -> torch.device:
        return self._sf.device

    @property
    def n(self) -> int:
        return self._sf.n

    @property
    def k(self) -> int:
        return self._sf.k

    @property
    def p(self) -> int:
        return self._sf.p

    @property
    def param_names(self) -> list[str]:
        return list(self._sf.names)

    @property
    def theta(self) -> torch.Tensor:
        return self._sf.theta_flat

    @property
    def outputs(self) -> torch.Tensor:
        return self._sf.outputs

    @property
    def bn_mode(self) -> Optional[str]:
        return self._sf.bn_mode

    @property
    def stacked(self) -> StackedFunction:
        """The underlying f_X(θ_S) (for the NTK algorithms and the checks)."""
        return self._sf

    def __repr__(self) -> str:
        return (f"JacobianOperator(shape={self.shape}, n={self.n}, k={self.k}, dtype={self.dtype}, "
                f"bn_mode={self.bn_mode!r}, params={len(self.param_names)} tensors)")

    # ------------------------------------------------------------------ products
    def _matrix(self, v, rows: int, what: str) -> tuple[torch.Tensor, bool]:
        return as_vectors(v, rows, what, self.dtype, self.device)

    def _workspace(self, result_bytes: float) -> float:
        return Budget(self.memory_budget, result_bytes, "the product", fixed_bytes=self._sf.private_bytes).workspace

    def _chunk(self, m: int, per_col_numel: float, result_bytes: float) -> int:
        room = self._workspace(result_bytes)
        return int(max(1, min(m, room // max(self._sf.itemsize * per_col_numel, 1))))

    def matvec(self, v) -> torch.Tensor:
        """J·v for ``v`` of shape ``(p,)`` or ``(p, m)``; returns ``(n*k,)`` or ``(n*k, m)``."""
        sf = self._sf
        V, vector = self._matrix(v, sf.p, "v")
        m = V.shape[1]
        tangents = sf.unflatten(V.T.contiguous())  # name -> (m, *shape)
        out = torch.empty(sf.n * sf.k, m, dtype=self.dtype, device=self.device)
        if self._forward_mode is None:
            self._forward_mode = not forward_mode_refusal(sf)
        with exact_matmul():
            for sl in self._blocks:
                fb = sf.block_function(sl)

                def one(t, fb=fb):
                    if self._forward_mode:
                        return jvp(fb, (sf.theta,), (t,))[1]
                    return reverse_jvp(fb, sf.theta, t)  # no forward-mode derivative: reverse over reverse

                B = sl.stop - sl.start
                chunk = self._chunk(m, 3 * sf.activation_numel * B / sf.n + B * sf.k, out.numel() * sf.itemsize)
                res = vmap(one, chunk_size=chunk)(tangents)  # (m, B*k)
                out[sl.start * sf.k: sl.stop * sf.k] = res.T
        return out[:, 0] if vector else out

    def rmatvec(self, u) -> torch.Tensor:
        """Jᵀ·u for ``u`` of shape ``(n*k,)`` or ``(n*k, m)``; returns ``(p,)`` or ``(p, m)``."""
        sf = self._sf
        U, vector = self._matrix(u, sf.n * sf.k, "u")
        m = U.shape[1]
        acc = torch.zeros(m, sf.p, dtype=self.dtype, device=self.device)
        with exact_matmul():
            for sl in self._blocks:
                _, vjp_fn = vjp(sf.block_function(sl), sf.theta)
                B = sl.stop - sl.start
                chunk = self._chunk(m, sf.p + 3 * sf.activation_numel * B / sf.n, acc.numel() * sf.itemsize)
                (grads,) = vmap(vjp_fn, chunk_size=chunk)(U[sl.start * sf.k: sl.stop * sf.k].T.contiguous())
                acc += sf.flatten(grads)
        return acc[0] if vector else acc.T

    def __matmul__(self, v) -> torch.Tensor:
        return self.matvec(v)

    @property
    def T(self) -> "_AdjointJacobianOperator":
        """The adjoint Jᵀ: ``op.T @ u`` = Jᵀ·u; ``op.T.T is op``."""
        return _AdjointJacobianOperator(self)

    def dense(self, memory_budget: Optional[int] = None) -> torch.Tensor:
        """Materialise J, shape ``(n*k, p)`` (small problems and tests)."""
        return jacobian_of(self._sf, memory_budget)

    def to_scipy(self):
        """A ``scipy.sparse.linalg.LinearOperator`` of J (numpy in, numpy out; float64 or float32)."""
        np_dtype = np.float64 if self.dtype == torch.float64 else np.float32

        def to_np(t: torch.Tensor) -> np.ndarray:
            return t.detach().cpu().numpy().astype(np_dtype, copy=False)

        return LinearOperator(
            shape=self.shape, dtype=np_dtype,
            matvec=lambda v: to_np(self.matvec(np.asarray(v).reshape(-1))),
            rmatvec=lambda u: to_np(self.rmatvec(np.asarray(u).reshape(-1))),
            matmat=lambda V: to_np(self.matvec(np.asarray(V))),
            rmatmat=lambda U: to_np(self.rmatvec(np.asarray(U))),
        )


class _AdjointJacobianOperator:
    """Jᵀ as an operator; ``@`` applies Jᵀ, ``.T`` returns the original operator."""

    def __init__(self, op: JacobianOperator):
        self._op = op

    @property
    def shape(self) -> tuple[int, int]:
        return (self._op.shape[1], self._op.shape[0])

    @property
    def T(self) -> JacobianOperator:
        return self._op

    def __matmul__(self, u) -> torch.Tensor:
        return self._op.rmatvec(u)

    def __repr__(self) -> str:
        return f"adjoint of {self._op!r}"
