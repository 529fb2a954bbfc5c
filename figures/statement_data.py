"""Reading :class:`theory.report.StatementReport` s (or their ``to_dict()`` JSON form) for the theory figures.

>>> from theory.report import StatementReport
>>> r = StatementReport("7", "beyond NTK", "toy", {}, {}, True, series={"steps": [0, 1]})
>>> series_of(r)["steps"], series_of(r.to_dict())["steps"], quantities_of(r)
([0, 1], [0, 1], {})
"""

from __future__ import annotations

import argparse
from typing import Any, Optional, Sequence

from dynamics.errors import InputError

__all__ = ["series_of", "quantities_of", "field_of", "as_reports", "figure_arguments"]


def field_of(report: Any, name: str) -> Any:
    """``report.<name>`` for a StatementReport, ``report[name]`` for its dict form."""
    if isinstance(report, dict):
        if name not in report:
            raise InputError(f"the report dict has no {name!r} field; pass StatementReport.to_dict() output")
        return report[name]
    if not hasattr(report, name):
        raise InputError(f"expected a StatementReport (or its to_dict()), got {type(report).__name__}")
    return getattr(report, name)


def series_of(report: Any) -> dict:
    return field_of(report, "series")


def quantities_of(report: Any) -> dict:
    return field_of(report, "quantities")


def as_reports(data: Any) -> list:
    """One report or a sequence of them, as a list."""
    if isinstance(data, dict) or hasattr(data, "series"):
        return [data]
    return list(data)


def figure_arguments(description: str, default_out: str, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line every theory figure script shares: --out, --seed, --quick."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", default=default_out, help=f"PNG path (default {default_out})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="the smaller run of the demonstration")
    return parser.parse_args(argv)
