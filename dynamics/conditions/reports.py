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
    p: int = 0
    expected: bool = True
    control: bool = False
    statement: str = "on-model structure"

    @property
    def trivial(self) -> bool:
        """Always False: the Euler identity f_X = J_S θ_S is tested directly (it can fail, e.g. for a sigmoid
        head); it is not implied by the rank of J."""
        return False

    @property
    def quantities(self) -> dict:
        """p, nk, rank (not computed by this check: None) and the two residuals (JSON-ready)."""
        return {"p": self.p, "nk": self.n * self.k, "rank": None, "euler_residual": _json_float(self.euler_residual),
                "scaling_residual": _json_float(self.scaling_residual)}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["trivial"] = self.trivial
        d["quantities"] = self.quantities
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
            f"  data              n={self.n}, k={self.k}, p={self.p}, dtype={self.dtype}, bn_mode={self.bn_mode}",
            f"  verdict           statement={self.statement!r}, control={self.control}, expected={self.expected}, "
            f"holds={self.holds}, trivial=False (the identity is tested, not implied by rank)",
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

    The common verdict fields (shared with every report row of the toolkit): ``statement``, ``control``,
    ``expected``, ``holds``, ``trivial`` and :attr:`quantities` (p, nk, rank and the residual bounds).

    Attributes:
        holds: ``residual_upper ≤ rtol``.
        residual: the route's value of r = ‖(I − P) vec(Y)‖ / ‖vec(Y)‖: exact routes r itself, bound routes
            (``"subset"``, ``"lsqr"``) the upper bound.
        residual_lower, residual_upper: rigorous bounds on r up to the stated ``accuracy`` and the numerical
            rank convention (``tolerance``); ``residual_lower`` is None when LSQR has no σ₊ to give one.
        conclusive: True when the bounds settle ``holds`` (upper ≤ rtol or lower > rtol).
        trivial: True when rank J = n·k (P = I: every Y is aligned whatever the network; the statement
            "alignment holds" then says nothing about data or training); False when rank J < n·k (always when
            p < n·k); None when unknown (LSQR with p ≥ n·k).
        accuracy: the route's stated floating-point error on r (None for LSQR, whose bound is recomputed).
        rank: numerical rank of the J the route factorised (J_S for ``"subset"``); None for ``"lsqr"``.
        sigma_min, sigma_max: σ₊ (smallest singular value counted in the rank) and σ_max of that J; for
            ``"lsqr"`` sigma_min is the caller's bound or LSQR's estimate (``sigma_min_source`` says which).
        tolerance: exact routes: the absolute rank threshold on σ; ``"lsqr"``: its atol/btol.
        route: how Col J was obtained (``"eigh(JJt)"``, ``"eigh(JtJ)"``, ``"svd"``, ``"lsqr"``).
        rtol: the tolerance ``residual_upper`` is compared with.
        method: what ran, after ``"auto"`` chose (``"dense"``, ``"gram"``, ``"subset"``, ``"lsqr"``).
        n, k, p: samples, outputs per sample, parameters (columns of J).
        iterations, istop, optimality: LSQR iterations, stop code and ‖Jᵀr‖ (None otherwise).
        subset_size: |S| for ``"subset"``.
        params, bn_mode, dtype, time_s, notes: parameters forming J, BatchNorm semantics, compute dtype,
            seconds, remarks.
        expected, control: whether alignment is expected to hold here; whether this is a control.
    """

    holds: bool
    residual: float
    residual_lower: Optional[float]
    residual_upper: float
    conclusive: bool
    trivial: Optional[bool]
    accuracy: Optional[float]
    rank: Optional[int]
    sigma_min: Optional[float]
    sigma_min_source: Optional[str]
    sigma_max: Optional[float]
    tolerance: Optional[float]
    route: Optional[str]
    rtol: float
    method: str
    n: int
    k: int
    p: int
    iterations: Optional[int]
    istop: Optional[int]
    optimality: Optional[float]
    subset_size: Optional[int]
    params: list[str]
    bn_mode: Optional[str]
    dtype: str
    time_s: float
    notes: list[str] = field(default_factory=list)
    expected: bool = True
    control: bool = False
    statement: str = "data architecture alignment"

    @property
    def quantities(self) -> dict:
        """The measured numbers: p, nk, rank, the residual and its bounds (JSON-ready)."""
        return {"p": self.p, "nk": self.n * self.k, "rank": self.rank, "residual": _json_float(self.residual),
                "residual_lower": _json_float(self.residual_lower),
                "residual_upper": _json_float(self.residual_upper)}

    def to_dict(self) -> dict:
        d = {k: _json_float(v) for k, v in asdict(self).items()}
        d["quantities"] = self.quantities
        return d

    def __str__(self) -> str:
        verdict = "HOLDS" if self.holds else "FAILS"
        if not self.conclusive:
            verdict += " (inconclusive)"
        if self.trivial:
            verdict += " (trivially: rank J = n·k)"
        lo = _g(self.residual_lower)
        lines = [
            f"Data architecture alignment: {verdict}",
            f"  residual    {self.residual:.3g} in [{lo}, {self.residual_upper:.3g}]   ‖(I − P) vec(Y)‖ / ‖vec(Y)‖, "
            f"rtol {self.rtol:.3g}",
            f"  J           {self.n * self.k} x {self.p} (n={self.n}, k={self.k}), {len(self.params)} parameter "
            f"tensors, dtype={self.dtype}, bn_mode={self.bn_mode}",
            f"  verdict     statement={self.statement!r}, control={self.control}, expected={self.expected}, "
            f"holds={self.holds}, trivial={_tri(self.trivial)}",
        ]
        if self.method == "lsqr":
            lines.append(f"  lsqr        {self.iterations} iterations, istop {self.istop}, atol {self.tolerance:.3g}, "
                         f"‖Jᵀr‖ {_g(self.optimality)}, σ₊ {_g(self.sigma_min, 4)} ({self.sigma_min_source})")
        else:
            what = f"J_S, |S| = {self.subset_size}" if self.method == "subset" else "J"
            lines.append(f"  rank        {self.rank} of {what} (σ > {_g(self.tolerance)}, via {self.route}); "
                         f"σ_max {_g(self.sigma_max, 4)}, σ_min {_g(self.sigma_min, 4)}; accuracy {_g(self.accuracy)}")
        lines.append(f"  method      {self.method}, {self.time_s:.2f} s")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)


def _tri(value: Optional[bool]) -> str:
    return "unknown" if value is None else str(bool(value))
