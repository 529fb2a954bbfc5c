"""Statement 7: along gradient descent the empirical NTK moves (kernel distance to Θ(θ_0)) while the loss
falls and r(θ_t) changes; statements 1–2 were checked at every marked point.

Usage: ``python -m figures.beyond_ntk [--out beyond_ntk.png] [--quick] [--seed 0]``.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from matplotlib.figure import Figure

from figures.plotting import finish
from figures.statement_data import figure_arguments, series_of
from theory.demos import demo_trajectory

__all__ = ["plot", "main"]


def plot(report: Any, out_path=None) -> Figure:
    """``report``: :func:`theory.beyond_ntk.check_beyond_ntk` (series steps, kernel_distance, r, loss)."""
    s = series_of(report)
    fig = Figure(figsize=(9, 3.4))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax1.plot(s["steps"], s["kernel_distance"], "o-", color="tab:purple", ms=3)
    ax1.set_xlabel("gradient descent step t")
    ax1.set_ylabel("1 − ⟨Θ0, Θt⟩ / (‖Θ0‖‖Θt‖)")
    ax1.set_title("The kernel moves")
    ax2.plot(s["steps"], s["r"], "o-", color="tab:red", ms=3, label="r(θ_t)")
    ax2.set_xlabel("gradient descent step t")
    ax2.set_ylabel("r(θ_t)", color="tab:red")
    ax3 = ax2.twinx()
    ax3.plot(s["steps"], s["loss"], "-", color="k", label="L(θ_t)")
    ax3.set_yscale("log")
    ax3.set_ylabel("L(θ_t)")
    ax2.set_title("Alignment residual and loss")
    return finish(fig, out_path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = figure_arguments(__doc__.splitlines()[0], "beyond_ntk.png", argv)
    plot(demo_trajectory(args.seed, args.quick)[2], args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
