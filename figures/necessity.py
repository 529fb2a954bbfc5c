"""Statement 4: the alignment residual r of zero-loss solutions (≈ 0) next to a control that violates the
on-model structure (sigmoid head, r > 0 at a zero-loss point).

Usage: ``python -m figures.necessity [--out necessity.png] [--quick] [--seed 0]``.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from matplotlib.figure import Figure

from figures.plotting import finish
from figures.statement_data import as_reports, field_of, figure_arguments, quantities_of, series_of
from theory.demos import demo_controls
from theory.demos_critical import demo_necessity

__all__ = ["plot", "main"]


def plot(reports: Any, out_path=None) -> Figure:
    """``reports``: statement 4 reports; one with series ``r`` (several solutions) gives one bar each."""
    labels, values, colors = [], [], []
    for rep in as_reports(reports):
        s, q = series_of(rep), quantities_of(rep)
        control = not field_of(rep, "expected")
        rs = s.get("r", [q["r"]] if "r" in q else [])
        name = field_of(rep, "setting").split(",")[0][:26]
        for i, r in enumerate(rs):
            labels.append(("control: " if control else "") + (f"{name}, seed {i}" if len(rs) > 1 else name))
            values.append(max(r, 1e-17))
            colors.append("tab:red" if control else "tab:blue")
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    ax.bar(range(len(values)), values, color=colors)
    ax.set_xticks(range(len(values)), labels, fontsize=7, rotation=30, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("r = ‖(I−P)Y‖/‖Y‖ at f_X = Y")
    ax.set_title("Zero-loss points are aligned (blue), not without the assumption (red)", fontsize=10)
    return finish(fig, out_path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = figure_arguments(__doc__.splitlines()[0], "necessity.png", argv)
    plot([demo_necessity(quick=args.quick), demo_controls(args.seed)[2]], args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
