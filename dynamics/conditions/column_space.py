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
import scipy.linalg
import torch
from torch import nn

from dynamics.conditions.guard import guarded
from dynamics.engine.parameters import ParamSpec
from dynamics.engine.jacobian import jacobian
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


def _as_matrix(J: Array, what: str) -> torch.Tensor:
    if isinstance(J, np.ndarray):
        J = torch.from_numpy(np.ascontiguousarray(J))
    if not isinstance(J, torch.Tensor):
        raise InputError(f"{what} must be a torch.Tensor or numpy array, got {type(J).__name__}")
    if J.dim() != 2 or J.shape[0] == 0 or J.shape[1] == 0:
        raise InputError(f"{what} must be a non-empty 2-D matrix, got shape {tuple(J.shape)}")
    if not J.is_floating_point():
        raise InputError(f"{what} must be a real floating matrix, got dtype {J.dtype}")
    if not torch.isfinite(J).all():
        raise InputError(f"{what} contains NaN or inf; the Jacobian at these parameters is not finite "
                             f"(check the model's parameters and inputs for NaN/inf, or lower the learning rate "
                             f"of the run that produced them)")
    return J


def _eigh(G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (ascending) and eigenvectors of a symmetric float64 G. On the CPU LAPACK's divide and conquer
    (``dsyevd``) through SciPy on a copy it may overwrite: about 2× faster than ``torch.linalg.eigh`` and one
    p × p workspace less at p ≈ 20,000."""
    if G.device.type != "cpu":
        return torch.linalg.eigh(G)
    lam, vec = scipy.linalg.eigh(G.numpy().copy(order="F"), overwrite_a=True, check_finite=False, driver="evd")
    return torch.from_numpy(lam), torch.from_numpy(vec)


def _rank_rule(sv: torch.Tensor, m: int, p: int, stored: torch.dtype, method: str,
               rtol: Optional[float]) -> tuple[int, float, float]:
    """(rank, absolute threshold, relative threshold): the one numerical-rank rule (module docstring)."""
    sigma_max = float(sv[0])
    resolution = default_rank_rtol(m, p, stored, method)
    rel = resolution if rtol is None else rtol
    if rtol is not None and rtol < resolution:
        log.warning("rtol=%.3g is below what the %s route resolves for a %dx%d %s matrix (%.3g): the rank may "
                    "count rounding noise as signal", rtol, method, m, p, stored, resolution)
    tol = rel * sigma_max
    return (int((sv > tol).sum()) if sigma_max > 0 else 0), float(tol), float(rel)


@dataclass
class ColumnSpace:
    """Col J for a Jacobian J (m × p, m = n·k): numerical rank, singular values, projector; the project's one
    projector / residual / rank rule (every check, probe and certificate builds it here).

    Attributes:
        basis: U, (m, r) float64 with orthonormal columns spanning the numerical column space; None when
            built by :meth:`from_gram` from ``JᵀJ`` alone (then use :meth:`relative_residual_from_adjoint`).
        rank: r, the number of singular values above ``tolerance``.
        singular_values: all min(m, p) singular values of J, descending, float64 (those below the Gram
            resolution limit, see the module docstring, are not accurate).
        sigma_max: the largest singular value (0.0 for J = 0).
        sigma_min: σ_r, the smallest singular value counted in the rank ("smallest non-zero"); None if r = 0.
        tolerance: the absolute threshold on σ that decided the rank.
        rtol: the relative threshold used (tolerance / σ_max), whether given or the default.
        shape: (m, p).
        route: ``"eigh(JJt)"`` or ``"eigh(JtJ)"`` (the Gram matrix diagonalised) or ``"svd"``.
        right: V_r, (p, r) float64, the leading right singular vectors; only for the ``JᵀJ`` routes.
    """

    basis: Optional[torch.Tensor]
    rank: int
    singular_values: torch.Tensor
    sigma_max: float
    sigma_min: Optional[float]
    tolerance: float
    rtol: float
    shape: tuple[int, int]
    route: str
    right: Optional[torch.Tensor] = None

    @property
    def full_row_rank(self) -> bool:
        """rank = m (= n·k): P = I, so every vector, Y included, lies in Col J ("trivially aligned")."""
        return self.rank == self.shape[0]

    @property
    def accuracy(self) -> float:
        """The stated floating-point accuracy of a relative residual computed from this column space.

        Gram routes: ``max(m, p)·eps·(σ_max/σ_r)²`` (eigenvectors of kept directions are accurate to
        eps·σ_max²/σ_i², module docstring); SVD: ``max(m, p)·eps·σ_max/σ_r``; 0 when the rank is 0 (P = 0
        exactly); ``max(m, p)·eps`` at full row rank (all m directions kept: P = I to rounding, whatever σ_r).
        """
        if not self.rank or not self.sigma_min:
            return 0.0
        eps = max(self.shape) * torch.finfo(F64).eps
        if self.rank == self.shape[0]:
            # full row rank: every left singular vector is kept, so P = U Uᵀ with U square and orthonormal to
            # rounding, i.e. P = I up to ~max(m, p)·eps whatever the conditioning
            return eps
        ratio = self.sigma_max / self.sigma_min
        return eps * ratio if self.route == "svd" else eps * ratio * ratio

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
        J = _as_matrix(J, "J")
        stored = J.dtype
        J = J.detach().to(F64)
        m, p = J.shape
        wide = m <= p
        if method == "svd":
            left, sv, _ = torch.linalg.svd(J, full_matrices=False)
            rank, tol, rel = _rank_rule(sv, m, p, stored, "svd", rtol)
            return cls(basis=left[:, :rank].contiguous(), rank=rank, singular_values=sv,
                       sigma_max=float(sv[0]), sigma_min=float(sv[rank - 1]) if rank else None, tolerance=tol,
                       rtol=rel, shape=(m, p), route="svd")
        G = J @ J.T if wide else J.T @ J
        space = cls.from_gram(G, "rows" if wide else "columns", (m, p), stored, rtol)
        if not wide:                                     # basis J V_r Σ_r⁻¹, re-orthonormalised
            space.basis = (torch.linalg.qr(J @ space.right, mode="reduced").Q if space.rank
                           else torch.zeros(m, 0, dtype=F64, device=J.device))
        return space

    @classmethod
    def from_gram(cls, G: Array, side: str, shape: tuple[int, int], stored: torch.dtype = F64,
                  rtol: Optional[float] = None) -> "ColumnSpace":
        """Col J from a Gram matrix of J, with the same rank rule as :meth:`from_jacobian` (``"gram"``).

        Args:
            G: ``J Jᵀ`` (m × m, ``side="rows"``: the empirical NTK, gives the basis U) or ``Jᵀ J`` (p × p,
                ``side="columns"``: gives V_r, so projections need Jᵀv, see
                :meth:`relative_residual_from_adjoint`), accumulated in float64.
            shape: (m, p) of J; stored: the dtype J was computed in (it enters the default threshold).

        >>> J = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
        >>> cs = ColumnSpace.from_gram(J.T @ J, "columns", (3, 2))
        >>> y = torch.tensor([3.0, 4.0, 12.0], dtype=torch.float64)      # distance 12 from Col J, |y| = 13
        >>> cs.rank, round(cs.relative_residual_from_adjoint(float(y @ y), J.T @ y), 12)
        (2, 0.923076923077)
        """
        rtol = check_positive_tolerance(rtol, "rtol")
        if side not in ("rows", "columns"):
            raise InputError(f"side must be 'rows' (G = J Jᵀ) or 'columns' (G = Jᵀ J), got {side!r}")
        G = _as_matrix(G, "G").detach().to(F64)
        m, p = shape
        size = m if side == "rows" else p
        if G.shape != (size, size):
            raise InputError(f"a {side} Gram of a {m} x {p} Jacobian must be {size} x {size}, got {tuple(G.shape)}")
        if not torch.equal(G, G.T):
            G = 0.5 * (G + G.T)
        lam, vec = _eigh(G)
        lam, vec = lam.flip(0), vec.flip(1)              # descending
        sv = lam.clamp_min(0.0).sqrt()
        rank, tol, rel = _rank_rule(sv, m, p, stored, "gram", rtol)
        kept = vec[:, :rank].contiguous()
        return cls(basis=kept if side == "rows" else None, rank=rank, singular_values=sv[: min(m, p)],
                   sigma_max=float(sv[0]), sigma_min=float(sv[rank - 1]) if rank else None, tolerance=tol,
                   rtol=rel, shape=(m, p), route="eigh(JJt)" if side == "rows" else "eigh(JtJ)",
                   right=None if side == "rows" else kept)

    def relative_residual_from_adjoint(self, v_norm2: float, jt_v: Array) -> float:
        """‖(I − P)v‖/‖v‖ from ‖v‖² and Jᵀv alone (the ``JᵀJ`` route, J never formed).

        ‖Pv‖² = ‖Σ_r⁻¹ V_rᵀ Jᵀ v‖², so r² = 1 − ‖Σ_r⁻¹ V_rᵀ Jᵀv‖² / ‖v‖² (clipped at 0; its absolute error is
        about :attr:`accuracy`). 0.0 for v = 0.
        """
        if self.right is None:
            raise MethodError("this column space holds a basis U, not V_r; use relative_residual(v)")
        if v_norm2 == 0.0:
            return 0.0
        c = _as_vectors(jt_v, self.shape[1], "Jᵀv").to(self.right.device)
        coef = (self.right.T @ c) / self.singular_values[: self.rank].to(c).unsqueeze(-1 if c.dim() == 2 else 0)
        return math.sqrt(max(1.0 - float(coef.pow(2).sum()) / v_norm2, 0.0))

    def least_squares(self, jt_v: Array) -> torch.Tensor:
        """z = V_r Σ_r⁻² V_rᵀ Jᵀv, the minimum-norm minimiser of ‖J z − v‖ within the kept directions (``JᵀJ``
        route): any z gives the rigorous upper bound ‖v − J z‖ ≥ dist(v, Col J)."""
        if self.right is None:
            raise MethodError("least_squares needs the JᵀJ route (ColumnSpace.from_gram(..., 'columns'))")
        c = _as_vectors(jt_v, self.shape[1], "Jᵀv").to(self.right.device)
        return self.right @ ((self.right.T @ c) / self.singular_values[: self.rank].to(c).pow(2))

    # ------------------------------------------------------------------ projector
    def _need_basis(self) -> None:
        if self.basis is None:
            raise MethodError("this column space was built from JᵀJ without J, so it has no basis U to project "
                              "with; use relative_residual_from_adjoint(‖v‖², Jᵀv), or from_jacobian(J)")

    def project(self, v: Array) -> torch.Tensor:
        """P v = U Uᵀ v for ``v`` of shape (m,) or (m, q); float64."""
        self._need_basis()
        V = _as_vectors(v, self.shape[0]).to(self.basis.device)
        return self.basis @ (self.basis.T @ V)

    def complement(self, v: Array) -> torch.Tensor:
        """(I − P) v, the part of ``v`` orthogonal to Col J; float64, same shape as ``v``."""
        self._need_basis()
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


@guarded
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
    rtol = check_positive_tolerance(rtol, "rtol")
    if method not in ("gram", "svd"):
        raise MethodError(f"unknown method {method!r} for column_space; choose 'gram' or 'svd'")
    J = jacobian(model, x, params=params, bn_mode=bn_mode, dtype=dtype)
    return ColumnSpace.from_jacobian(J, rtol=rtol, method=method)
