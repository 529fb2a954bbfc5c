"""What the checks return: :class:`OnModelReport` and :class:`AlignmentReport`.

Both are dataclasses with a ``__str__`` of a few aligned lines for a person and a JSON-ready ``to_dict()``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Optional

__all__ = ["Candidate", "OnModelReport", "AlignmentReport"]


def _g(value: Optional[float], digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def _json_float(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


@dataclass
class Candidate:
    """One parameter group tried as S by :func:`~dynamics.conditions.on_model.check_on_model_structure`.

    Attributes:
        label: how the group was formed, e.g. ``"module 'fc'"`` or ``"tensor 'fc.weight'"``.
        names: the parameter names in the group (``named_parameters()`` order).
        euler_residual: ‖f_X − J_S θ_S‖ / ‖f_X‖ (absolute when f_X = 0).
        scaling_residual: max over c of ‖f_X(cθ_S) − c f_X(θ_S)‖ / ‖c f_X(θ_S)‖ (absolute when f_X = 0).
        holds: both residuals ≤ rtol.
    """

    label: str
    names: list[str]
    euler_residual: float
    scaling_residual: float
    holds: bool

    @property
    def worst(self) -> float:
        return max(self.euler_residual, self.scaling_residual)


@dataclass
class OnModelReport:
    """Result of the on-model structure check: is f_X(θ) = J_S(θ) θ_S for a parameter group S?

    Attributes:
        holds: whether the assumption holds numerically (both residuals ≤ rtol) for ``subset``.
        subset: S, the parameter names; when ``holds`` is False under ``subset="auto"``, the closest candidate.
        euler_residual, scaling_residual: the residuals for ``subset`` (see :class:`Candidate`).
        scaling_residuals: per scale c, the relative scaling residual.
        rtol: the tolerance both residuals were compared with.
        mode: ``"auto"`` (S searched among parameter groups) or ``"given"``.
        candidates: every group tried, in the order tried (one entry when ``mode == "given"``).
        explanation: one or two sentences saying why it holds or fails.
        n, k, dtype, bn_mode, time_s: samples, outputs per sample, compute dtype, BatchNorm semantics, seconds.
    """

    holds: bool
    subset: list[str]
    euler_residual: float
    scaling_residual: float
    scaling_residuals: dict[float, float]
    rtol: float
    mode: str
    candidates: list[Candidate]
    explanation: str
    n: int
    k: int
    dtype: str
    bn_mode: Optional[str]
    time_s: float

    def to_dict(self) -> dict:
        d = asdict(self)
        d["scaling_residuals"] = {str(c): _json_float(r) for c, r in self.scaling_residuals.items()}
        for key in ("euler_residual", "scaling_residual"):
            d[key] = _json_float(d[key])
        for c in d["candidates"]:
            c["euler_residual"] = _json_float(c["euler_residual"])
            c["scaling_residual"] = _json_float(c["scaling_residual"])
        return d

    def __str__(self) -> str:
        verdict = "HOLDS" if self.holds else "FAILS"
        lines = [
            f"On-model structure: {verdict}",
            f"  subset S          {', '.join(self.subset) if self.subset else '(none)'}",
            f"  Euler residual    {_g(self.euler_residual)}   ‖f_X − J_S θ_S‖ / ‖f_X‖",
            f"  scaling residual  {_g(self.scaling_residual)}   max_c ‖f(cθ_S) − c f(θ_S)‖ / ‖c f(θ_S)‖, "
            f"c in {', '.join(f'{c:g}' for c in self.scaling_residuals)}",
            f"  rtol              {self.rtol:.3g}",
            f"  data              n={self.n}, k={self.k}, dtype={self.dtype}, bn_mode={self.bn_mode}",
        ]
        if self.mode == "auto":
            lines.append(f"  candidates tried  {len(self.candidates)}")
            for c in self.candidates[:12]:
                mark = "ok" if c.holds else "  "
                lines.append(f"    {mark} {c.label:<34} euler {_g(c.euler_residual, 2):>9}  "
                             f"scaling {_g(c.scaling_residual, 2):>9}")
            if len(self.candidates) > 12:
                lines.append(f"    ... {len(self.candidates) - 12} more (see .candidates)")
        lines.append(f"  {self.explanation}")
        return "\n".join(lines)


@dataclass
class AlignmentReport:
    """Result of the data architecture alignment check: is vec(Y) in Col J(θ)?

    Attributes:
        holds: ``residual ≤ rtol`` (for ``"lsqr"``, the rigorous upper bound ≤ rtol).
        residual: ‖(I − P) vec(Y)‖ / ‖vec(Y)‖ (``"dense"``), or the upper bound ‖Y − J z‖ / ‖Y‖ at LSQR's
            final iterate z (``"lsqr"``): any z gives an upper bound because J z ∈ Col J.
        residual_lower_bound: a lower bound on the true relative residual: equal to ``residual`` for
            ``"dense"``; for ``"lsqr"`` sqrt(‖r‖² − (‖Jᵀr‖/σ₊)²)/‖Y‖ with σ₊ = ``sigma_min`` (valid when
            ``sigma_min`` does not exceed the true σ₊; None when no σ₊ is available, or when σ₊ is LSQR's
            own estimate and LSQR did not converge).
        rank: numerical rank of J (``"dense"``); None for ``"lsqr"`` (not computed matrix-free).
        sigma_min: smallest non-zero singular value σ₊ of J (``"dense"``: σ_r); for ``"lsqr"`` the caller's
            ``sigma_min`` if given, else LSQR's estimate anorm/acond = 1/‖R⁻¹‖_F (see alignment module).
        sigma_min_source: ``"dense"``, ``"given"``, ``"lsqr-estimate"`` or None.
        sigma_max: largest singular value (``"dense"``); None for ``"lsqr"``.
        tolerance: ``"dense"``: the absolute rank threshold on σ; ``"lsqr"``: the atol/btol LSQR stopped with.
        rtol: the tolerance ``residual`` is compared with.
        method: ``"dense"`` or ``"lsqr"`` (what ran, after ``"auto"`` chose).
        n, k, p: samples, outputs per sample, parameters (columns of J).
        iterations, istop, optimality: LSQR iterations, its stop code, and ‖Jᵀ r‖ at its final residual
            r = Y − J z (None for ``"dense"``).
        conclusive: False when neither bound settles ``holds`` (upper bound > rtol, lower bound ≤ rtol or
            unknown); always True for ``"dense"``.
        params: names of the parameters forming J.
        bn_mode, dtype, time_s: BatchNorm semantics, compute dtype of J, seconds.
        notes: anything the reader should know (e.g. why a run was inconclusive).
    """

    holds: bool
    residual: float
    residual_lower_bound: Optional[float]
    rank: Optional[int]
    sigma_min: Optional[float]
    sigma_min_source: Optional[str]
    sigma_max: Optional[float]
    tolerance: float
    rtol: float
    method: str
    n: int
    k: int
    p: int
    iterations: Optional[int]
    istop: Optional[int]
    optimality: Optional[float]
    conclusive: bool
    params: list[str]
    bn_mode: Optional[str]
    dtype: str
    time_s: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: _json_float(v) for k, v in asdict(self).items()}

    def __str__(self) -> str:
        verdict = "HOLDS" if self.holds else "FAILS"
        if not self.conclusive:
            verdict += " (inconclusive)"
        res = f"{self.residual:.3g}"
        if self.method == "lsqr":
            res = f"≤ {self.residual:.3g}   (≥ {_g(self.residual_lower_bound)})"
        lines = [
            f"Data architecture alignment: {verdict}",
            f"  residual    {res}   ‖(I − P) vec(Y)‖ / ‖vec(Y)‖, rtol {self.rtol:.3g}",
            f"  J           {self.n * self.k} x {self.p} (n={self.n}, k={self.k}), {len(self.params)} parameter "
            f"tensors, dtype={self.dtype}, bn_mode={self.bn_mode}",
        ]
        if self.method == "dense":
            lines.append(f"  rank        {self.rank} of {min(self.n * self.k, self.p)} (σ > {self.tolerance:.3g}); "
                         f"σ_max {_g(self.sigma_max, 4)}, σ_min {_g(self.sigma_min, 4)}")
        else:
            lines.append(f"  lsqr        {self.iterations} iterations, istop {self.istop}, atol {self.tolerance:.3g}, "
                         f"‖Jᵀr‖ {_g(self.optimality)}, σ₊ {_g(self.sigma_min, 4)} ({self.sigma_min_source})")
        lines.append(f"  method      {self.method}, {self.time_s:.2f} s")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)
