"""The ``dynamics`` command line (also ``python -m dynamics``): every piece of command-line code lives here.

This package is the top of the import graph: it is the only part of ``dynamics`` that may import the script
packages ``theory`` and ``figures``; nothing else imports it. Each verb is one module that defines ``HELP``
(one line), ``add_arguments(parser)`` and ``run(args) -> int`` (the exit status), and may define ``ON_INTERRUPT``
(what to do after Ctrl-C, printed with "interrupted"):

=============  ==============================================================================
``ntk``        :mod:`dynamics.cli.ntk` -- the empirical NTK of a small default network, self-checked
``data``       :mod:`dynamics.cli.data` -- list, download, verify the benchmark datasets
``train``      :mod:`dynamics.cli.train` -- one training run into a run folder
``reproduce``  :mod:`dynamics.cli.reproduce` -- the base-vs-modified comparison of a preset
``report``     :mod:`dynamics.cli.report` -- the reproduction table and figures from finished runs
``verify``     :mod:`dynamics.cli.verify` -- the statements derived from the definitions (``make run``)
=============  ==============================================================================

Arguments are checked by :mod:`dynamics.cli.validate` before any data is loaded or folder created; a
:class:`~dynamics.errors.DynamicsError` becomes ``dynamics VERB: error: ...`` on stderr and exit status 2.

>>> build_parser().parse_args(["ntk", "--n", "4"]).command
'ntk'
"""

from __future__ import annotations

import argparse
import logging
import sys
from types import ModuleType

from dynamics.cli import data, ntk, report, reproduce, train, verify
from dynamics.errors import DynamicsError

__all__ = ["main", "build_parser", "SUBCOMMANDS"]

#: verb -> module. Add a line here when a subsystem gains a command.
SUBCOMMANDS: dict[str, ModuleType] = {
    "reproduce": reproduce,
    "report": report,
    "ntk": ntk,
    "train": train,
    "data": data,
    "verify": verify,
}


def build_parser() -> argparse.ArgumentParser:
    """The parser of every verb (``dynamics --help``)."""
    parser = argparse.ArgumentParser(
        prog="dynamics",
        description="Check the on-model structure assumption and the data architecture alignment condition "
        "(Kawaguchi, Zhang & Deng, 2022) on PyTorch networks, verify the statements derived from them, "
        "and train with the modified framework.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run, _on_interrupt=getattr(module, "ON_INTERRUPT", ""))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``dynamics ARGV``; returns the exit status (2 for a usage error or a :class:`DynamicsError`)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on a usage error (2); in-process callers get it
        return int(exc.code or 0)
    # Our own progress lines at INFO by default (-v: DEBUG); other libraries only at WARNING (-vv: everything).
    logging.basicConfig(level=logging.DEBUG if args.verbose >= 2 else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    for name in ("dynamics", "theory", "figures"):
        logging.getLogger(name).setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except DynamicsError as exc:
        print(f"dynamics {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = f"; {args._on_interrupt}" if args._on_interrupt else ""
        print(f"dynamics {args.command}: interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
