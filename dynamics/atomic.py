"""Atomic file writes: a reader never sees a half-written result or checkpoint.

Each function writes to a temporary file in the destination folder, flushes and fsyncs it, then
``os.replace``-s it over the destination (atomic on POSIX and Windows within one filesystem).

>>> import json, tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> write_json(d / "r.json", {"a": 1})
>>> json.loads((d / "r.json").read_text())
{'a': 1}
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, IO

import numpy as np
import torch

__all__ = ["write_bytes", "write_text", "write_json", "torch_save", "append_line"]


def _atomic(path: str | os.PathLike, mode: str, writer: Callable[[IO], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        with os.fdopen(fd, mode) as fh:
            writer(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    _atomic(path, "wb", lambda fh: fh.write(data))


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    _atomic(path, "w", lambda fh: fh.write(text))


def write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    """Write ``obj`` as JSON atomically (NaN/inf are written as JSON ``null`` would lose them: kept as NaN)."""
    write_text(path, json.dumps(obj, indent=indent, sort_keys=False, default=_json_default) + "\n")


def torch_save(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` atomically: an interrupted save leaves the previous checkpoint intact."""
    _atomic(path, "wb", lambda fh: torch.save(obj, fh))


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line to a log-like file (e.g. ``metrics.jsonl``) and fsync it.

    Appends are not atomic replacements; readers of JSONL files must ignore a trailing partial line,
    which only a crash in the middle of this call can leave.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(line.rstrip("\n") + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().tolist()
    if isinstance(obj, torch.dtype):
        return str(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")
