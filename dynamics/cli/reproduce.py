"""``dynamics reproduce``: train the base-vs-modified comparison of a preset and write the table and figures.

Examples::

    dynamics reproduce --preset cpu --data-root /data            # MNIST + Semeion on a CPU, a few hours
    dynamics reproduce --preset paper --datasets mnist,kmnist --seeds 0,1 --out paper-run
    dynamics reproduce --preset paper --dry-run                  # what would run, what is missing

Rerunning the same command skips finished runs and resumes interrupted ones.
"""

from __future__ import annotations

import argparse
import sys

from dynamics.cli.report import write_figures
from dynamics.cli.validate import arg, device, folder_or_absent, output_folder, positive_int, seed
from dynamics.errors import InputError
from dynamics.reproduce.campaign import reproduce

HELP = "train the base vs modified comparison of a preset (paper | cpu) and write the table and figures"

ON_INTERRUPT = ("run the same command again to continue: finished runs are skipped and the interrupted run resumes "
                "from its last checkpoint")

_AUGMENT = {"none": [False], "with": [True], "both": [False, True]}


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(t) for t in _csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 0,1,2; got {text!r}") from None
    try:
        return [seed(s, "--seeds") for s in seeds]
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", required=True, choices=("paper", "cpu"),
                        help="paper: the paper's protocol (GPU); cpu: the reduced protocol for a CPU")
    parser.add_argument("--datasets", type=_csv_list, default=None,
                        help="comma-separated subset, e.g. mnist,semeion (default: the preset's)")
    parser.add_argument("--seeds", type=_seed_list, default=None, help="comma-separated seeds (default: the preset's)")
    parser.add_argument("--augment", choices=sorted(_AUGMENT), default=None,
                        help="augmentation conditions to run (default: the preset's)")
    parser.add_argument("--out", default="reproduction", type=arg(output_folder, "--out"),
                        help="output folder (default: %(default)s)")
    parser.add_argument("--data-root", default=None, type=arg(folder_or_absent, "--data-root"),
                        help="dataset root (default: $DYNAMICS_DATA or ~/.cache/dynamics)")
    parser.add_argument("--device", default=None, type=arg(device, "--device"),
                        help="cpu | cuda | cuda:N (default: the preset's)")
    parser.add_argument("--threads", type=arg(positive_int, "--threads"), default=None,
                        help="torch threads per run (default: $OMP_NUM_THREADS, else the cores free now; recorded)")
    parser.add_argument("--no-figures", action="store_true", help="write the tables only")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and their state; train nothing")


def run(args: argparse.Namespace) -> int:
    data_root = None if args.data_root is None else str(args.data_root)
    table = reproduce(args.preset, datasets=args.datasets, out_dir=args.out, data_root=data_root,
                      seeds=args.seeds, augment=None if args.augment is None else _AUGMENT[args.augment],
                      dry_run=args.dry_run, device=args.device, threads=args.threads, figures=None if args.no_figures else write_figures,
                      progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(table)
    return 0
