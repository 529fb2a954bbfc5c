"""The ``dynamics`` command line (also ``python -m dynamics``).

Each subcommand lives in the module of the concept it runs; that module defines ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int`` (the exit status). Heavy imports happen inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# subcommand -> module. Add a line here when a subsystem gains a command.
SUBCOMMANDS: dict[str, str] = {
    "reproduce": "dynamics.reproduce.cli",
    "report": "dynamics.reproduce.report_cli",
    "ntk": "dynamics.engine.cli",
    "train": "dynamics.training.cli",
    "data": "dynamics.data.cli",
    "verify": "theory.verify",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dynamics",
        description="Check the on-model structure assumption and the data architecture alignment condition "
        "(Kawaguchi, Zhang & Deng, 2022) on PyTorch networks, verify the statements derived from them, "
        "and train with the modified framework.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Our own progress lines at INFO by default (-v: DEBUG); other libraries only at WARNING (-vv: everything).
    logging.basicConfig(level=logging.DEBUG if args.verbose >= 2 else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    for name in ("dynamics", "theory", "figures"):
        logging.getLogger(name).setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    from dynamics.errors import DynamicsError

    try:
        return int(args._run(args) or 0)
    except DynamicsError as exc:
        print(f"dynamics {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dynamics {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
