"""``dynamics data list | download NAME | verify NAME``: see, fetch and check the benchmark datasets."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from dynamics.cli.validate import arg, folder_or_absent
from dynamics.data import DATASETS, load_dataset
from dynamics.data.catalogue import check_name, resolve_root
from dynamics.data.download import download
from dynamics.errors import DataError

HELP = "list, download (with checksum verification and resume) or verify the benchmark datasets"


_ROOT = arg(folder_or_absent, "--root")
_ROOT_HELP = "data root (default $DYNAMICS_DATA, then ~/.cache/dynamics)"


def _root(args: argparse.Namespace) -> Path:
    """--root, else $DYNAMICS_DATA, else ~/.cache/dynamics; never a file."""
    if args.root is not None:
        option = "--root"
    else:
        option = "the data root from $DYNAMICS_DATA" if os.environ.get("DYNAMICS_DATA") else "the default data root"
    return folder_or_absent(resolve_root(args.root, must_exist=False), option)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    p = sub.add_parser("list", help="datasets, their files and whether they are present under the root")
    p.add_argument("--root", default=None, type=_ROOT, help=_ROOT_HELP)
    p = sub.add_parser("download", help="fetch a dataset from its official source into ROOT/NAME")
    p.add_argument("name", help="dataset name (see `dynamics data list`)")
    p.add_argument("--root", default=None, type=_ROOT, help=_ROOT_HELP)
    p.add_argument("--base-url", default=None, help="fetch BASE_URL/<file> instead of the official URLs")
    p.add_argument("--extra", action="store_true", help="SVHN: also the 1.3 GB extra split")
    p.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds")
    p = sub.add_parser("verify", help="load every split of a dataset with checksum verification")
    p.add_argument("name", help="dataset name")
    p.add_argument("--root", default=None, type=_ROOT, help=_ROOT_HELP)


def run(args: argparse.Namespace) -> int:
    if args.data_command == "list":
        root = _root(args)
        print(f"data root: {root}")
        for name, info in DATASETS.items():
            present = [f for f in info.files if (root / name / f).is_file()]
            c, h, w = info.shape
            print(f"  {name:9s} {c}x{h}x{w}  {info.num_classes:3d} classes  splits {'/'.join(info.splits):16s} "
                  f"files present {len(present)}/{len(info.files)}  ({info.home})")
        return 0
    if args.data_command == "download":
        report = download(args.name, _root(args), base_url=args.base_url, extra=args.extra, timeout=args.timeout)
        print(report)
        return 0
    info = check_name(args.name)
    root = _root(args)
    failed = 0
    for split in info.splits:
        if split in ("all",):
            continue
        try:
            x, y = load_dataset(args.name, split, root)
            print(f"{args.name}/{split}: OK, x {tuple(x.shape)}, {int(y.max()) + 1} classes seen")
        except DataError as exc:
            if split == "extra" and "none of" in str(exc):
                print(f"{args.name}/{split}: not present (optional)")
                continue
            failed += 1
            print(f"{args.name}/{split}: FAILED: {exc}")
    return 1 if failed else 0
