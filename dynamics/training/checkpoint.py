"""Checkpoints of a training run: atomic, verified on read, bound to the configuration that wrote them.

A checkpoint is one ``torch.save``-d dict (format :data:`FORMAT`): config_digest (of the
:class:`~dynamics.training.config.TrainConfig` that wrote it), epoch (completed epochs), model (state_dict),
framework (the spec of f̃ = f + g or None), switch (the switch record or None), records (that epoch's metrics
records, appended to metrics.jsonl after the checkpoint is written), optimizer, loader, rng (python / numpy /
torch / cuda states), probe, conditions_tau, train_time_s.

Integrity: beside ``last.pt`` lies ``last.pt.sha256`` (JSON ``{"accept": [sha256, ...]}``). A save writes, each
step atomically, (1) the digest file accepting the old and the new digest, (2) the checkpoint, (3) the digest
file accepting only the new one; so a crash at any moment leaves a checkpoint whose digest is accepted, while a
checkpoint changed on disk afterwards (bit rot, a bad copy, an edit) matches no accepted digest and is refused.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "last.pt"
>>> save_checkpoint(p, {"epoch": 3}, config_digest="abc")
>>> load_checkpoint(p, config_digest="abc")["epoch"]
3
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import torch

from dynamics.atomic import write_bytes, write_json
from dynamics.errors import RunStateError

__all__ = ["save_checkpoint", "load_checkpoint", "digest_path", "FORMAT", "CheckpointError"]

FORMAT = 2


class CheckpointError(RunStateError):
    """A checkpoint is missing, damaged, of another format, or was written by another configuration."""


def digest_path(path: str | os.PathLike) -> Path:
    """The digest file that lies beside checkpoint ``path``."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def _accepted(path: Path) -> list[str]:
    dp = digest_path(path)
    try:
        accept = json.loads(dp.read_text())["accept"]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError):
        raise CheckpointError(f"the digest file {dp} is damaged, so checkpoint {path} cannot be verified; start the "
                              "run again with --overwrite") from None
    return [str(a) for a in accept] if isinstance(accept, list) else []


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any], config_digest: str) -> None:
    """Write ``state`` (plus format and ``config_digest``) to ``path`` with its digest, atomically."""
    path = Path(path)
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "config_digest": config_digest, **state}, buf)
    data = buf.getvalue()
    new = hashlib.sha256(data).hexdigest()
    old = _accepted(path) if path.is_file() else []
    write_json(digest_path(path), {"accept": [*old, new]})  # old: the digest(s) of the file now on disk
    write_bytes(path, data)
    write_json(digest_path(path), {"accept": [new]})


def load_checkpoint(path: str | os.PathLike, config_digest: str | None = None) -> dict[str, Any]:
    """Read and verify a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: the checkpoint file.
        config_digest: when given, the checkpoint must have been written by a configuration with this digest
            (:meth:`TrainConfig.digest`).

    Raises:
        CheckpointError: absent, digest missing or not matching (the file changed after it was written), not
        readable, another format, or written by another configuration; the message says what to do.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: nothing to resume (start the run without --resume)")
    data = path.read_bytes()
    accepted = _accepted(path)
    if not accepted:
        raise CheckpointError(f"checkpoint {path} has no digest file {digest_path(path).name} beside it, so it "
                              "cannot be verified; start the run again with --overwrite")
    if hashlib.sha256(data).hexdigest() not in accepted:
        raise CheckpointError(f"checkpoint {path} is corrupt: its SHA-256 does not match the digest written with it "
                              f"({digest_path(path).name}); it was changed after it was saved. Start the run again "
                              "with --overwrite (or restore the folder from a backup)")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the file is unusable
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(exc).__name__}: {exc}); start the run again "
                              "with --overwrite") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else "?"
        raise CheckpointError(f"checkpoint {path} has format {found}, this version reads format {FORMAT}; start "
                              "the run again with --overwrite")
    if config_digest is not None and state.get("config_digest") != config_digest:
        raise CheckpointError(f"checkpoint {path} was written by a different configuration (config digest "
                              f"{str(state.get('config_digest'))[:12]}..., this run's is {config_digest[:12]}...); "
                              "resume with the configuration in the run's config.json, or pass --overwrite")
    return state
