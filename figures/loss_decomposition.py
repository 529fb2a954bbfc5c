"""Statement 1 along gradient descent: L(θ_t) = ½‖P(f−Y)‖² + ½‖(I−P)Y‖², both terms and their sum.

Usage: ``python -m figures.loss_decomposition [--out loss_decomposition.png] [--quick] [--seed 0]``.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from matplotlib.figure import Figure

from figures.plotting import finish
from figures.statement_data import figure_arguments, series_of
from theory.demos import demo_trajectory

__all__ = ["plot", "main"]


def plot(report: Any, out_path=None) -> Figure:
    """``report``: statement 1 along a trajectory (:func:`theory.demos.demo_trajectory`, series steps, loss,
    proj_term, dist_term)."""
    s = series_of(report)
    fig = Figure(figsize=(6, 3.6))
    ax = fig.add_subplot()
    ax.plot(s["steps"], s["loss"], "k-", lw=2, label="L(θ_t)")
    ax.plot(s["steps"], [a + b for a, b in zip(s["proj_term"], s["dist_term"])], "y--", lw=1.5,
            label="½‖P(f−Y)‖² + ½‖(I−P)Y‖²")
    ax.plot(s["steps"], s["proj_term"], "-", color="tab:blue", label="½‖P(f−Y)‖² (reducible)")
    ax.plot(s["steps"], s["dist_term"], "-", color="tab:red", label="½‖(I−P)Y‖² = ½dist(Y, Col J)²")
    ax.set_yscale("log")
    ax.set_xlabel("gradient descent step t")
    ax.set_ylabel("loss")
    ax.set_title("Loss decomposition along training")
    ax.legend(fontsize=8)
    return finish(fig, out_path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = figure_arguments(__doc__.splitlines()[0], "loss_decomposition.png", argv)
    plot(demo_trajectory(args.seed, args.quick)[0], args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
