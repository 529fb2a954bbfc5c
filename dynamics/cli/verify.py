"""``dynamics verify`` (also ``make run``): statements 1-7 of ``docs/theory.md`` on embedded networks and data.

Collects the reports with :func:`theory.verify.collect`, prints one table (statement | setting | measured |
tolerance | holds), writes ``<out>/report.json`` (atomic, with provenance) and ``<out>/figures/*.png``, and
exits 1 if any statement fails where it should hold or any control holds where it must fail. No download; a
few minutes at most on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from dynamics.atomic import write_json
from dynamics.cli.validate import arg, folder_or_absent, output_folder, seed
from dynamics.provenance import provenance
from figures import beyond_ntk, depth_rank, gradient_bound, loss_decomposition, necessity, plateau, width_sweep
from theory import verify as statements
from theory.report import format_table

__all__ = ["HELP", "add_arguments", "run", "write_figures"]

ON_INTERRUPT = "no report was written; run the same command again"

HELP = ("verify the statements derived from the definitions in Kawaguchi et al. (2022) on small networks: "
        "table, report.json and figures")


def write_figures(result: statements.VerifyResult, folder: Path) -> list[Path]:
    """Draw every figure the reports allow into ``folder``; returns the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    by: dict[tuple[str, str], list] = {}
    for r in result.reports:
        by.setdefault((r.statement, r.name), []).append(r)
    plans = [
        ("loss_decomposition.png", loss_decomposition.plot, [r for r in by.get(("1", "loss decomposition"), [])
                                                           if "steps" in r.series]),
        ("gradient_bound.png", gradient_bound.plot, [r for r in by.get(("2", "gradient bound"), [])
                                                   if "steps" in r.series]),
        ("plateau.png", plateau.plot, [r for r in result.reports if r.statement == "3" and "losses" in r.series
                                       and "practical" not in r.name]),  # practical rows: notebook 08
        ("necessity.png", necessity.plot, [r for r in result.reports if r.statement == "4"]),
        ("width_sweep.png", width_sweep.plot, by.get(("5", "width sweep"), [])),
        ("depth_rank.png", depth_rank.plot, by.get(("6", "depth does not help"), [])),
        ("beyond_ntk.png", beyond_ntk.plot, by.get(("7", "beyond NTK"), [])),
    ]
    written = []
    for name, plot, reps in plans:
        if not reps:
            continue
        data = reps[0] if name in ("loss_decomposition.png", "gradient_bound.png", "width_sweep.png",
                                   "beyond_ntk.png") else reps
        plot(data, out_path=folder / name)
        written.append(folder / name)
    return written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/verify", type=arg(output_folder, "--out"),
                        help="output folder (report.json, figures/); default runs/verify")
    parser.add_argument("--data-root", default=None, type=arg(folder_or_absent, "--data-root"),
                        help="data root for the Semeion rows (default $DYNAMICS_DATA); the rows are skipped, with "
                        "the reason, when the file is absent")
    parser.add_argument("--quick", action="store_true", help="smaller runs (same checks, same tolerances)")
    parser.add_argument("--seed", type=arg(seed, "--seed"), default=0,
                        help="seed of every network and data set (default 0)")
    parser.add_argument("--no-figures", action="store_true", help="skip the figures")
    parser.add_argument("--full", action="store_true",
                        help="also the practical regime: a small CNN (p < n·k) trained by momentum SGD on Semeion "
                        "(about a minute or two of CPU; skipped with the reason when the data root lacks Semeion)")


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    out = Path(args.out)  # checked by validate.output_folder; made only when the report is written
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny float64 problems: one thread is fastest, and results do not depend on cores
    try:
        result = statements.collect(seed=args.seed, quick=args.quick, full=args.full,
                                    data_root=None if args.data_root is None else str(args.data_root))
    finally:
        torch.set_num_threads(threads)
    figures = [] if args.no_figures else write_figures(result, out / "figures")
    total = time.perf_counter() - start
    data_root = None if args.data_root is None else str(args.data_root)
    config = {"seed": args.seed, "quick": args.quick, "full": args.full, "data_root": data_root,
              "torch_threads": 1}
    payload = {"provenance": provenance(seed=args.seed, config=config), "seconds_total": round(total, 1),
               "figures": [str(p) for p in figures], **result.to_dict()}
    write_json(out / "report.json", payload)
    print(format_table(result.reports))
    for line in result.skipped:
        print(line)
    failed = [r for r in result.reports if not r.passed]
    print(f"\n{len(result.reports) - len(failed)}/{len(result.reports)} checks as expected "
          f"(controls must fail) in {total:.0f} s; report: {out / 'report.json'}"
          + (f"; figures: {out / 'figures'}" if figures else ""))
    for r in failed:
        print(f"FAILED: statement {r.statement} ({r.name}) -- {r.setting}")
    return 0 if not failed else 1
