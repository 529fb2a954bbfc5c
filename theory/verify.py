"""Collecting the statement reports of ``dynamics verify`` (also ``make run``): statements 1-7 of
``docs/theory.md`` on embedded networks and data.

:func:`collect` runs the demonstrations of :mod:`theory.demos`, the checks of :mod:`theory.network_size` and
the exact proofs of :mod:`theory.symbolic` (plus Semeion rows when the data root has it) and returns their
:class:`~theory.report.StatementReport` s. The command itself (table, ``report.json``, figures, exit status)
is :mod:`dynamics.cli.verify`.

>>> result = collect(data_root="/nonexistent", include=("semeion",))   # no data there: the rows are skipped
>>> result.reports, result.skipped[0].startswith("Semeion: skipped"), result.passed
([], True, True)
>>> collect(data_root="/nonexistent", include=(), full=True).skipped[0].startswith("Practical (Semeion): skipped")
True
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

from dynamics.errors import DataError, InputError
from theory import demos, demos_critical, demos_limits, practical
from theory.report import StatementReport
from theory.symbolic import all_proofs, euler_identity

__all__ = ["collect", "VerifyResult", "GROUPS", "FULL_GROUPS", "coverage"]

log = logging.getLogger(__name__)

GROUPS = ("decomposition", "critical", "plateau", "necessity", "width", "depth", "controls", "limits", "symbolic",
          "semeion")
FULL_GROUPS = ("practical",)  # minutes of SGD on real images: only with full=True (``dynamics verify --full``)


@dataclass
class VerifyResult:
    """All reports of one verification, the skipped parts (with reasons) and the run time per group."""

    reports: list[StatementReport]
    skipped: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.reports)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "coverage": coverage(self.reports),
                "reports": [r.to_dict() for r in self.reports], "skipped": self.skipped, "seconds": self.seconds}


def _symbolic_reports(quick: bool) -> list[StatementReport]:
    """Exact sympy proofs: identities that hold at every θ by construction, so ``trivial`` (they prove the algebra,
    not a measurement), plus the sigmoid-head Euler identity as their control (its difference is not 0)."""
    rows = [StatementReport(p.statement, f"sympy: {p.name}", p.setting,
                            {"p": None, "nk": None, "rank": None, "simplified_difference": p.difference},
                            {"exact": 0.0}, p.holds, notes="exact algebra: an identity, true by construction",
                            trivial=True) for p in all_proofs(quick)]
    control = euler_identity(1, 1, head="sigmoid")
    rows.append(StatementReport(control.statement, f"sympy: {control.name}", control.setting,
                                {"p": None, "nk": None, "rank": None, "simplified_difference": "non-zero"},
                                {"exact": 0.0}, control.holds, expected=False,
                                notes=f"control: a sigmoid head breaks the Euler identity; difference "
                                      f"{control.difference[:80]}"))
    return rows


def collect(seed: int = 0, quick: bool = False, data_root: Optional[str] = None,
            include: Sequence[str] = GROUPS, full: bool = False) -> VerifyResult:
    """Run the groups in ``include`` (see :data:`GROUPS`) and return their reports; ``full=True`` adds
    :data:`FULL_GROUPS` (the practical regime: a CNN trained by SGD on Semeion, skipped with the reason when
    the data root lacks it)."""
    unknown = set(include) - set(GROUPS) - set(FULL_GROUPS)
    if unknown:
        raise InputError(f"unknown verification groups {sorted(unknown)}; choose from {list(GROUPS + FULL_GROUPS)}")
    if full:
        include = tuple(include) + tuple(g for g in FULL_GROUPS if g not in include)
    runners = {
        "decomposition": lambda: demos.demo_random_points(seed) + demos.demo_trajectory(seed, quick),
        "critical": lambda: demos_critical.demo_sufficiency(seed, quick),
        "plateau": lambda: demos_critical.demo_plateau(seed, quick),
        "necessity": lambda: [demos_critical.demo_necessity(seed=seed, quick=quick)],
        "width": lambda: demos.demo_width_sweep(seed, quick),
        "depth": lambda: demos.demo_depth(seed),
        "controls": lambda: demos.demo_controls(seed),
        "limits": lambda: demos_limits.demo_limits(seed, quick),
        "symbolic": lambda: _symbolic_reports(quick),
    }
    result = VerifyResult(reports=[])
    for group in include:
        start = time.perf_counter()
        if group in ("semeion", "practical"):
            root = data_root if data_root is not None else os.environ.get("DYNAMICS_DATA")
            demo = demos_critical.demo_semeion if group == "semeion" else \
                (lambda r, seed: practical.demo_practical(r, seed=seed, quick=quick))
            try:
                result.reports += demo(root, seed=seed)
            except DataError as exc:  # absent or corrupt files; anything else is a real failure
                result.skipped.append(f"{'Semeion' if group == 'semeion' else 'Practical (Semeion)'}: skipped ({exc})")
        else:
            result.reports += runners[group]()
        result.seconds[group] = round(time.perf_counter() - start, 2)
        log.debug("verify: %s done in %.1f s", group, result.seconds[group])
    order = {s: i for i, s in enumerate("1234567")}
    result.reports.sort(key=lambda r: (order.get(r.statement, 9), not r.expected))
    return result


def coverage(reports: Sequence[StatementReport]) -> dict[str, dict[str, bool]]:
    """Per statement: whether it has a non-trivial row that holds and a control that fails (what makes the
    verification able to fail).

    >>> ok = StatementReport("1", "x", "", {}, {}, True)
    >>> ctl = StatementReport("1", "x", "", {}, {}, False, expected=False)
    >>> coverage([ok, ctl])["1"]
    {'non_trivial_holds': True, 'control_fails': True}
    """
    out: dict[str, dict[str, bool]] = {}
    for r in reports:
        c = out.setdefault(r.statement, {"non_trivial_holds": False, "control_fails": False})
        if r.expected and r.holds and not r.trivial:
            c["non_trivial_holds"] = True
        if r.control and not r.holds:
            c["control_fails"] = True
    return out
