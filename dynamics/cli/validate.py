"""Checking command-line arguments up front: before any data loads, any model trains or any folder is made.

Every check of a command-line value lives here, once. Each validator takes the value, returns it normalised,
and raises :class:`~dynamics.errors.InputError` with a message that names the option, says what was wrong and
what to do. None of them creates, writes or deletes anything.

Two ways to use them:

* as an ``argparse`` ``type=``, through :func:`arg` -- the value is checked while the command line is parsed,
  and a bad value ends the command with ``dynamics VERB: error: argument --out: ...`` and exit status 2;
* called directly from a verb's ``run`` (for checks that need more than one argument, e.g. :func:`bn_mode`);
  :func:`dynamics.cli.main` turns the ``InputError`` into ``dynamics VERB: error: ...`` and exit status 2.

>>> seed("7")
7
>>> seed(-1)
Traceback (most recent call last):
    ...
dynamics.errors.InputError: --seed must be an integer in 0..4294967295 (numpy's seeding range), got -1
>>> import argparse
>>> p = argparse.ArgumentParser(prog="x"); _ = p.add_argument("--n", type=arg(positive_int, "--n"))
>>> p.parse_args(["--n", "3"]).n
3
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from dynamics.errors import InputError

__all__ = ["arg", "output_folder", "existing_folder", "folder_or_absent", "device", "seed", "positive_int",
           "non_negative_int", "positive_float", "bn_mode", "MAX_SEED", "VIRTUAL_FILESYSTEMS"]

#: the largest seed every generator accepts (numpy's legacy seeding takes 0..2**32 - 1).
MAX_SEED = 2**32 - 1
#: kernel file systems where nothing may be written as a run folder.
VIRTUAL_FILESYSTEMS = (Path("/proc"), Path("/sys"), Path("/dev"))

T = TypeVar("T")


def arg(validator: Callable[..., T], option: str) -> Callable[[str], T]:
    """``validator`` as an ``argparse`` ``type=``: an :class:`InputError` becomes argparse's usage error
    (``argument --out: /etc/passwd is a file, ...``; argparse names the option, so the message does not repeat it).
    """

    def convert(text: str) -> T:
        try:
            return validator(text, option)
        except InputError as exc:
            message = str(exc)
            if message.startswith(option + " "):
                message = message[len(option) + 1:]
            raise argparse.ArgumentTypeError(message) from None

    convert.__name__ = getattr(validator, "__name__", "value")  # argparse names the type in some messages
    return convert


def _int(value: Any, option: str) -> int:
    if isinstance(value, bool):
        raise InputError(f"{option} must be an integer, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InputError(f"{option} must be an integer, got {value!r}") from None


def seed(value: Any, option: str = "--seed") -> int:
    """A seed in 0..:data:`MAX_SEED` (torch, numpy and Python's ``random`` all accept it)."""
    n = _int(value, option)
    if not 0 <= n <= MAX_SEED:
        raise InputError(f"{option} must be an integer in 0..{MAX_SEED} (numpy's seeding range), got {n}")
    return n


def positive_int(value: Any, option: str) -> int:
    """An integer ≥ 1.

    >>> positive_int("0", "--n")
    Traceback (most recent call last):
        ...
    dynamics.errors.InputError: --n must be a positive integer (1 or more), got 0
    """
    n = _int(value, option)
    if n < 1:
        raise InputError(f"{option} must be a positive integer (1 or more), got {n}")
    return n


def positive_float(value: Any, option: str) -> float:
    """A finite number > 0 (``1e9`` is accepted).

    >>> positive_float("1e9", "--memory-budget"), positive_float("-1", "--lr")
    Traceback (most recent call last):
        ...
    dynamics.errors.InputError: --lr must be a finite number > 0, got -1.0
    """
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{option} must be a number, got {value!r}") from None
    if not (math.isfinite(x) and x > 0):
        raise InputError(f"{option} must be a finite number > 0, got {x}")
    return x


def non_negative_int(value: Any, option: str) -> int:
    """An integer ≥ 0."""
    n = _int(value, option)
    if n < 0:
        raise InputError(f"{option} must be 0 or a positive integer, got {n}")
    return n


def _virtual_root(path: Path) -> Path | None:
    for root in VIRTUAL_FILESYSTEMS:
        if path == root or root in path.parents:
            return root
    return None


def _nearest_existing(path: Path) -> Path:
    """``path`` itself or its closest ancestor that exists (``/`` at worst)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor or "/")


def _writable(folder: Path) -> bool:
    """Whether files and sub-folders can be made in the existing folder ``folder`` (its permissions)."""
    return os.access(folder, os.W_OK | os.X_OK)


def output_folder(path: str | os.PathLike, option: str = "--out") -> Path:
    """A folder that is, or can be made, writable: it exists as a folder or does not exist yet.

    Refused (with what to do): a path that is a file or lies below a file, a path under ``/proc``, ``/sys`` or
    ``/dev``, and a folder (or the closest existing ancestor of a new one) that the user cannot write to.
    Nothing is created here; the verb creates the folder when it starts writing.

    >>> output_folder("/proc/self/out")
    Traceback (most recent call last):
        ...
    dynamics.errors.InputError: --out /proc/self/out is under /proc, a virtual file system of the kernel; ...
    """
    if str(path).strip() == "":
        raise InputError(f"{option} is empty; give a folder, e.g. {option} runs/NAME")
    p = Path(path).expanduser()
    absolute = Path(os.path.abspath(p))
    virtual = _virtual_root(absolute)
    if virtual is not None:
        raise InputError(f"{option} {p} is under {virtual}, a virtual file system of the kernel; choose a folder "
                         f"on a disk (e.g. {option} runs/NAME)")
    existing = _nearest_existing(absolute)
    if existing.exists() and not existing.is_dir():
        where = "is a file" if existing == absolute else f"lies below {existing}, which is a file"
        raise InputError(f"{option} {p} {where}, not a folder; choose a folder path (a new one is created)")
    if not _writable(existing):
        what = "the folder" if existing == absolute else f"its closest existing parent {existing}"
        raise InputError(f"{option} {p}: {what} is not writable by this user; choose a folder you can write to, or "
                         f"fix the permissions")
    return p


def folder_or_absent(path: str | os.PathLike, option: str = "--root") -> Path:
    """A path that is a folder or does not exist yet (a data root to read or create), never a file.

    >>> folder_or_absent("/dev/null")
    Traceback (most recent call last):
        ...
    dynamics.errors.InputError: --root /dev/null is not a folder (it is a file); give the folder that holds the datasets
    """
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise InputError(f"{option} {p} is not a folder (it is a file); give the folder that holds the datasets")
    return p


def existing_folder(path: str | os.PathLike, option: str) -> Path:
    """A folder that exists (e.g. a run folder to read)."""
    p = folder_or_absent(path, option)
    if not p.exists():
        raise InputError(f"{option} {p} does not exist; check the path")
    return p


def device(name: str, option: str = "--device") -> str:
    """A torch device this machine has: ``cpu``, ``cuda``, ``cuda:N`` (N < the number of GPUs), ``mps``.

    >>> device("cpu")
    'cpu'
    >>> device("gpu")
    Traceback (most recent call last):
        ...
    dynamics.errors.InputError: --device 'gpu' is not a torch device; use cpu, cuda or cuda:N
    """
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise InputError(f"{option} {name!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"{option} {name}: this torch ({torch.__version__}) sees no CUDA device; use "
                             f"{option} cpu, or install a CUDA build of torch on a machine with a GPU")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise InputError(f"{option} {name}: only {count} CUDA device(s) visible (cuda:0..cuda:{count - 1})")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise InputError(f"{option} {name}: MPS is not available on this machine; use {option} cpu")
    elif dev.type != "cpu":
        raise InputError(f"{option} {name!r}: only cpu, cuda[:N] and mps are supported")
    return name


def bn_mode(model: nn.Module, mode: str | None, option: str = "--bn-mode") -> str | None:
    """The ``bn_mode`` to pass for ``model``: ``mode`` (``"eval"`` by default) when it has BatchNorm layers,
    ``None`` when it has none -- and then an explicit ``mode`` is refused, since it would change nothing.

    >>> bn_mode(nn.Linear(2, 2), None) is None, bn_mode(nn.BatchNorm1d(2), None)
    (True, 'eval')
    >>> bn_mode(nn.Linear(2, 2), "batch")
    Traceback (most recent call last):
        ...
    dynamics.errors.InputError: --bn-mode batch: this model has no BatchNorm layer, so the option would change ...
    """
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if has_bn:
        return mode or "eval"
    if mode is not None:
        raise InputError(f"{option} {mode}: this model has no BatchNorm layer, so the option would change nothing; "
                         f"leave it out (it applies to --model resnet)")
    return None
