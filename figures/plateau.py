"""Statement 3: training loss against L-BFGS iterations; aligned runs reach 0, misaligned ones stall at
½dist(Y, Col J(θ̄))² (dashed line at the value measured at the end).

Usage: ``python -m figures.plateau [--out plateau.png] [--quick] [--seed 0]``.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from matplotlib.figure import Figure

from figures.plotting import finish
from figures.statement_data import as_reports, field_of, figure_arguments, quantities_of, series_of
from theory.demos_critical import demo_plateau, demo_sufficiency

__all__ = ["plot", "main"]


def plot(reports: Any, out_path=None) -> Figure:
    """``reports``: statement 3 reports with series ``losses`` (every ``chunk`` iterations) and quantities
    ``half_dist2`` (:func:`theory.demos_critical.demo_sufficiency`, :func:`theory.demos_critical.demo_plateau`)."""
    fig = Figure(figsize=(6.5, 3.8))
    ax = fig.add_subplot()
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:purple"]
    for i, rep in enumerate(as_reports(reports)):
        s, q = series_of(rep), quantities_of(rep)
        if "losses" not in s:
            continue
        its = [j * s.get("chunk", 1) for j in range(len(s["losses"]))]
        c = colors[i % len(colors)]
        floor = 1e-32
        ax.plot(its, [max(v, floor) for v in s["losses"]], "-", color=c, label=field_of(rep, "setting"))
        if q["half_dist2"] > 1e-20:
            ax.axhline(q["half_dist2"], color=c, ls="--", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("L-BFGS iteration")
    ax.set_ylabel("L (dashed: ½dist(Y, Col J(θ̄))²)")
    ax.set_title("Critical points: L = ½dist(Y, Col J)²")
    ax.legend(fontsize=7)
    return finish(fig, out_path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = figure_arguments(__doc__.splitlines()[0], "plateau.png", argv)
    plot(demo_sufficiency(args.seed, args.quick)[:1] + demo_plateau(args.seed, args.quick), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
