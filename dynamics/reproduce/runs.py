"""Finished training runs on disk: discovery, robust loading, grouping over seeds.

A run directory (written by :func:`dynamics.training.train`) holds ``config.json`` (the
``TrainConfig.to_dict()``), ``metrics.jsonl`` (one JSON object per line: ``"epoch"`` records with the
training and test metrics of each 1-based epoch, ``"probe"`` records with the alignment residual, the
on-model residual and the kernel distance measured on a probe set, epoch 0 = before training) and, once the
run has ended, ``summary.json``. A run is *finished* when ``summary.json`` says ``"status": "completed"`` and
``epochs_completed`` equals the configured number of epochs; ``"nonfinite"`` marks a run that diverged.

Loading is tolerant where a crash can leave debris and strict elsewhere: a trailing partial line of
``metrics.jsonl`` (an interrupted append) is ignored, records repeated by a resumed run are de-duplicated
(the last record of an epoch wins), and anything else unreadable raises :class:`RunStateError` naming the file.

>>> import json, tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "config.json").write_text(json.dumps({"dataset": "mnist", "epochs": 1, "seed": 0}))
>>> _ = (d / "metrics.jsonl").write_text('{"type": "epoch", "epoch": 1, "train_loss": 0.5}\\n{"type": "ep')
>>> r = load_run(d)
>>> r.dataset, r.finished, [e["train_loss"] for e in r.epochs]
('mnist', False, [0.5])
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynamics.errors import InputError, RunStateError

__all__ = ["RunRecord", "load_run", "discover_runs", "group_runs", "is_finished", "seed_band",
           "DATASET_SIZES", "DATASET_ORDER"]

log = logging.getLogger(__name__)

#: (train, test) sizes of the benchmark datasets; Semeion uses the fixed seeded 1000 / 593 split.
DATASET_SIZES: dict[str, tuple[int, int]] = {
    "mnist": (60000, 10000),
    "cifar10": (50000, 10000),
    "cifar100": (50000, 10000),
    "semeion": (1000, 593),
    "kmnist": (60000, 10000),
    "svhn": (73257, 26032),
}
#: The order in which the paper lists the datasets (tables and figures follow it; others come after, sorted).
DATASET_ORDER: tuple[str, ...] = ("mnist", "cifar10", "cifar100", "semeion", "kmnist", "svhn")


@dataclass
class RunRecord:
    """One training run as read from its directory.

    Attributes:
        path: the run directory.
        config: ``config.json`` as a dict (the ``TrainConfig.to_dict()``).
        epochs: the ``"epoch"`` records of ``metrics.jsonl``, one per epoch, sorted by epoch.
        probes: the ``"probe"`` records, one per probed epoch (0 = before training), sorted by epoch.
        summary: ``summary.json`` as a dict, or ``None`` when the run has not ended.
    """

    path: Path
    config: dict[str, Any]
    epochs: list[dict[str, Any]] = field(default_factory=list)
    probes: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] | None = None

    @property
    def dataset(self) -> str:
        return str(self.config.get("dataset"))

    @property
    def augment(self) -> bool:
        return bool(self.config.get("augment", False))

    @property
    def modified(self) -> bool:
        return bool(self.config.get("modified", False))

    @property
    def seed(self) -> int | None:
        s = self.config.get("seed")
        return None if s is None else int(s)

    @property
    def tau(self) -> int | None:
        """The switch epoch τ of a modified run, ``None`` for a base run."""
        t = self.config.get("tau")
        return int(t) if self.modified and t is not None else None

    @property
    def planned_epochs(self) -> int:
        return int(self.config.get("epochs", 0))

    @property
    def status(self) -> str:
        """``"completed"``, ``"nonfinite"`` (diverged), ``"running"`` (no summary yet) or the summary's status."""
        if self.summary is None:
            return "running"
        return str(self.summary.get("status", "unknown"))

    @property
    def finished(self) -> bool:
        """True iff the summary says completed and all configured epochs ran."""
        return (self.summary is not None and self.summary.get("status") == "completed"
                and int(self.summary.get("epochs_completed", -1)) == self.planned_epochs)

    @property
    def final(self) -> dict[str, Any]:
        """The summary's ``final`` metrics (empty when the run has not ended)."""
        return dict((self.summary or {}).get("final") or {})

    def condition(self, when: str) -> dict[str, Any] | None:
        """The summary's condition check at ``when`` in {"tau", "end"}, or ``None`` when not recorded."""
        if when not in ("tau", "end"):
            raise InputError(f"when must be 'tau' or 'end', got {when!r}")
        conds = (self.summary or {}).get("conditions") or {}
        c = conds.get(when)
        return dict(c) if isinstance(c, dict) else None

    @property
    def n_train(self) -> int | None:
        """Number of training examples: from the summary when recorded there, else the dataset's size
        capped by ``train_subset``; ``None`` for an unknown dataset without a recorded size."""
        s = self.summary or {}
        for src in (s, s.get("data") or {}, s.get("provenance") or {}):
            if isinstance(src, dict) and isinstance(src.get("n_train"), int):
                return int(src["n_train"])
        size = DATASET_SIZES.get(self.dataset, (None, None))[0]
        subset = self.config.get("train_subset")
        if subset is not None:
            return int(subset) if size is None else min(int(subset), size)
        return size

    def curve(self, key: str) -> tuple[list[int], list[float]]:
        """(epochs, values) of ``key`` from the epoch records, or from the probe records for probe keys.

        Missing or ``null`` values are skipped; ``test_error`` is derived as ``100 * (1 - test_acc)`` (%).
        """
        source = self.probes if key in _PROBE_KEYS else self.epochs
        xs: list[int] = []
        ys: list[float] = []
        for rec in source:
            if key == "test_error":
                acc = rec.get("test_acc")
                value = None if acc is None else 100.0 * (1.0 - float(acc))
            else:
                value = rec.get(key)
            if value is None:
                continue
            xs.append(int(rec["epoch"]))
            ys.append(float(value))
        return xs, ys

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "dataset": self.dataset, "augment": self.augment,
                "modified": self.modified, "seed": self.seed, "status": self.status, "finished": self.finished,
                "epochs_recorded": len(self.epochs), "probes_recorded": len(self.probes)}

    def __str__(self) -> str:
        kind = "modified" if self.modified else "base"
        aug = "aug" if self.augment else "no-aug"
        return (f"RunRecord({self.dataset}, {aug}, {kind}, seed {self.seed}: {self.status}, "
                f"{len(self.epochs)}/{self.planned_epochs} epochs, {self.path})")


