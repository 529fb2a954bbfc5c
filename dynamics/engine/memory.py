"""The one memory policy of the engine: what ``memory_budget`` means, how it is checked, how sizes are printed.

``memory_budget`` is the total number of bytes one call may allocate, **its result included**: the kernel K of
:func:`dynamics.ntk`, the dense J of :func:`dynamics.jacobian`, the product of :class:`dynamics.JacobianOperator`.
Also counted: the private copy of the model the engine works on, and the inputs when they had to be converted to
the compute dtype. What is left (the *workspace*) bounds the intermediates; every method sizes its tiles from the
cost model's estimate of them, keeping :data:`SLACK` of the workspace free for what estimates do not see
(allocator rounding, small temporaries). ``None`` means: the result plus :data:`DEFAULT_WORKSPACE` bytes.

The same validation serves the Python API (:func:`check_budget`) and the command line (:func:`parse_memory_budget`,
which also reads units: ``"256MiB"``, ``"2e9"``, ``"1.5GiB"``). A budget must be a positive number of bytes; zero,
negative, boolean, non-finite values and text are refused the same way everywhere.

>>> parse_memory_budget("256MiB")
268435456
>>> format_bytes(1000), format_bytes(3 * 2**20 // 2)
('1000 bytes', '1.50 MiB')
>>> Budget(2**20, 3 * 2**20, "the kernel K").workspace
Traceback (most recent call last):
...
dynamics.errors.MemoryBudgetError: the kernel K alone needs 3.00 MiB (3145728 bytes), over the memory_budget of 1.00 MiB (1048576 bytes) ...
"""

from __future__ import annotations

import math
import re
from typing import Optional

from dynamics.errors import InputError, MemoryBudgetError

__all__ = ["DEFAULT_WORKSPACE", "SLACK", "Budget", "check_budget", "parse_memory_budget", "format_bytes"]

DEFAULT_WORKSPACE = 1 << 30  # bytes of intermediates when no memory_budget is given
SLACK = 0.1  # fraction of the workspace that tiles leave free

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}

_MEANING = "the total number of bytes the call may allocate, its result included"


def check_budget(memory_budget, what: str = "memory_budget") -> Optional[int]:
    """Validate a ``memory_budget`` argument: None, or a positive finite number of bytes (returned as int)."""
    if memory_budget is None:
        return None
    if isinstance(memory_budget, bool) or not isinstance(memory_budget, (int, float)):
        raise InputError(f"{what} must be a positive number of bytes ({_MEANING}), e.g. 2**30; got "
                         f"{memory_budget!r} of type {type(memory_budget).__name__}")
    if not math.isfinite(memory_budget) or memory_budget < 1:
        raise InputError(f"{what} must be a positive number of bytes ({_MEANING}), got {memory_budget!r}; "
                         f"leave it out (None) for the default of the result plus {format_bytes(DEFAULT_WORKSPACE)}")
    return int(memory_budget)


def parse_memory_budget(text: str, option: str = "--memory-budget") -> int:
    """A command-line budget: bytes as a number (``"2e9"``) or with a unit (``"256MiB"``, ``"1.5GB"``)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgGtT]?i?[bB]?)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise InputError(f"{option} must be a positive number of bytes, optionally with a unit (e.g. 268435456, "
                         f"2e9, 256MiB, 1.5GB); got {text!r}")
    return check_budget(float(m.group(1)) * _UNITS[m.group(2).lower()], option)


def format_bytes(b: float) -> str:
    """A size for messages: exact below 1 KiB, three significant digits above (never "0.0 MiB")."""
    b = float(b)
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if b >= size:
            return f"{b / size:.2f} {unit}"
    return f"{b:.0f} bytes"


def _exact(b: float) -> str:
    return f"{format_bytes(b)} ({int(b)} bytes)" if b >= 1024 else format_bytes(b)


class Budget:
    """The bytes of one call: ``total`` (None when not given), the ``result``'s share, and the ``workspace``.

    Raises:
        MemoryBudgetError: the result alone exceeds the budget (the message names both sizes exactly).
    """

    def __init__(self, memory_budget, result_bytes: float, result: str, advice: str = "", fixed_bytes: float = 0):
        self.total = check_budget(memory_budget)
        self.result_bytes = float(result_bytes)
        self.fixed_bytes = float(fixed_bytes)
        if self.total is not None and self.result_bytes >= self.total:
            raise MemoryBudgetError(
                f"{result} alone needs {_exact(self.result_bytes)}, over the memory_budget of "
                f"{_exact(self.total)} ({_MEANING}){'; ' + advice if advice else ''}")
        if self.total is None:
            self.workspace = float(DEFAULT_WORKSPACE)
        else:
            self.workspace = max(self.total - self.result_bytes - self.fixed_bytes, 0.0) * (1 - SLACK)

    @property
    def held(self) -> float:
        """Bytes allocated besides the tiles' intermediates: the result and the fixed part."""
        return self.result_bytes + self.fixed_bytes

    def too_small(self, method: str, smallest: float, tile: str) -> MemoryBudgetError:
        """The error for a workspace smaller than the method's smallest tile, with a budget that works."""
        need = int(self.held + smallest / (1 - SLACK)) + 1
        return MemoryBudgetError(
            f"no tiling of {method} fits memory_budget={self.total} bytes ({format_bytes(self.total or 0)}): the "
            f"result takes {format_bytes(self.result_bytes)}, the private copy of the model and inputs "
            f"{format_bytes(self.fixed_bytes)}, and the smallest tile ({tile}) needs about {format_bytes(smallest)} "
            f"more (plus {SLACK:.0%} slack); raise memory_budget to at least {need}")
