"""Training loss and test error against epoch, base vs modified, mean and min–max band over seeds, τ marked.

One row of two panels per (dataset, augmentation) found in the runs: the training loss (the running mean over
each epoch, ``running_train_loss`` of the epoch records; log scale) and the test error in %. The effective switch
epoch τ of the modified runs (recorded in their summaries, :attr:`RunRecord.tau`) is a dashed vertical line.

Usage: ``python -m figures.training_curves RUN_DIR... [--out training_curves.png]``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from dynamics.errors import InputError
from dynamics.reproduce.run_groups import discover_runs, group_runs, seed_band
from dynamics.training.run_folder import RunRecord
from figures.plotting import save_figure

__all__ = ["plot", "main", "COLORS", "draw_band", "mark_tau", "row_groups", "format_epoch_axes", "run_dirs_main"]

COLORS = {False: "tab:blue", True: "tab:orange"}
LABELS = {False: "base", True: "modified"}


def row_groups(runs: Sequence[RunRecord]) -> dict[tuple[str, bool], dict[bool, list[RunRecord]]]:
    """{(dataset, augment): {modified: runs}} in the table's order."""
    rows: dict[tuple[str, bool], dict[bool, list[RunRecord]]] = {}
    for (dataset, augment, modified), members in group_runs(runs).items():
        rows.setdefault((dataset, augment), {})[modified] = members
    return rows


def draw_band(ax, members: Sequence[RunRecord], key: str, modified: bool) -> bool:
    """Mean line and min–max band over seeds of ``key``; returns False when nothing was recorded."""
    xs, mean, lo, hi, counts = seed_band(members, key)
    if not xs:
        return False
    n = max(counts)
    ax.plot(xs, mean, color=COLORS[modified], label=f"{LABELS[modified]} (mean of {n} seed{'s' * (n > 1)})")
    if n > 1:
        ax.fill_between(xs, lo, hi, color=COLORS[modified], alpha=0.25, linewidth=0)
    return True


def mark_tau(ax, members: Sequence[RunRecord]) -> None:
    """A dashed vertical line at each distinct τ of the modified runs."""
    for i, tau in enumerate(sorted({r.tau for r in members if r.tau is not None})):
        ax.axvline(tau, color="0.3", linestyle="--", linewidth=1, label="τ (switch)" if i == 0 else None)


def plot(runs: Sequence[RunRecord], title: str | None = None) -> Figure:
    """The training-curves figure of ``runs`` (any datasets, augmentation, algorithms and seeds).

    Raises:
        InputError: no run has any epoch record.
    """
    rows = {k: v for k, v in row_groups(runs).items() if any(r.epochs for g in v.values() for r in g)}
    if not rows:
        raise InputError("none of the runs has an epoch record yet; nothing to plot")
    fig = Figure(figsize=(10, 3.2 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), 2, squeeze=False)
    for (ax_loss, ax_err), ((dataset, augment), algos) in zip(axes, rows.items()):
        where = f"{dataset}, {'with' if augment else 'no'} augmentation"
        for modified in (False, True):
            members = algos.get(modified, [])
            draw_band(ax_loss, members, "running_train_loss", modified)
            draw_band(ax_err, members, "test_error", modified)
        format_epoch_axes((ax_loss, ax_err), algos.get(True, []))
        ax_loss.set_yscale("log")
        ax_loss.set_ylabel("training loss (running mean over the epoch)")
        ax_err.set_ylabel("test error (%)")
        ax_loss.set_title(f"{where}: training loss")
        ax_err.set_title(f"{where}: test error")
        ax_loss.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def format_epoch_axes(axes, modified_runs: Sequence[RunRecord]) -> None:
    """Shared look of every per-epoch panel: τ marked, integer epoch ticks, a light grid."""
    for ax in axes:
        mark_tau(ax, modified_runs)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)


def run_dirs_main(plot_fn, default_out: str, description: str, argv: list[str] | None = None) -> int:
    """Command line of a figure drawn from run directories: ``RUN_DIR... [--out PNG]``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("runs", nargs="+", help="run directories or folders holding them")
    parser.add_argument("--out", default=default_out, help="output PNG (default: %(default)s)")
    args = parser.parse_args(argv)
    save_figure(plot_fn(discover_runs(args.runs)), args.out)
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_dirs_main(plot, "training_curves.png", __doc__.splitlines()[0], argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
