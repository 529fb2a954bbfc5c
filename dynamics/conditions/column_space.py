"""The column space Col J of a Jacobian, its numerical rank and the orthogonal projector P onto it.

``ColumnSpace.from_jacobian(J)`` diagonalises the smaller Gram matrix of J (``J Jᵀ`` when ``m = n·k ≤ p``,
else ``Jᵀ J``) with ``torch.linalg.eigh`` in float64. The eigenvalues of either Gram are the squared singular
values σ_i² of J, so singular values are ``σ_i = sqrt(max(λ_i, 0))`` (tiny negative eigenvalues from rounding
are clipped to 0).

Numerical rank. ``rank = #{i : σ_i > tol}`` with

* ``tol = rtol · σ_max`` when ``rtol`` is given;
* otherwise ``tol = max(max(m, p) · eps(J.dtype), sqrt(max(m, p) · eps(float64))) · σ_max``.

The first term is ``numpy.linalg.matrix_rank``'s convention for a matrix stored in ``J.dtype``. The second is
the resolution limit of the Gram route: forming and diagonalising ``J Jᵀ`` perturbs its eigenvalues by about
``max(m, p) · eps · σ_max²``, so an exact zero singular value comes out as ``σ ≈ sqrt(max(m, p) · eps) · σ_max``
(about ``1e-7 · σ_max`` in float64), far above ``max(m, p) · eps · σ_max``. Applying matrix_rank's threshold
to ``σ = sqrt(λ)`` would count that noise as rank (tested in ``tests/test_conditions_column_space.py``); the
default is therefore matrix_rank's convention applied to the Gram's eigenvalues. Singular values below
``sqrt(max(m, p) · eps) · σ_max`` are not resolved by this route; an ``rtol`` smaller than that is honoured but
logged as a warning.

``method="svd"`` diagonalises J itself (``torch.linalg.svd``): a few times slower, resolution about
``max(m, p)·eps·σ_max``, default threshold exactly matrix_rank's ``max(m, p)·eps(J.dtype)·σ_max``. Use it
when singular values between ~1e-14 and ~1e-7 of σ_max matter (exact rank statements on small problems).

Basis. ``basis`` U (m × r, orthonormal columns) holds the leading r left singular vectors: the eigenvectors of
``J Jᵀ`` directly, or ``J V_r Σ_r⁻¹`` in the tall case, re-orthonormalised by a QR factorisation (same span,
orthonormal to rounding), or U of the SVD. ``P = U Uᵀ``.

Accuracy. On the Gram route an eigenvector of a kept direction σ_i is accurate to about
``eps · σ_max² / σ_i²``, so projections are accurate to about ``eps · (σ_max / σ_r)²`` (σ_r the smallest kept
singular value): 1e-12 for a well-conditioned J, but ~1e-6 when σ_r ≈ 1e-5 · σ_max. ``method="svd"`` is
accurate to about ``eps · σ_max / σ_r``; prefer it for ill-conditioned Jacobians.

>>> import torch
>>> _ = torch.manual_seed(0)
>>> J = torch.randn(6, 2, dtype=torch.float64) @ torch.randn(2, 9, dtype=torch.float64)   # rank 2
>>> cs = ColumnSpace.from_jacobian(J)
>>> cs.rank, cs.basis.shape
(2, torch.Size([6, 2]))
>>> v = J @ torch.randn(9, dtype=torch.float64)           # a vector in Col J
>>> cs.relative_residual(v) < 1e-12
True
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import torch
from torch import nn

from dynamics.engine.parameters import ParamSpec
from dynamics.errors import InputError, MethodError

__all__ = ["ColumnSpace", "column_space", "default_rank_rtol", "check_positive_tolerance"]

log = logging.getLogger(__name__)

F64 = torch.float64
Array = Union[torch.Tensor, np.ndarray]


def check_positive_tolerance(value, what: str) -> Optional[float]:
    """``None`` passes through; anything else must be a finite positive real number (InputError otherwise)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise InputError(f"{what} must be a positive number or None, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"{what} must be a finite positive number, got {value!r}; pass e.g. {what}=1e-8 "
                         f"or None for the default")
    return value


def default_rank_rtol(m: int, p: int, dtype: torch.dtype = F64, method: str = "gram") -> float:
    """The default relative rank threshold on σ/σ_max for an m × p matrix stored in ``dtype`` (see module doc).

    ``method="svd"``: numpy.linalg.matrix_rank's ``max(m, p)·eps(dtype)``; ``"gram"``: the larger of that and
    the Gram route's resolution ``sqrt(max(m, p)·eps(float64))``.
    """
    big = max(m, p)
    if method == "svd":
        return big * torch.finfo(dtype).eps
    return max(big * torch.finfo(dtype).eps, math.sqrt(big * torch.finfo(F64).eps))


