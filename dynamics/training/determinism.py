"""Seeds and random states: what makes a run reproducible bit for bit on CPU and resumable exactly.

>>> import torch
>>> seed_everything(0)
>>> with rng_untouched():
...     _ = torch.rand(3)  # draws inside do not move the global stream
>>> a = torch.rand(1); seed_everything(0); torch.equal(a, torch.rand(1))
True
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

__all__ = ["seed_everything", "rng_state", "set_rng_state", "rng_untouched", "deterministic_algorithms"]


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The global random states (python, numpy, torch CPU, and CUDA when initialised)."""
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


@contextlib.contextmanager
def rng_untouched() -> Iterator[None]:
    """Run a block (a check, a probe, the switch) without moving the global random streams."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


@contextlib.contextmanager
def deterministic_algorithms(device: str) -> Iterator[None]:
    """``torch.use_deterministic_algorithms(True)`` during a CPU run (the previous setting restored after)."""
    prev = torch.are_deterministic_algorithms_enabled()
    if device == "cpu":
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev)
