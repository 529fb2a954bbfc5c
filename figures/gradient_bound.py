"""Statement 2 along gradient descent: ½‖(I−P)Y‖² ≤ L(θ_t) ≤ ½‖(I−P)Y‖² + ‖∇L‖²/(2σ₊²).

Usage: ``python -m figures.gradient_bound [--out gradient_bound.png] [--quick] [--seed 0]``.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from matplotlib.figure import Figure

from figures.plotting import finish
from figures.statement_data import figure_arguments, series_of
from theory.demos import demo_trajectory

__all__ = ["plot", "main"]


def plot(report: Any, out_path=None) -> Figure:
    """``report``: statement 2 along a trajectory (series steps, loss, dist_term, upper)."""
    s = series_of(report)
    fig = Figure(figsize=(6, 3.6))
    ax = fig.add_subplot()
    ax.fill_between(s["steps"], s["dist_term"], s["upper"], color="tab:green", alpha=0.15,
                    label="allowed band")
    ax.plot(s["steps"], s["upper"], "-", color="tab:green", label="upper: ½dist² + ‖∇L‖²/(2σ₊²)")
    ax.plot(s["steps"], s["loss"], "k-", lw=2, label="L(θ_t)")
    ax.plot(s["steps"], s["dist_term"], "-", color="tab:red", label="lower: ½dist(Y, Col J)²")
    ax.set_yscale("log")
    ax.set_xlabel("gradient descent step t")
    ax.set_ylabel("loss")
    ax.set_title("Gradient bound along training")
    ax.legend(fontsize=8)
    return finish(fig, out_path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = figure_arguments(__doc__.splitlines()[0], "gradient_bound.png", argv)
    plot(demo_trajectory(args.seed, args.quick)[1], args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