def _as_vectors(v: Array, m: int, what: str = "v") -> torch.Tensor:
    if isinstance(v, np.ndarray):
        v = torch.from_numpy(np.ascontiguousarray(v))
    if not isinstance(v, torch.Tensor):
        raise InputError(f"{what} must be a torch.Tensor or numpy array, got {type(v).__name__}")
    if v.dim() not in (1, 2) or v.shape[0] != m:
        raise InputError(f"{what} must have shape ({m},) or ({m}, q) to be projected onto the column space of "
                         f"an {m}-row Jacobian, got {tuple(v.shape)}")
    if v.is_complex() or v.dtype == torch.bool:
        raise InputError(f"{what} has dtype {v.dtype}; pass real numbers")
    return v.to(F64)


@dataclass
class ColumnSpace:
    """Col J for a dense J (m × p, m = n·k): orthonormal basis, numerical rank, singular values, projector.

    Attributes:
        basis: U, (m, r) float64 with orthonormal columns spanning the numerical column space.
        rank: r, the number of singular values above ``tolerance``.
        singular_values: all min(m, p) singular values of J, descending, float64 (those below the Gram
            resolution limit, see the module docstring, are not accurate).
        sigma_max: the largest singular value (0.0 for J = 0).
        sigma_min: σ_r, the smallest singular value counted in the rank ("smallest non-zero"); None if r = 0.
        tolerance: the absolute threshold on σ that decided the rank.
        rtol: the relative threshold used (tolerance / σ_max), whether given or the default.
        shape: (m, p).
        route: ``"eigh(JJt)"`` or ``"eigh(JtJ)"`` (the Gram matrix diagonalised) or ``"svd"``.
    """

    basis: torch.Tensor
    rank: int
    singular_values: torch.Tensor
    sigma_max: float
    sigma_min: Optional[float]
    tolerance: float
    rtol: float
    shape: tuple[int, int]
    route: str

    @classmethod
    def from_jacobian(cls, J: Array, rtol: Optional[float] = None, method: str = "gram") -> "ColumnSpace":
        """Build Col J from a dense (m, p) matrix (torch or numpy; computed in float64).

        Args:
            J: the Jacobian, (m, p), real, finite.
            rtol: relative rank threshold on σ/σ_max; None for the default (module docstring).
            method: ``"gram"`` (default: eigh of the smaller Gram, see the module docstring) or ``"svd"``
                (``torch.linalg.svd`` of J itself: a few times slower, but resolves singular values down to
                about ``max(m, p)·eps·σ_max``; its default threshold is exactly numpy.linalg.matrix_rank's,
                ``max(m, p)·eps(J.dtype)·σ_max``).

        Raises:
            InputError: J is not a finite real 2-D array with at least one row and column, rtol is not
                positive, or method is unknown (MethodError).
        """
        rtol = check_positive_tolerance(rtol, "rtol")
        if method not in ("gram", "svd"):
            raise MethodError(f"unknown method {method!r} for ColumnSpace.from_jacobian; choose 'gram' or 'svd'")
        if isinstance(J, np.ndarray):
            J = torch.from_numpy(np.ascontiguousarray(J))
        if not isinstance(J, torch.Tensor):
            raise InputError(f"J must be a torch.Tensor or numpy array, got {type(J).__name__}")
        if J.dim() != 2 or J.shape[0] == 0 or J.shape[1] == 0:
            raise InputError(f"J must be a non-empty 2-D matrix (n*k, p), got shape {tuple(J.shape)}")
        if not J.is_floating_point():
            raise InputError(f"J must be a real floating matrix, got dtype {J.dtype}")
        if not torch.isfinite(J).all():
            raise InputError("J contains NaN or inf; the Jacobian at these parameters is not finite")
        stored = J.dtype
        J = J.detach().to(F64)
        m, p = J.shape
        wide = m <= p
        if method == "svd":
            left, sv, _ = torch.linalg.svd(J, full_matrices=False)
        else:
            G = J @ J.T if wide else J.T @ J
            G = 0.5 * (G + G.T)
            lam, vec = torch.linalg.eigh(G)
            lam, vec = lam.flip(0), vec.flip(1)              # descending
            sv = lam.clamp_min(0.0).sqrt()
        sigma_max = float(sv[0])
        resolution = default_rank_rtol(m, p, stored, method)
        if rtol is None:
            rel = resolution
        else:
            rel = rtol
            if rtol < resolution:
                log.warning("rtol=%.3g is below what the %s route resolves for a %dx%d %s matrix (%.3g): the "
                            "rank may count rounding noise as signal", rtol, method, m, p, stored, resolution)
        tol = rel * sigma_max
        r = int((sv > tol).sum()) if sigma_max > 0 else 0
        if method == "svd":
            U = left[:, :r].contiguous()
        elif wide:
            U = vec[:, :r].contiguous()
        elif r > 0:
            U = torch.linalg.qr(J @ vec[:, :r], mode="reduced").Q
        else:
            U = torch.zeros(m, 0, dtype=F64, device=J.device)
        return cls(basis=U, rank=r, singular_values=sv, sigma_max=sigma_max,
                   sigma_min=float(sv[r - 1]) if r > 0 else None, tolerance=float(tol), rtol=float(rel),
                   shape=(m, p), route="svd" if method == "svd" else ("eigh(JJt)" if wide else "eigh(JtJ)"))

    # ------------------------------------------------------------------ projector
    def project(self, v: Array) -> torch.Tensor:
        """P v = U Uᵀ v for ``v`` of shape (m,) or (m, q); float64."""
        V = _as_vectors(v, self.shape[0]).to(self.basis.device)
        return self.basis @ (self.basis.T @ V)

    def complement(self, v: Array) -> torch.Tensor:
        """(I − P) v, the part of ``v`` orthogonal to Col J; float64, same shape as ``v``."""
        V = _as_vectors(v, self.shape[0]).to(self.basis.device)
        return V - self.basis @ (self.basis.T @ V)

    def residual(self, v: Array) -> float:
        """‖v − P v‖ (absolute; Frobenius norm for (m, q)): the distance from ``v`` to Col J."""
        return float(self.complement(v).norm())

    def relative_residual(self, v: Array) -> float:
        """‖v − P v‖ / ‖v‖; 0.0 for v = 0 (the zero vector lies in every column space)."""
        V = _as_vectors(v, self.shape[0])
        norm = float(V.norm())
        return 0.0 if norm == 0.0 else self.residual(V) / norm

    # ------------------------------------------------------------------ presentation
    def to_dict(self) -> dict:
        """JSON-ready summary (the basis is left out; singular values as a list)."""
        return {"shape": list(self.shape), "rank": self.rank, "sigma_max": self.sigma_max,
                "sigma_min": self.sigma_min, "tolerance": self.tolerance, "rtol": self.rtol, "route": self.route,
                "singular_values": [float(s) for s in self.singular_values]}

    def __str__(self) -> str:
        m, p = self.shape
        smin = "n/a (J = 0)" if self.sigma_min is None else f"{self.sigma_min:.4g}"
        return "\n".join([
            f"ColumnSpace of J ({m} x {p}, via {self.route})",
            f"  rank       {self.rank} of {min(m, p)}",
            f"  sigma_max  {self.sigma_max:.4g}",
            f"  sigma_min  {smin}   (smallest singular value counted in the rank)",
            f"  tolerance  {self.tolerance:.3g}   (= {self.rtol:.3g} · sigma_max)",
        ])


