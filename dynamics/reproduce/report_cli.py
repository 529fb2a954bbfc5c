"""``dynamics report RUN_DIR...``: rebuild the reproduction table and figures from finished runs (no training).

Each argument is a run directory or a folder searched for them (e.g. the ``--out`` of ``dynamics reproduce``).
"""

from __future__ import annotations

import argparse

HELP = "rebuild the reproduction table (md, csv, tex, json) and figures from finished runs, without training"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories or folders holding them")
    parser.add_argument("--out", default="report", help="output folder (default: %(default)s)")
    parser.add_argument("--preset", choices=("paper", "cpu"), default=None,
                        help="add this preset's protocol and reductions to the caption")
    parser.add_argument("--caption", default=None, help="table caption (default: a description of the columns)")
    parser.add_argument("--no-figures", action="store_true", help="write the tables only")


def run(args: argparse.Namespace) -> int:
    from dynamics.reproduce.report import write_report
    from dynamics.reproduce.runs import discover_runs

    from dynamics.reproduce.presets import get_preset
    from dynamics.reproduce.table import COLUMNS_CAPTION

    runs = discover_runs(args.runs)
    caption = args.caption if args.caption is not None else COLUMNS_CAPTION
    if args.preset is not None:
        caption = f"{caption} {get_preset(args.preset).caption()}"
    table = write_report(runs, args.out, caption=caption, figures=not args.no_figures)
    print(table)
    print(f"{len(runs)} runs read; table and figures written to {args.out}")
    return 0