_PROBE_KEYS = frozenset({"alignment_residual", "rank", "sigma_min", "on_model_residual", "loss_fit",
                         "loss_floor", "kernel_distance", "n_probe"})


def _read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunStateError(f"cannot read {path}: {exc}; the run folder is damaged, delete it and rerun") from exc
    if not isinstance(obj, dict):
        raise RunStateError(f"{path} holds a {type(obj).__name__}, expected a JSON object")
    return obj


def _read_metrics(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    if not path.exists():
        return [], []
    try:
        text = path.read_text()
    except OSError as exc:
        raise RunStateError(f"cannot read {path}: {exc}") from exc
    lines = text.split("\n")
    # A file written by append_line ends with "\n", so the last element is "" unless an append was cut short.
    epochs: dict[int, dict[str, Any]] = {}
    probes: dict[int, dict[str, Any]] = {}
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as exc:
            if i == len(lines) - 1:
                log.warning("%s: ignoring a partial trailing line (an interrupted write)", path)
                continue
            raise RunStateError(f"{path}, line {i + 1}: not valid JSON ({exc}); the file is damaged") from exc
        if not isinstance(rec, dict) or "epoch" not in rec:
            raise RunStateError(f"{path}, line {i + 1}: a record must be a JSON object with an 'epoch' field")
        kind = rec.get("type")
        if kind == "epoch":
            epochs[int(rec["epoch"])] = rec  # a resumed run may repeat an epoch: the last record wins
        elif kind == "probe":
            probes[int(rec["epoch"])] = rec
    return [epochs[e] for e in sorted(epochs)], [probes[e] for e in sorted(probes)]


def load_run(path: str | os.PathLike) -> RunRecord:
    """Read the run directory ``path`` (``config.json`` required; metrics and summary when present).

    Raises:
        RunStateError: ``config.json`` is missing or a file is damaged (message names the file).
    """
    path = Path(path)
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise RunStateError(f"{path} is not a run directory: it has no config.json")
    config = _read_json(cfg_path)
    epochs, probes = _read_metrics(path / "metrics.jsonl")
    summary = _read_json(path / "summary.json") if (path / "summary.json").is_file() else None
    return RunRecord(path=path, config=config, epochs=epochs, probes=probes, summary=summary)


def is_finished(path: str | os.PathLike) -> bool:
    """True iff ``path`` holds a completed run (summary status ``"completed"``, all epochs done).

    A missing or damaged run is simply not finished (no error).
    """
    try:
        return load_run(path).finished
    except RunStateError:
        return False


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
    runs.sort(key=lambda r: (_dataset_key(r.dataset), r.augment, r.modified, r.seed if r.seed is not None else -1,
                             str(r.path)))
    return runs


def _dataset_key(name: str) -> tuple[int, str]:
    return (DATASET_ORDER.index(name), name) if name in DATASET_ORDER else (len(DATASET_ORDER), name)


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
    return dict(sorted(groups.items(), key=lambda kv: (_dataset_key(kv[0][0]), kv[0][1], kv[0][2])))


def seed_band(runs: Sequence[RunRecord], key: str) -> tuple[list[int], list[float], list[float], list[float],
                                                            list[int]]:
    """Mean, min and max of ``key`` over the runs (seeds) at each epoch, for a curve with a band.

    Returns ``(epochs, mean, lo, hi, counts)``; at each epoch only the runs that recorded a finite value
    contribute (``counts`` says how many), so a shorter run does not drop the others' later epochs.

    >>> a = RunRecord(Path("a"), {}, epochs=[{"epoch": 1, "train_loss": 1.0}, {"epoch": 2, "train_loss": 0.5}])
    >>> b = RunRecord(Path("b"), {}, epochs=[{"epoch": 1, "train_loss": 3.0}])
    >>> seed_band([a, b], "train_loss")
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
