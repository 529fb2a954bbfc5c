"""How many torch threads a run uses: the cores actually free, unless given.

The default is ``$OMP_NUM_THREADS`` when it is set (the user's explicit choice); otherwise it counts the cores
this process may run on (``os.sched_getaffinity``, which respects containers and
``taskset``) and subtracts the load already on them (the 1-minute load average, rounded): on an idle 8-core
machine 8 threads, on a 2-core machine with 6 runnable processes 1. At least 1. The choice and its reason are
recorded in the run's summary (``threads``), because on a shared machine more threads can be slower than one
(measured here: 2 threads 1.4-10x slower than 1 on a 2-core machine under load). The count can change the
order of floating-point sums, so a run resumed bit for bit needs the same count (pass ``threads``).

>>> resolve_threads(3)
(3, 'given (--threads 3)')
>>> free_cores(cores=8, load=2.4), free_cores(cores=2, load=6.0)
(6, 1)
"""

from __future__ import annotations

import os

from dynamics.errors import ConfigError

__all__ = ["free_cores", "resolve_threads", "available_cores", "load_average"]


def available_cores() -> int:
    """Cores this process may run on (``os.sched_getaffinity``; ``os.cpu_count`` where that does not exist)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def load_average() -> float:
    """The 1-minute load average (0.0 where the platform has none)."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0.0


def free_cores(cores: int | None = None, load: float | None = None) -> int:
    """max(1, cores − round(load)): the cores not already busy."""
    cores = available_cores() if cores is None else cores
    load = load_average() if load is None else load
    return max(1, min(cores, cores - int(round(load))))


def resolve_threads(requested: int | None) -> tuple[int, str]:
    """``(threads, reason)``: ``requested`` when given, else :func:`free_cores` with the numbers it used.

    Raises:
        ConfigError: ``requested`` is not a positive integer.
    """
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise ConfigError(f"threads must be a positive integer, got {requested!r}")
        return requested, f"given (--threads {requested})"
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) >= 1:
        return int(env), f"OMP_NUM_THREADS={env}"
    cores, load = available_cores(), load_average()
    n = free_cores(cores, load)
    return n, (f"default: {cores} core(s) available (sched_getaffinity), 1-minute load {load:.2f}, so {n} free"
               + (" (machine busy: 1 thread)" if n == 1 and cores > 1 else ""))
