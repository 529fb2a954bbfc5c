"""The run certificate over phase 2, and the base network's own residual bound over training.

One row of two panels per (dataset, augmentation) found in the runs:

* left: the run certificate's ε on the whole training set of the modified runs (log scale), at the switch τ
  (``run_certificates.tau`` of the summary), after each phase-2 epoch that recorded it (``epsilon_ce`` of the
  epoch records, ``epsilon_every``) and at the end (``run_certificates.end``); mean and min–max band over seeds,
  the line ε = ½ below which every training point is provably classified correctly;
* right: the rigorous lower bound on the base runs' own alignment residual on the training set over training
  (``alignment_lower_bound`` of the probe records) when recorded, and the end-of-run bound of
  ``alignment_lower.json``; otherwise the panel says that it was not recorded and why.

No panel shows a residual measured on a small subset (with p ≫ subset·k it is rounding noise).

Usage: ``python -m figures.conditions_over_training RUN_DIR... [--out conditions_over_training.png]``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

from matplotlib.figure import Figure

from dynamics.errors import InputError
from dynamics.reproduce.base_residual import read_alignment_lower
from dynamics.reproduce.recertify import read_recertified
from dynamics.training.run_folder import RunRecord
from figures.training_curves import COLORS, format_epoch_axes, row_groups, run_dirs_main

__all__ = ["plot", "main", "epsilon_curve", "has_data"]


def epsilon_curve(run: RunRecord) -> tuple[list[int], list[float]]:
    """(epochs, ε) of one modified run: at τ, after the phase-2 epochs that recorded it, and at the end (from the
    run folder's ``run_certificate_end.json`` when the run was recertified, else from its summary)."""
    points: dict[int, float] = {}
    summary = run.summary
    if summary is not None and summary.run_certificate_tau and run.tau is not None:
        eps = summary.run_certificate_tau.get("epsilon_ce")
        if eps is not None:
            points[run.tau] = float(eps)
    for rec in run.epochs:
        if rec.epsilon_ce is not None:
            points[rec.epoch] = float(rec.epsilon_ce)
    end = read_recertified(run) or (summary.run_certificate_end if summary is not None else None)
    if summary is not None and end:  # the recomputed end certificate when the run was recertified
        eps = end.get("epsilon_ce")
        if eps is not None:
            points[summary.epochs_completed] = float(eps)
    xs = sorted(e for e in points if math.isfinite(points[e]) and points[e] > 0)
    return xs, [points[e] for e in xs]


def has_data(runs: Sequence[RunRecord]) -> bool:
    """Whether some modified run recorded an ε (the figure has something to show)."""
    return any(r.modified and epsilon_curve(r)[0] for r in runs)


def _band(curves: list[tuple[list[int], list[float]]]) -> tuple[list[int], list[float], list[float], list[float],
                                                                int]:
    by_epoch: dict[int, list[float]] = {}
    for xs, ys in curves:
        for x, y in zip(xs, ys):
            by_epoch.setdefault(x, []).append(y)
    xs = sorted(by_epoch)
    geo = [math.exp(sum(math.log(v) for v in by_epoch[x]) / len(by_epoch[x])) for x in xs]
    return xs, geo, [min(by_epoch[x]) for x in xs], [max(by_epoch[x]) for x in xs], \
        max((len(v) for v in by_epoch.values()), default=0)


def plot(runs: Sequence[RunRecord], title: str | None = None) -> Figure:
    """The run-certificate figure of ``runs``.

    Raises:
        InputError: no modified run recorded an ε.
    """
    rows = {k: v for k, v in row_groups(runs).items() if has_data(v.get(True, []))}
    if not rows:
        raise InputError("no modified run recorded a run certificate epsilon; nothing to plot")
    fig = Figure(figsize=(10, 3.2 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), 2, squeeze=False)
    for (ax_e, ax_r), ((dataset, augment), algos) in zip(axes, rows.items()):
        where = f"{dataset}, {'with' if augment else 'no'} augmentation"
        modified = algos.get(True, [])
        xs, mid, lo, hi, n = _band([epsilon_curve(r) for r in modified])
        ax_e.plot(xs, mid, marker="o", color=COLORS[True], label=f"modified: ε (geometric mean of {n} seeds)")
        if n > 1:
            ax_e.fill_between(xs, lo, hi, color=COLORS[True], alpha=0.25, linewidth=0, label="min–max over seeds")
        ax_e.axhline(0.5, color="tab:green", linestyle=":", label="ε = ½ (certified below)")
        ax_e.set_yscale("log")
        ax_e.set_ylabel("run certificate ε (whole training set)")
        ax_e.set_title(f"{where}: ε over phase 2")
        ax_e.legend(fontsize="small")
        _base_panel(ax_r, algos.get(False, []))
        ax_r.set_title(f"{where}: base network's own residual")
        format_epoch_axes((ax_e, ax_r), modified)
    if title:
        fig.suptitle(title)
    return fig


def _base_panel(ax, base_runs: Sequence[RunRecord]) -> None:
    """The base runs' residual lower bounds over training (probes) and at the end, or why there are none."""
    drew = False
    for r in base_runs:
        xs, ys = r.curve("alignment_lower_bound")
        if xs:
            ax.plot(xs, ys, color=COLORS[False], alpha=0.7, label="base: r ≥ (probes)" if not drew else None)
            drew = True
        end = read_alignment_lower(r)
        if end is not None and end.get("lower") is not None and r.summary is not None:
            ax.plot([r.summary.epochs_completed], [end["lower"]], marker="s", color=COLORS[False],
                    label="base: r ≥ at the end (whole training set)" if not drew else None)
            drew = True
    if drew:
        ax.set_ylabel("lower bound on the alignment residual r")
        ax.legend(fontsize="small")
        return
    reasons = sorted({(read_alignment_lower(r) or {}).get("skipped") or "not computed" for r in base_runs})
    ax.text(0.5, 0.5, "not recorded:\n" + "\n".join(_wrap(t) for t in reasons), ha="center", va="center",
            fontsize="small", transform=ax.transAxes, wrap=True)
    ax.set_yticks([])


def _wrap(text: str, width: int = 60) -> str:
    words, lines, line = text.split(), [], ""
    for w in words:
        if len(line) + len(w) + 1 > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    return "\n".join(lines + [line])


def main(argv: list[str] | None = None) -> int:
    return run_dirs_main(plot, "conditions_over_training.png", __doc__.splitlines()[0], argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
