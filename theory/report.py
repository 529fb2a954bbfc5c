"""The result of checking one statement of THEORY.md: the numbers on both sides, the tolerance, the verdict.

Every check in :mod:`theory` returns a :class:`StatementReport`. Each row says whether its verdict could
have failed:

* ``control``: the case was built so that the statement must fail (a model that violates the on-model
  structure, a critical point without alignment, a widening with dependent columns ...); ``expected`` is then
  False, and a control that holds is as much a failure of the verification as a statement that fails where it
  should hold. ``passed`` is ``holds == expected``.
* ``trivial``: the verdict is implied without the statement's hypothesis, so it verifies nothing: rank J = n·k
  (P = I; every target is aligned and statements 1–4 reduce to identities), or an identity that holds at every
  θ by construction. A trustworthy verification has, for each statement, a non-trivial row that holds and a
  control that fails.
* ``quantities`` always carry ``p`` (parameters), ``nk`` (rows of J) and ``rank`` (rank J, None when not
  computed), then the statement's own numbers.

>>> r = StatementReport("1", "loss decomposition", "toy", {"p": 4, "nk": 6, "rank": 4, "gap": 1e-17},
...                     {"rtol": 1e-8}, True)
>>> r.passed, r.to_dict()["trivial"], r.control
(True, False, False)
>>> print(format_table([r]))  # doctest: +NORMALIZE_WHITESPACE
statement            | setting | measured                     | tolerance  | trivial | holds
---------------------+---------+------------------------------+------------+---------+------
1 loss decomposition | toy     | p=4, nk=6, rank=4, gap=1e-17 | rtol=1e-08 | no      | yes
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

__all__ = ["StatementReport", "format_table", "format_value"]


def format_value(value: Any) -> str:
    """Short human form of a measured number (4 significant digits; ints and strings as they are).

    >>> format_value(0.000123456), format_value(12), format_value(True), format_value(2.0)
    ('0.0001235', '12', 'yes', '2')
    """
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


@dataclass
class StatementReport:
    """Both sides of one statement, measured.

    Attributes:
        statement: id in THEORY.md's list ("1" .. "7").
        name: short name ("loss decomposition", "gradient bound", ...).
        setting: model, data and point in words ("MLP 3-16-16-2 tanh, n=12 synthetic, random θ").
        quantities: the measured numbers (floats, ints), shown in the table and saved to JSON.
        tolerance: the tolerances the verdict used, by name.
        holds: whether the statement holds within tolerance.
        expected: whether it should hold here (False for the controls that must fail).
        notes: one sentence of context (what was compared, why a control must fail).
        series: longer data for figures (lists by name); saved to JSON, not shown in the table.
        trivial: the verdict is implied without the hypothesis (rank J = n·k, or an identity by construction).
        control: the case was built so that the statement must fail (default: ``not expected``).
    """

    statement: str
    name: str
    setting: str
    quantities: dict[str, Any]
    tolerance: dict[str, float]
    holds: bool
    expected: bool = True
    notes: str = ""
    series: dict[str, Any] = field(default_factory=dict)
    trivial: bool = False
    control: Optional[bool] = None

    def __post_init__(self) -> None:
        if self.control is None:
            self.control = not self.expected

    @property
    def passed(self) -> bool:
        """True when the verdict is the expected one (holds for a statement, fails for a control)."""
        return bool(self.holds) == bool(self.expected)

    @property
    def verdict(self) -> str:
        """'yes' / 'NO' for statements; 'no (control)' (as expected) / 'YES (control must fail)' for controls."""
        if self.expected:
            return "yes" if self.holds else "NO"
        return "no (control)" if not self.holds else "YES (control must fail)"

    def measured(self) -> str:
        return ", ".join(f"{k}={format_value(v)}" for k, v in self.quantities.items())

    def __str__(self) -> str:
        tol = ", ".join(f"{k}={format_value(v)}" for k, v in self.tolerance.items())
        lines = [f"Statement {self.statement} ({self.name}) -- {self.setting}",
                 f"  measured:  {self.measured()}", f"  tolerance: {tol}", f"  holds:     {self.verdict}",
                 f"  trivial:   {'yes' if self.trivial else 'no'}; control: {'yes' if self.control else 'no'}; "
                 f"expected: {'holds' if self.expected else 'fails'}"]
        if self.notes:
            lines.append(f"  note:      {self.notes}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"statement": self.statement, "name": self.name, "setting": self.setting,
                "quantities": dict(self.quantities), "tolerance": dict(self.tolerance),
                "holds": bool(self.holds), "expected": bool(self.expected), "passed": self.passed,
                "control": bool(self.control), "trivial": bool(self.trivial),
                "notes": self.notes, "series": dict(self.series)}


def format_table(reports: Sequence[StatementReport], widths: Sequence[int] = (30, 40, 64, 24, 7, 24)) -> str:
    """A plain-text table: statement | setting | measured | tolerance | trivial | holds, one row per report.

    Long cells wrap inside their column (``widths``: the wrap width of each column), so no number is cut.
    """
    header = ["statement", "setting", "measured", "tolerance", "trivial", "holds"]
    rows = []
    for r in reports:
        tol = ", ".join(f"{k}={format_value(v)}" for k, v in r.tolerance.items())
        cells = [f"{r.statement} {r.name}", r.setting, r.measured(), tol, "YES" if r.trivial else "no", r.verdict]
        rows.append([_wrap(c, w) for c, w in zip(cells, widths)])
    col = [max([len(header[i])] + [len(line) for row in rows for line in row[i]]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return " | ".join(c.ljust(w) for c, w in zip(cells, col)).rstrip()

    out = [line(header), "-+-".join("-" * w for w in col)]
    for row in rows:
        height = max(len(c) for c in row)
        out += [line([c[i] if i < len(c) else "" for c in row]) for i in range(height)]
    return "\n".join(out)


def _wrap(text: str, width: int) -> list[str]:
    """Wrap at ", " boundaries (a measured list) or spaces; a single long token stays whole."""
    return textwrap.wrap(text, width=width, break_long_words=False, break_on_hyphens=False) or [""]
