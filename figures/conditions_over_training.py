"""The alignment residual and the kernel distance over training, from the runs' probe records.

One row of two panels per (dataset, augmentation): the alignment residual r = ‖(I − P)Y‖/‖Y‖ on the probe set
(log scale) and the kernel distance between the empirical NTK at initialisation and at each probed epoch;
base vs modified, mean and min–max band over seeds, τ as a dashed vertical line. A kernel distance far from 0
shows the representation moving (training is not in the NTK regime).

Usage: ``python -m figures.conditions_over_training RUN_DIR... [--out conditions_over_training.png]``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from matplotlib.figure import Figure

from dynamics.errors import InputError
from dynamics.training.run_folder import RunRecord
from figures.training_curves import draw_band, format_epoch_axes, row_groups, run_dirs_main

__all__ = ["plot", "main"]


def plot(runs: Sequence[RunRecord], title: str | None = None) -> Figure:
    """The conditions-over-training figure of ``runs``.

    Raises:
        InputError: no run has any probe record.
    """
    rows = {k: v for k, v in row_groups(runs).items() if any(r.probes for g in v.values() for r in g)}
    if not rows:
        raise InputError("none of the runs has a probe record (probe_every = 0?); nothing to plot")
    fig = Figure(figsize=(10, 3.2 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), 2, squeeze=False)
    for (ax_r, ax_k), ((dataset, augment), algos) in zip(axes, rows.items()):
        where = f"{dataset}, {'with' if augment else 'no'} augmentation"
        drew_r = False
        for modified in (False, True):
            members = algos.get(modified, [])
            drew_r |= draw_band(ax_r, members, "alignment_residual", modified)
            draw_band(ax_k, members, "kernel_distance", modified)
        format_epoch_axes((ax_r, ax_k), algos.get(True, []))
        if drew_r and all(y > 0 for g in algos.values() for r in g for y in r.curve("alignment_residual")[1]):
            ax_r.set_yscale("log")
        ax_r.set_ylabel("alignment residual r")
        ax_k.set_ylabel("kernel distance to init")
        ax_r.set_title(f"{where}: alignment residual (probe set)")
        ax_k.set_title(f"{where}: kernel distance")
        ax_r.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def main(argv: list[str] | None = None) -> int:
    return run_dirs_main(plot, "conditions_over_training.png", __doc__.splitlines()[0], argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
