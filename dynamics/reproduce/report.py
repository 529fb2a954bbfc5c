"""Writing the reproduction report: the table in four formats, from run records, and the figures by callback.

:func:`write_report` is what both ``dynamics reproduce`` (after training) and ``dynamics report RUN_DIR...``
(without training) call. Every file is written atomically, so a reader never sees a half-written table.

Files written into ``out_dir``: ``table.md``, ``table.csv``, ``table.tex``, ``table.json`` (the table's
``to_dict()`` plus the list of runs and provenance). Library code never draws: the figures
(``training_curves.png``, ``conditions_over_training.png``) are drawn by the ``figures`` callback the command
line passes (:func:`dynamics.cli.report.write_figures`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from dynamics.atomic import write_json, write_text
from dynamics.errors import InputError
from dynamics.provenance import provenance
from dynamics.reproduce.run_groups import RunRecord
from dynamics.reproduce.table import ReproductionTable, SkippedDataset, build_table

__all__ = ["write_report", "FigureWriter", "TABLE_FILES", "FIGURE_FILES"]

log = logging.getLogger(__name__)

TABLE_FILES = ("table.md", "table.csv", "table.tex", "table.json")
FIGURE_FILES = ("training_curves.png", "conditions_over_training.png")


#: draws the figures of ``runs`` into a folder and returns the paths written (see ``dynamics.cli.report``).
FigureWriter = Callable[[Sequence[RunRecord], Path], list[Path]]


def write_report(runs: Sequence[RunRecord], out_dir: str | os.PathLike, skipped: Sequence[SkippedDataset] = (),
                 caption: str | None = None, figures: FigureWriter | None = None) -> ReproductionTable:
    """Build the table from ``runs`` and write the tables and figures into ``out_dir``.

    Args:
        runs: run records; only finished runs enter the numbers, the rest are counted in the notes.
        out_dir: destination folder (created if needed).
        skipped: datasets to list as skipped, with their reason.
        caption: table caption (default: a description of the columns).
        figures: called as ``figures(runs, out_dir)`` after the tables when some run has an epoch record
            (the command line passes :func:`dynamics.cli.report.write_figures`); ``None`` (or ``False``): tables only.

    Returns:
        the :class:`ReproductionTable`.
    """
    if figures is not None and figures is not False and not callable(figures):
        raise InputError(f"figures= takes a function figures(runs, out_dir) (e.g. dynamics.cli.report.write_figures)"
                         f" or None, not {figures!r}")
    out = Path(out_dir)
    table = build_table(runs, skipped=skipped, caption=caption)
    write_text(out / "table.md", table.to_markdown())
    write_text(out / "table.csv", table.to_csv())
    write_text(out / "table.tex", table.to_latex())
    write_json(out / "table.json", {**table.to_dict(), "runs": [r.to_dict() for r in runs],
                                    "provenance": provenance()})
    if callable(figures) and any(r.epochs for r in runs):
        figures(runs, out)
    log.info("wrote the reproduction table (%d rows) to %s", len(table.rows), out)
    return table
