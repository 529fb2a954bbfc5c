"""Statement 5: nested widths. Left: rank J and r at each embedded point (non-increasing r). Right: the
critical loss at each width, trained on from the embedding (non-increasing).

Usage: ``python -m figures.width_sweep [--out width_sweep.png] [--quick] [--seed 0]``.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from matplotlib.figure import Figure

from figures.plotting import finish
from figures.statement_data import figure_arguments, quantities_of, series_of
from theory.demos import demo_width_sweep

__all__ = ["plot", "main"]


def plot(report: Any, out_path=None) -> Figure:
    """``report``: the width sweep of :func:`theory.demos.demo_width_sweep` (its second report)."""
    s, q = series_of(report), quantities_of(report)
    w = s["widths"]
    fig = Figure(figsize=(9, 3.4))
    ax1, ax3 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax1.plot(w, s["rank_embedded"], "o-", color="tab:blue", label="rank J at the embedded point")
    ax1.axhline(q["nk"], color="tab:blue", ls=":", lw=1, label="nk")
    ax1.set_xlabel("hidden width")
    ax1.set_ylabel("rank J")
    ax2 = ax1.twinx()
    ax2.plot(w, s["r_embedded"], "s-", color="tab:red", label="r at the embedded point")
    ax2.set_ylabel("r = ‖(I−P)Y‖/‖Y‖", color="tab:red")
    ax1.legend(fontsize=7, loc="center right")
    ax1.set_title("Wider by zero outgoing weights")
    ax3.plot(w, [max(v, 1e-32) for v in s["critical_loss"]], "o-", color="k")
    ax3.set_yscale("log")
    ax3.set_xlabel("hidden width")
    ax3.set_ylabel("critical loss L(θ̄)")
    ax3.set_title("Critical loss, trained from the embedding")
    return finish(fig, out_path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = figure_arguments(__doc__.splitlines()[0], "width_sweep.png", argv)
    plot(demo_width_sweep(args.seed, args.quick)[1], args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
