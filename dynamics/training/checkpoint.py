"""Atomic checkpoints of a training run: everything needed to continue it bit for bit.

A checkpoint is one ``torch.save``-d dict written with :func:`dynamics.atomic.torch_save` (a crash leaves the
previous one intact):

    format, config (dict), epoch (completed epochs), phase ("base" | "modified"), model (state_dict),
    framework (the spec of f̃ = f + g or None), switch_info, optimizer (state_dict), loader (state_dict),
    rng (torch / numpy / python / cuda states), probe (probe indices and the initial NTK), conditions_tau,
    probe_time_s, train_time_s.

>>> import tempfile, pathlib, torch
>>> p = pathlib.Path(tempfile.mkdtemp()) / "last.pt"
>>> save_checkpoint(p, {"epoch": 3, "rng": rng_state()})
>>> load_checkpoint(p)["epoch"]
3
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dynamics.atomic import torch_save
from dynamics.errors import RunStateError

__all__ = ["save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state", "seed_everything", "FORMAT"]

FORMAT = 1


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The global random states (python, numpy, torch CPU, and CUDA when available)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` (plus the format number) atomically to ``path``."""
    torch_save(path, {"format": FORMAT, **state})


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; :class:`RunStateError` if absent or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise RunStateError(f"no checkpoint at {path}: nothing to resume (start the run without --resume)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the file is unusable
        raise RunStateError(f"checkpoint {path} is unreadable ({type(exc).__name__}: {exc}); delete it or "
                            "start again with --overwrite") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise RunStateError(f"checkpoint {path} has format {state.get('format') if isinstance(state, dict) else '?'}"
                            f", this version reads format {FORMAT}; start again with --overwrite")
    return state
