"""``dynamics report RUN_DIR...``: rebuild the reproduction table and figures from finished runs (no training).

Each argument is a run directory or a folder searched for them (e.g. the ``--out`` of ``dynamics reproduce``).
:func:`write_figures` is the figure writer both this command and ``dynamics reproduce`` pass to
:func:`dynamics.reproduce.write_report`.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from dynamics.cli.validate import arg, output_folder
from dynamics.reproduce.presets import get_preset
from dynamics.reproduce.recertify import describe, needs_recertification, recertify_end
from dynamics.reproduce.report import write_report
from dynamics.reproduce.run_groups import RunRecord, discover_runs
from dynamics.reproduce.table import COLUMNS_CAPTION
from figures import conditions_over_training, training_curves
from figures.plotting import save_figure

__all__ = ["HELP", "add_arguments", "run", "write_figures"]

log = logging.getLogger(__name__)

HELP = "rebuild the reproduction table (md, csv, tex, json) and figures from finished runs, without training"


def write_figures(runs: Sequence[RunRecord], out_dir: Path) -> list[Path]:
    """``training_curves.png`` (runs with epoch records) and ``conditions_over_training.png`` (only when some
    modified run recorded its run certificate ε) in ``out_dir``; returns the paths written."""
    written = [save_figure(training_curves.plot(runs), Path(out_dir) / "training_curves.png")]
    if conditions_over_training.has_data(runs):
        written.append(save_figure(conditions_over_training.plot(runs),
                                   Path(out_dir) / "conditions_over_training.png"))
    else:
        log.info("no modified run recorded a run certificate epsilon: conditions_over_training.png not drawn")
    return written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories or folders holding them")
    parser.add_argument("--out", default="report", type=arg(output_folder, "--out"),
                        help="output folder (default: %(default)s)")
    parser.add_argument("--preset", choices=("paper", "cpu"), default=None,
                        help="add this preset's protocol and reductions to the caption")
    parser.add_argument("--caption", default=None, help="table caption (default: a description of the columns)")
    parser.add_argument("--no-figures", action="store_true", help="write the tables only")
    parser.add_argument("--recertify", action="store_true",
                        help="first recompute, from their final checkpoints, the end certificate of finished "
                             "modified runs written with the generic ||Z*|| bound (reads their data as training "
                             "did; nothing is trained)")


def run(args: argparse.Namespace) -> int:
    runs = discover_runs(args.runs)
    if args.recertify:
        for record in runs:
            if needs_recertification(record):
                out = recertify_end(record)
                print(f"{record.path}: {describe(out)}", flush=True)
        runs = discover_runs(args.runs)
    caption = args.caption if args.caption is not None else COLUMNS_CAPTION
    if args.preset is not None:
        caption = f"{caption} {get_preset(args.preset).caption()}"
    table = write_report(runs, args.out, caption=caption, figures=None if args.no_figures else write_figures)
    print(table)
    print(f"{len(runs)} runs read; table and figures written to {args.out}")
    return 0