def column_space(model: nn.Module, x, params: ParamSpec = None, bn_mode: Optional[str] = None,
                 dtype: torch.dtype = F64, rtol: Optional[float] = None, method: str = "gram") -> ColumnSpace:
    """Col J(θ) of a model on inputs ``x``: builds the dense J with :func:`dynamics.jacobian`, then
    :meth:`ColumnSpace.from_jacobian`.

    Args:
        model, x, params, bn_mode: as for :func:`dynamics.jacobian` (rows sample-major, so a target matrix
            Y of shape (n, k) is compared as ``Y.reshape(-1)``).
        dtype: compute dtype of J (float64 by default; the eigendecomposition is float64 regardless).
        rtol: relative rank threshold on σ/σ_max; None for the default (module docstring).
        method: ``"gram"`` or ``"svd"`` (see :meth:`ColumnSpace.from_jacobian`).

    >>> import torch, torch.nn as nn
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    >>> cs = column_space(net, torch.randn(5, 3))
    >>> cs.shape, cs.rank                # n*k = 10 rows, p = 26 columns, full row rank
    ((10, 26), 10)
    """
    from dynamics.engine.jacobian import jacobian

    rtol = check_positive_tolerance(rtol, "rtol")
    if method not in ("gram", "svd"):
        raise MethodError(f"unknown method {method!r} for column_space; choose 'gram' or 'svd'")
    J = jacobian(model, x, params=params, bn_mode=bn_mode, dtype=dtype)
    return ColumnSpace.from_jacobian(J, rtol=rtol, method=method)
