"""``dynamics train``: one training run (base or modified) into a run folder.

    dynamics train --dataset mnist --model resnet_small --optimizer sgd --lr 0.01 --momentum 0.9 \\
        --weight-decay 1e-4 --batch-size 64 --epochs 50 [--augment] [--modified --tau 25] [--probe-every 5] \\
        [--device cpu|cuda] [--seed 0] --out DIR [--resume | --overwrite]

Every option but ``--out``, ``--resume``, ``--overwrite`` and ``--no-progress`` is a field of
:class:`~dynamics.training.config.TrainConfig`: the options are generated from the dataclass (name, type, default,
help), and the configuration is built back from them field by field, so the two cannot disagree.
Every value is checked before any data loads or any folder is made. On a terminal a progress bar shows each
epoch; otherwise one plain line per epoch goes to stdout.

Multi-process: ``torchrun --nproc_per_node 2 -m dynamics train ...`` (data parallel, see
:mod:`dynamics.training.distributed`).

>>> p = argparse.ArgumentParser(); add_arguments(p)
>>> cfg = config_from_args(p.parse_args(["--out", "x", "--epochs", "3", "--milestones", "2", "--betas", "0.8", "0.9"]))
>>> cfg.epochs, cfg.milestones, cfg.betas, cfg.schedule == TrainConfig().schedule
(3, [2], (0.8, 0.9), True)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import types
import typing
from pathlib import Path
from typing import Any

from dynamics.cli.validate import arg, output_folder
from dynamics.training.records import EpochRecord, RunSummary
from dynamics.training.checkpoint import CheckpointError, load_checkpoint
from dynamics.training.config import TrainConfig
from dynamics.training.loop import check_runnable, train
from dynamics.training.run_certificate import RunCertificate

__all__ = ["HELP", "add_arguments", "config_from_args", "run", "command_line"]

HELP = "train a model (optionally with the modified framework that enforces alignment) into a run folder"

_RUN_OPTIONS = ("out", "resume", "overwrite", "no_progress")


def _json_dict(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object, e.g. '{\"width\": 2}'")
    return value


def _optional(kind: type) -> Any:
    def convert(text: str) -> Any:
        return None if text.lower() == "none" else kind(text)

    convert.__name__ = kind.__name__
    return convert


def _field_kwargs(f: dataclasses.Field, hint: Any) -> dict[str, Any]:
    """argparse keyword arguments for TrainConfig field ``f`` with resolved type ``hint``."""
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    help_text = f.metadata.get("help", "")
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        if default:
            raise TypeError(f"boolean field {f.name} defaults to True; give it a --no-... option")
        return {"action": "store_true", "help": help_text}
    shown = {"help": f"{help_text} (default: {json.dumps(default) if isinstance(default, (dict, list)) else default})"}
    if origin is dict or hint is dict:
        return {"type": _json_dict, "default": default, "metavar": "JSON", **shown}
    if origin is list:
        return {"type": args[0], "nargs": "*", "default": default, **shown}
    if origin is tuple:
        return {"type": args[0], "nargs": len(args), "default": default, **shown}
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        inner = next(a for a in args if a is not type(None))
        return {"type": _optional(inner), "default": default, **shown}
    return {"type": hint, "default": default, **shown}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """One option per :class:`TrainConfig` field (``--weight-decay`` for ``weight_decay``), then the run options."""
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, **_field_kwargs(f, hints[f.name]))
    p.add_argument("--out", required=True, type=arg(output_folder, "--out"), help="the run folder")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    g.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar and no per-epoch lines")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` the arguments describe (field by field; the run options are not part of it)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    return TrainConfig.from_dict(values)


def _print_epoch(rec: EpochRecord) -> None:
    print(str(rec), flush=True)


def command_line(cfg: TrainConfig, out: Any, *extra: str) -> str:
    """The ``dynamics train`` command that describes ``cfg`` (only fields that differ from their default).

    >>> command_line(TrainConfig(dataset="blobs", epochs=3, milestones=[2]), "runs/a", "--resume")
    'dynamics train --dataset blobs --epochs 3 --milestones 2 --out runs/a --resume'
    """
    default, words = TrainConfig(), ["dynamics", "train"]
    for f in dataclasses.fields(TrainConfig):
        value = getattr(cfg, f.name)
        if value == getattr(default, f.name):
            continue
        option = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            words.append(option)
        elif isinstance(value, (list, tuple)):
            words += [option, *map(str, value)]
        elif isinstance(value, dict):
            words += [option, json.dumps(value)]
        else:
            words += [option, str(value)]
    return shlex.join([*words, "--out", str(out), *extra])


def _resume_hint(cfg: TrainConfig, out: Any) -> str:
    try:
        epoch = load_checkpoint(Path(out) / "checkpoints" / "last.pt")["epoch"]
    except CheckpointError:
        return f"no checkpoint was written yet; start the run again with: {command_line(cfg, out, '--overwrite')}"
    return f"the last checkpoint is after epoch {epoch}; continue with: {command_line(cfg, out, '--resume')}"


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    check_runnable(cfg, args.out)
    on_epoch = None if args.no_progress or sys.stdout.isatty() else _print_epoch  # off a terminal: plain lines
    try:
        summary = train(cfg, args.out, resume=args.resume, overwrite=args.overwrite,
                        progress=False if args.no_progress else None, on_epoch=on_epoch)
    except KeyboardInterrupt:
        print(f"dynamics train: interrupted; {_resume_hint(cfg, args.out)}", file=sys.stderr)
        return 130
    if summary is None:  # a non-zero rank under torchrun
        return 0
    _print_summary(args.out, summary)
    return 0


def _print_summary(out: Any, s: RunSummary) -> None:
    f = s.final
    print(f"{out}: {s.status} after {s.epochs_completed} epochs in {s.wall_time_s:.1f} s; final (eval mode, whole "
          f"sets): train loss {f.train_loss:.4g} acc {f.train_acc:.4f}, test loss {f.test_loss:.4g} "
          f"acc {f.test_acc:.4f}")
    if s.switch is not None:
        print(f"  switch at tau={s.switch.tau_effective}: features {s.switch.features}, scale {s.switch.scale:.3g}")
    for when, d in (("tau", s.run_certificate_tau), ("end", s.run_certificate_end)):
        if d is not None:
            print("  " + str(RunCertificate.from_dict(d)).replace("\n", "\n  "))
    for when, c in (("tau", s.conditions_tau), ("end", s.conditions_end)):
        if c is not None:
            print(f"  conditions at {when}: on-model residual {c.on_model_residual:.2e} "
                  f"({'holds' if c.on_model_holds else 'fails'}), alignment residual {c.alignment_residual:.2e} on "
                  f"{c.n_checked} points ({'holds' if c.alignment_holds else 'fails'}); {c.certificate}")
