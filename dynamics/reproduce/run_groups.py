"""Finished training runs on disk, grouped: discovery under folders, grouping over seeds, seed bands.

A run folder is read by :func:`dynamics.training.run_folder.load_run` into a typed
:class:`~dynamics.training.run_folder.RunRecord` (config, epoch and probe records, summary; see
:mod:`dynamics.training.records`). Loading is tolerant where a crash can leave debris (a trailing partial line of
``metrics.jsonl`` is ignored, an epoch repeated by a resumed run keeps its last record) and strict elsewhere.

>>> import tempfile, pathlib
>>> from dynamics.training.config import TrainConfig
>>> from dynamics.training.run_folder import RunFolder
>>> f = RunFolder(tempfile.mkdtemp()); f.write_config(TrainConfig(dataset="semeion", epochs=1))
>>> [str(r.dataset) for r in discover_runs([f.root])]
['semeion']
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from dynamics.data.catalogue import paper_order_key
from dynamics.errors import InputError, RunStateError
from dynamics.training.run_folder import RunRecord, load_run

__all__ = ["RunRecord", "load_run", "discover_runs", "group_runs", "seed_band"]


def discover_runs(paths: Iterable[str | os.PathLike]) -> list[RunRecord]:
    """Load every run under ``paths``: each path is a run directory or a folder searched recursively for them.

    Returns the runs sorted by (dataset order, augment, modified, seed, path). Raises :class:`InputError`
    for a path that does not exist and :class:`RunStateError` when no run is found at all.
    """
    found: dict[Path, None] = {}
    paths = list(paths)
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise InputError(f"{p} does not exist; pass run directories or folders holding them")
        if (p / "config.json").is_file():
            found[p.resolve()] = None
            continue
        for cfg in sorted(p.rglob("config.json")):
            found[cfg.parent.resolve()] = None
    if not found:
        raise RunStateError(f"no run directories (folders with a config.json) under {', '.join(map(str, paths))}")
    runs = [load_run(p) for p in found]
    runs.sort(key=lambda r: (paper_order_key(r.dataset), r.augment, r.modified, r.seed if r.seed is not None else -1,
                             str(r.path)))
    return runs


def group_runs(runs: Iterable[RunRecord]) -> dict[tuple[str, bool, bool], list[RunRecord]]:
    """Group runs by (dataset, augment, modified), in dataset order; each group sorted by seed.

    Two runs of one group with the same seed are ambiguous (two copies of one experiment) and raise
    :class:`RunStateError` naming both directories.
    """
    groups: dict[tuple[str, bool, bool], list[RunRecord]] = {}
    for r in runs:
        groups.setdefault((r.dataset, r.augment, r.modified), []).append(r)
    for key, members in groups.items():
        members.sort(key=lambda r: r.seed if r.seed is not None else -1)
        seen: dict[int | None, Path] = {}
        for r in members:
            if r.seed in seen:
                raise RunStateError(f"two runs of {key[0]} (augment={key[1]}, modified={key[2]}) with seed "
                                    f"{r.seed}: {seen[r.seed]} and {r.path}; pass only one of them")
            seen[r.seed] = r.path
    return dict(sorted(groups.items(), key=lambda kv: (paper_order_key(kv[0][0]), kv[0][1], kv[0][2])))


def seed_band(runs: Sequence[RunRecord], key: str) -> tuple[list[int], list[float], list[float], list[float],
                                                            list[int]]:
    """Mean, min and max of ``key`` over the runs (seeds) at each epoch, for a curve with a band.

    Returns ``(epochs, mean, lo, hi, counts)``; at each epoch only the runs that recorded a finite value
    contribute (``counts`` says how many), so a shorter run does not drop the others' later epochs.

    >>> from dynamics.training.config import TrainConfig
    >>> from dynamics.training.records import EpochRecord
    >>> e = lambda i, v: EpochRecord(epoch=i, phase="base", running_train_loss=v, running_train_acc=0.0, lr=0.1)
    >>> a = RunRecord(Path("a"), TrainConfig(), epochs=[e(1, 1.0), e(2, 0.5)])
    >>> b = RunRecord(Path("b"), TrainConfig(), epochs=[e(1, 3.0)])
    >>> seed_band([a, b], "running_train_loss")
    ([1, 2], [2.0, 0.5], [1.0, 0.5], [3.0, 0.5], [2, 1])
    """
    by_epoch: dict[int, list[float]] = {}
    for r in runs:
        for x, y in zip(*r.curve(key)):
            if math.isfinite(y):
                by_epoch.setdefault(x, []).append(y)
    xs = sorted(by_epoch)
    mean = [sum(by_epoch[x]) / len(by_epoch[x]) for x in xs]
    lo = [min(by_epoch[x]) for x in xs]
    hi = [max(by_epoch[x]) for x in xs]
    return xs, mean, lo, hi, [len(by_epoch[x]) for x in xs]
