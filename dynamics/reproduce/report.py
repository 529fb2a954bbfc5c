"""Writing the reproduction report: the table in four formats and the two figures, from run records.

:func:`write_report` is what both ``dynamics reproduce`` (after training) and ``dynamics report RUN_DIR...``
(without training) call. Every file is written atomically, so a reader never sees a half-written table.

Files written into ``out_dir``: ``table.md``, ``table.csv``, ``table.tex``, ``table.json`` (the table's
``to_dict()`` plus the list of runs and provenance), ``training_curves.png`` and
``conditions_over_training.png`` (the latter only when some run recorded probes).
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dynamics.atomic import write_bytes, write_json, write_text
from dynamics.reproduce.runs import RunRecord
from dynamics.reproduce.table import ReproductionTable, SkippedDataset, build_table

__all__ = ["write_report", "save_figure", "TABLE_FILES", "FIGURE_FILES"]

log = logging.getLogger(__name__)

TABLE_FILES = ("table.md", "table.csv", "table.tex", "table.json")
FIGURE_FILES = ("training_curves.png", "conditions_over_training.png")


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 120) -> None:
    """Save a matplotlib ``Figure`` as PNG atomically (rendered in memory, then written in one replace)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    write_bytes(path, buf.getvalue())


def write_report(runs: Sequence[RunRecord], out_dir: str | os.PathLike, skipped: Sequence[SkippedDataset] = (),
                 caption: str | None = None, figures: bool = True) -> ReproductionTable:
    """Build the table from ``runs`` and write the tables and figures into ``out_dir``.

    Args:
        runs: run records; only finished runs enter the numbers, the rest are counted in the notes.
        out_dir: destination folder (created if needed).
        skipped: datasets to list as skipped, with their reason.
        caption: table caption (default: a description of the columns).
        figures: also draw ``training_curves.png`` and ``conditions_over_training.png``.

    Returns:
        the :class:`ReproductionTable`.
    """
    from dynamics.provenance import provenance

    out = Path(out_dir)
    table = build_table(runs, skipped=skipped, caption=caption)
    write_text(out / "table.md", table.to_markdown())
    write_text(out / "table.csv", table.to_csv())
    write_text(out / "table.tex", table.to_latex())
    write_json(out / "table.json", {**table.to_dict(), "runs": [r.to_dict() for r in runs],
                                    "provenance": provenance()})
    if figures and any(r.epochs for r in runs):
        from figures import conditions_over_training, training_curves

        fig = training_curves.plot(runs)
        save_figure(fig, out / "training_curves.png")
        if any(r.probes for r in runs):
            save_figure(conditions_over_training.plot(runs), out / "conditions_over_training.png")
        else:
            log.info("no probe records in any run: conditions_over_training.png not drawn")
    log.info("wrote the reproduction table (%d rows) to %s", len(table.rows), out)
    return table
