"""``dynamics verify`` (also ``make run``): every statement of THEORY.md on embedded networks and data.

Runs the demonstrations of :mod:`theory.demos`, the checks of :mod:`theory.network_size` and the exact proofs
of :mod:`theory.symbolic` (plus Semeion rows when the data root has it), prints one table
(statement | setting | measured | tolerance | holds), writes ``<out>/report.json`` (atomic, with provenance)
and ``<out>/figures/*.png``, and exits 1 if any statement fails where it should hold or any control holds
where it must fail. No download; a few minutes at most on 2 CPU cores.

>>> result = collect(data_root="/nonexistent", include=("semeion",))   # no data there: the rows are skipped
>>> result.reports, result.skipped[0].startswith("Semeion: skipped"), result.passed
([], True, True)
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from theory.report import StatementReport, format_table

__all__ = ["HELP", "add_arguments", "run", "collect", "VerifyResult", "GROUPS", "write_figures"]

log = logging.getLogger(__name__)

HELP = ("verify the statements derived from the definitions in Kawaguchi et al. (2022) on small networks: "
        "table, report.json and figures")

GROUPS = ("decomposition", "critical", "plateau", "necessity", "width", "depth", "controls", "symbolic", "semeion")


@dataclass
class VerifyResult:
    """All reports of one verification, the skipped parts (with reasons) and the run time per group."""

    reports: list[StatementReport]
    skipped: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.reports)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "reports": [r.to_dict() for r in self.reports], "skipped": self.skipped,
                "seconds": self.seconds}


def _symbolic_reports(quick: bool) -> list[StatementReport]:
    from theory.symbolic import all_proofs

    return [StatementReport(p.statement, f"sympy: {p.name}", p.setting, {"simplified_difference": p.difference},
                            {"exact": 0.0}, p.holds, notes="exact algebra") for p in all_proofs(quick)]


def collect(seed: int = 0, quick: bool = False, data_root: Optional[str] = None,
            include: Sequence[str] = GROUPS) -> VerifyResult:
    """Run the groups in ``include`` (see :data:`GROUPS`) and return their reports."""
    from dynamics.errors import DataError
    from theory import demos

    unknown = set(include) - set(GROUPS)
    if unknown:
        from dynamics.errors import InputError

        raise InputError(f"unknown verification groups {sorted(unknown)}; choose from {list(GROUPS)}")
    runners = {
        "decomposition": lambda: demos.demo_random_points(seed) + demos.demo_trajectory(seed, quick),
        "critical": lambda: demos.demo_sufficiency(seed, quick),
        "plateau": lambda: demos.demo_plateau(seed, quick),
        "necessity": lambda: [demos.demo_necessity(seed=seed, quick=quick)],
        "width": lambda: demos.demo_width_sweep(seed, quick),
        "depth": lambda: demos.demo_depth(seed),
        "controls": lambda: demos.demo_controls(seed),
        "symbolic": lambda: _symbolic_reports(quick),
    }
    result = VerifyResult(reports=[])
    for group in include:
        start = time.perf_counter()
        if group == "semeion":
            root = data_root if data_root is not None else os.environ.get("DYNAMICS_DATA")
            try:
                result.reports += demos.demo_semeion(root, seed=seed)
            except DataError as exc:  # absent or corrupt files; anything else is a real failure
                result.skipped.append(f"Semeion: skipped ({exc})")
        else:
            result.reports += runners[group]()
        result.seconds[group] = round(time.perf_counter() - start, 2)
        log.debug("verify: %s done in %.1f s", group, result.seconds[group])
    order = {s: i for i, s in enumerate("1234567")}
    result.reports.sort(key=lambda r: (order.get(r.statement, 9), not r.expected))
    return result


def write_figures(result: VerifyResult, folder: Path) -> list[Path]:
    """Draw every figure the reports allow into ``folder``; returns the paths written."""
    from figures import beyond_ntk, depth_rank, gradient_bound, loss_decomposition, necessity, plateau, width_sweep

    folder.mkdir(parents=True, exist_ok=True)
    by = {}
    for r in result.reports:
        by.setdefault((r.statement, r.name), []).append(r)
    plans = [
        ("loss_decomposition.png", loss_decomposition.plot, [r for r in by.get(("1", "loss decomposition"), [])
                                                           if "steps" in r.series]),
        ("gradient_bound.png", gradient_bound.plot, [r for r in by.get(("2", "gradient bound"), [])
                                                   if "steps" in r.series]),
        ("plateau.png", plateau.plot, [r for r in result.reports if r.statement == "3" and "losses" in r.series]),
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
    parser.add_argument("--out", default="runs/verify", help="output folder (report.json, figures/); "
                        "default runs/verify")
    parser.add_argument("--data-root", default=None, help="data root for the Semeion rows (default "
                        "$DYNAMICS_DATA); the rows are skipped, with the reason, when the file is absent")
    parser.add_argument("--quick", action="store_true", help="smaller runs (same checks, same tolerances)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every network and data set (default 0)")
    parser.add_argument("--no-figures", action="store_true", help="skip the figures")


def run(args: argparse.Namespace) -> int:
    from dynamics.atomic import write_json
    from dynamics.provenance import provenance

    import torch

    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny float64 problems: one thread is fastest, and results do not depend on cores
    try:
        result = collect(seed=args.seed, quick=args.quick, data_root=args.data_root)
    finally:
        torch.set_num_threads(threads)
    figures = [] if args.no_figures else write_figures(result, out / "figures")
    total = time.perf_counter() - start
    config = {"seed": args.seed, "quick": args.quick, "data_root": args.data_root, "torch_threads": 1}
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
