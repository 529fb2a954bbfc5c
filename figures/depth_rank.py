"""Statement 6: rank J of the width-1 ReLU chain against depth, for several input dimensions d_x; the
parameter count grows with depth, the rank stays at most d_x (d_x + 1 with a first-layer bias).

Usage: ``python -m figures.depth_rank [--out depth_rank.png] [--seed 0]``.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from matplotlib.figure import Figure

from figures.plotting import finish
from figures.statement_data import as_reports, field_of, figure_arguments, quantities_of, series_of
from theory.network_size import check_chain_rank

__all__ = ["plot", "main"]


def plot(reports: Any, out_path=None) -> Figure:
    """``reports``: :func:`theory.network_size.check_chain_rank` reports (series depths, rank, p)."""
    fig = Figure(figsize=(6.5, 3.8))
    ax = fig.add_subplot()
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:red"]
    for i, rep in enumerate(as_reports(reports)):
        s, q = series_of(rep), quantities_of(rep)
        c = colors[i % len(colors)]
        label = field_of(rep, "setting").split(", depths")[0].replace("width-1 ReLU chain, ", "")
        ax.plot(s["depths"], s["rank"], "o-", color=c, label=f"rank J ({label})")
        ax.plot(s["depths"], s["p"], ":", color=c, lw=1)
        ax.axhline(q["bound"], color=c, ls="--", lw=0.8)
    ax.set_xlabel("depth L (Linear layers)")
    ax.set_ylabel("rank J (dotted: parameters p; dashed: bound)")
    ax.set_title("Width-1 ReLU chain: depth adds parameters, not rank")
    ax.legend(fontsize=7)
    return finish(fig, out_path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = figure_arguments(__doc__.splitlines()[0], "depth_rank.png", argv)
    reps = [check_chain_rank(in_features=d, seed=args.seed) for d in (2, 3, 5)]
    reps.append(check_chain_rank(in_features=3, bias_first=True, seed=args.seed))
    plot(reps, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
