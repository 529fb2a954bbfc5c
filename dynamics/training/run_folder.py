"""The run folder: its layout, who may write it, and reading it back as a typed :class:`RunRecord`.

Layout (every file is written atomically or appended line by line, see :mod:`dynamics.atomic`)::

    config.json          ConfigSnapshot (dynamics.training.records)
    metrics.jsonl        one EpochRecord / ProbeRecord per line
    summary.json         RunSummary, once the run has ended
    test_predictions.npy argmax predictions on the test set at the final parameters (int64, test-set order)
    checkpoints/last.pt  the last checkpoint, with last.pt.sha256 beside it (dynamics.training.checkpoint)
    .lock                held while a training writes the folder (dynamics.training.run_lock)

:meth:`RunFolder.prepare` decides whether a folder may receive a run: a folder holding another run is refused
unless ``resume`` or ``overwrite``; ``resume`` needs a run there and its checkpoint. A run killed before its first
checkpoint (no epoch recorded yet) is started again in place; a run whose checkpoints were deleted after epochs
were recorded is refused (it cannot continue, and starting again would silently rewrite its metrics). The loop
writes each epoch's checkpoint before that epoch's records, so an epoch record without a checkpoint can only
mean the checkpoints were removed.

>>> import tempfile
>>> from dynamics.training.config import TrainConfig
>>> f = RunFolder(tempfile.mkdtemp())
>>> f.prepare(TrainConfig(), resume=False, overwrite=False)
False
>>> f.write_config(TrainConfig(epochs=3))
>>> load_run(f.root).status
'running'
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dynamics.atomic import append_line, write_bytes, write_json, write_text
from dynamics.data.train_test import split_size
from dynamics.errors import InputError, RunStateError
from dynamics.training.records import (
    ConditionCheck, ConfigSnapshot, EpochRecord, FinalMetrics, ProbeRecord, RecordSchemaError, RunSummary,
    metrics_record_from_dict,
)
from dynamics.training.checkpoint import digest_path, load_checkpoint
from dynamics.training.config import LOCATION_FIELDS, TrainConfig

__all__ = ["RunFolder", "RunRecord", "load_run", "is_finished", "read_metrics", "check_out_folder"]

log = logging.getLogger(__name__)

RUN_FILES = ("config.json", "metrics.jsonl", "summary.json", "test_predictions.npy")


def check_out_folder(root: str | os.PathLike) -> Path:
    """Refuse an output folder that cannot hold a run (a file, or not creatable / writable), before any work.

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "file"; _ = f.write_text("x")
    >>> check_out_folder(f)
    Traceback (most recent call last):
    ...
    dynamics.errors.RunStateError: --out .../file is a file, not a folder; choose a folder for the run
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise RunStateError(f"--out {root} is a file, not a folder; choose a folder for the run")
    probe = root
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise RunStateError(f"--out {root}: {probe} is a file, so the folder cannot be created; choose another --out")
    if not os.access(probe, os.W_OK | os.X_OK) or str(probe.resolve()).startswith(("/proc", "/sys")):
        raise RunStateError(f"--out {root}: {probe} is not writable, so the run cannot be written there; choose a "
                            "folder you can write")
    return root


def _read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunStateError(f"{path} is damaged ({type(exc).__name__}: {exc}); pass --overwrite to replace the run, "
                            "or delete the folder") from None
    if not isinstance(obj, dict):
        raise RunStateError(f"{path} holds a {type(obj).__name__}, not a JSON object; the file is damaged: pass "
                            "--overwrite to replace the run")
    return obj


def read_metrics(path: str | os.PathLike, schema: int = 2) -> list[EpochRecord | ProbeRecord]:
    """The records of a ``metrics.jsonl`` in file order (a trailing partial line, left by a crash, is ignored;
    a damaged line elsewhere raises :class:`RunStateError` naming it)."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_text().split("\n")  # written by append_line: ends with "\n" unless an append was cut short
    out: list[EpochRecord | ProbeRecord] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except ValueError as exc:
            if i == len(lines) - 1:
                log.warning("%s: ignoring a partial trailing line (an interrupted write)", path)
                continue
            raise RunStateError(f"{path}, line {i + 1}: not valid JSON ({exc}); the file is damaged") from None
        if not isinstance(d, dict):
            raise RunStateError(f"{path}, line {i + 1}: a record must be a JSON object")
        out.append(metrics_record_from_dict(d, schema))
    return out


class RunFolder:
    """Paths of one run folder and the operations on them."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.config = self.root / "config.json"
        self.metrics = self.root / "metrics.jsonl"
        self.summary = self.root / "summary.json"
        self.test_predictions = self.root / "test_predictions.npy"
        self.checkpoints = self.root / "checkpoints"
        self.last = self.checkpoints / "last.pt"

    def read_config(self) -> TrainConfig:
        """The configuration in ``config.json`` (:class:`RunStateError` if damaged, with what to do)."""
        try:
            return ConfigSnapshot.from_dict(_read_json(self.config), str(self.config)).config
        except RecordSchemaError:
            raise
        except InputError as exc:
            raise RunStateError(f"{self.config} is damaged ({exc}); pass --overwrite to replace the run") from None

    def prepare(self, config: TrainConfig, resume: bool, overwrite: bool) -> bool:
        """Check the folder and return whether to resume (False: a fresh run; the run files are cleared).

        Raises RunStateError (with what to do) when: resume and overwrite together; resume where no run or no
        checkpoint is; the folder holds another run (or unrelated files) and neither flag allows it; resume
        meets a different configuration; ``config.json`` is damaged (unless overwrite).
        """
        if resume and overwrite:
            raise RunStateError("--resume and --overwrite exclude each other: continue the run or replace it")
        check_out_folder(self.root)
        if resume and not self.config.is_file():
            raise RunStateError(f"nothing to resume in {self.root}: it holds no run (no config.json); drop --resume "
                                "to start a new run there")
        if self.config.is_file() and not overwrite:
            saved = self.read_config()
            diff = _diff(saved, config)
            if not resume:
                what = f"a different configuration ({diff})" if diff else "the same configuration"
                raise RunStateError(f"{self.root} already holds a run with {what}; pass --resume to continue it "
                                    "or --overwrite to replace it, or choose another --out")
            if diff:
                raise RunStateError(f"{self.root} holds a run with a different configuration ({diff}); resume it "
                                    "with the same options, or pass --overwrite to replace it")
            if self.last.is_file():
                return True
            done = [r.epoch for r in read_metrics(self.metrics) if isinstance(r, EpochRecord)]
            if done:
                raise RunStateError(f"{self.root} records {max(done)} trained epoch(s) but its checkpoint "
                                    f"{self.last} is missing, so the run cannot continue; pass --overwrite to start "
                                    "it again from epoch 0")
            log.warning("%s: the run stopped before its first checkpoint; starting it again", self.root)
        elif self.root.is_dir() and any(p.name != ".lock" for p in self.root.iterdir()) and not overwrite:
            raise RunStateError(f"{self.root} is not empty and holds no run (no config.json); choose an empty or new "
                                "--out, or pass --overwrite to write the run there anyway")
        self.clear()
        return False

    def clear(self) -> None:
        """Remove this toolkit's run files (never anything else)."""
        for name in RUN_FILES:
            (self.root / name).unlink(missing_ok=True)
        if self.checkpoints.is_dir():
            shutil.rmtree(self.checkpoints)
        self.root.mkdir(parents=True, exist_ok=True)

    def write_config(self, config: TrainConfig) -> None:
        write_json(self.config, ConfigSnapshot(config).to_dict())

    def write_test_predictions(self, pred: np.ndarray) -> None:
        """``test_predictions.npy``: argmax predictions (n_test,) int64 at the final parameters, test-set order."""
        buf = io.BytesIO()
        np.save(buf, np.asarray(pred, dtype=np.int64))
        write_bytes(self.test_predictions, buf.getvalue())

    def write_summary(self, summary: RunSummary) -> None:
        write_json(self.summary, summary.to_dict())

    def append(self, record: EpochRecord | ProbeRecord) -> None:
        append_line(self.metrics, json.dumps(record.to_dict()))

    def restore_metrics(self, epoch: int, records: list[dict[str, Any]]) -> None:
        """Make ``metrics.jsonl`` what it was right after the checkpoint of ``epoch``: the records of earlier
        epochs as written, then that epoch's ``records`` (stored in the checkpoint, which is written before
        them), so a crash between the checkpoint and the appends, or after later appends, loses or repeats
        nothing."""
        keep = [r.to_dict() for r in read_metrics(self.metrics) if r.epoch < epoch]
        if not records:  # the epoch-0 probe (written before any checkpoint) and checkpoints without records
            keep = [r.to_dict() for r in read_metrics(self.metrics) if r.epoch <= epoch]
        write_text(self.metrics, "".join(json.dumps(d) + "\n" for d in [*keep, *records]))

    def checkpoint_files(self) -> tuple[Path, Path]:
        return self.last, digest_path(self.last)


def _diff(saved: TrainConfig, config: TrainConfig) -> str:
    a, b = saved.to_dict(), config.to_dict()
    keys = sorted((set(a) | set(b)) - LOCATION_FIELDS)
    diffs = [f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]
    return "; ".join(diffs[:5]) + (" ..." if len(diffs) > 5 else "")


@dataclass
class RunRecord:
    """One run as read from its folder: configuration, epoch and probe records (one per epoch, sorted; a resumed
    run's repeated epoch keeps its last record), and the summary once the run has ended."""

    path: Path
    config: TrainConfig
    epochs: list[EpochRecord] = field(default_factory=list)
    probes: list[ProbeRecord] = field(default_factory=list)
    summary: RunSummary | None = None
    schema: int = 2

    @property
    def dataset(self) -> str:
        return self.config.dataset

    @property
    def augment(self) -> bool:
        return self.config.augment

    @property
    def modified(self) -> bool:
        return self.config.modified

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def tau(self) -> int | None:
        """The effective switch epoch τ: as recorded at the switch, else the configuration's (None: base run)."""
        if self.summary is not None and self.summary.switch is not None:
            return self.summary.switch.tau_effective
        return self.config.tau_effective

    @property
    def planned_epochs(self) -> int:
        return self.config.epochs

    @property
    def status(self) -> str:
        """``"completed"``, ``"nonfinite"`` (diverged) or ``"running"`` (no summary yet)."""
        return "running" if self.summary is None else self.summary.status

    @property
    def finished(self) -> bool:
        return self.summary is not None and self.summary.finished

    @property
    def final(self) -> FinalMetrics:
        return FinalMetrics() if self.summary is None else self.summary.final

    def final_state(self, modified: bool) -> dict[str, Any]:
        """The final checkpoint of a finished run of the given kind (verified against the configuration digest).

        Raises:
            RunStateError: the run is not finished, is of the other kind, or its ``checkpoints/last.pt`` is
                missing (say what to do).
        """
        kind = "modified" if modified else "base"
        if self.modified != modified or not self.finished:
            raise RunStateError(f"{self.path}: needs a finished {kind} run, got {self}")
        ckpt = Path(self.path) / "checkpoints" / "last.pt"
        if not ckpt.is_file():
            raise RunStateError(f"{ckpt} is missing: the final parameters of {self.path} are needed; rerun the run")
        return load_checkpoint(ckpt, self.config.digest())

    def condition(self, when: str) -> ConditionCheck | None:
        """The condition check at ``when`` in {"tau", "end"} (None when not recorded)."""
        if when not in ("tau", "end"):
            raise InputError(f"when must be 'tau' or 'end', got {when!r}")
        if self.summary is None:
            return None
        return self.summary.conditions_tau if when == "tau" else self.summary.conditions_end

    @property
    def n_train(self) -> int | None:
        """Training samples: as recorded in the summary, else the catalogue's size capped by ``train_subset``."""
        if self.summary is not None and self.summary.n_train is not None:
            return int(self.summary.n_train)
        size, subset = split_size(self.dataset), self.config.train_subset
        if subset is not None:
            return subset if size is None else min(subset, size)
        return size

    def curve(self, key: str) -> tuple[list[int], list[float]]:
        """(epochs, values) of an :class:`EpochRecord` field (``test_error``: 100·(1 − test_acc), in %) or of a
        probe measurement; missing, ``None`` and non-finite values are skipped."""
        xs: list[int] = []
        ys: list[float] = []
        epoch_keys = set(EpochRecord.__dataclass_fields__) | {"test_error"}
        for rec in (self.epochs if key in epoch_keys else self.probes):
            if isinstance(rec, EpochRecord):
                acc = rec.test_acc
                value = (None if acc is None else 100.0 * (1.0 - acc)) if key == "test_error" else getattr(rec, key)
            else:
                value = rec.values.get(key)
            if value is None or not math.isfinite(float(value)):
                continue
            xs.append(rec.epoch)
            ys.append(float(value))
        return xs, ys

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "dataset": self.dataset, "augment": self.augment, "modified": self.modified,
                "seed": self.seed, "tau": self.tau, "status": self.status, "finished": self.finished,
                "epochs_recorded": len(self.epochs), "probes_recorded": len(self.probes), "schema": self.schema}

    def __str__(self) -> str:
        kind = "modified" if self.modified else "base"
        return (f"RunRecord({self.dataset}, {'aug' if self.augment else 'no-aug'}, {kind}, seed {self.seed}: "
                f"{self.status}, {len(self.epochs)}/{self.planned_epochs} epochs, {self.path})")


def load_run(path: str | os.PathLike) -> RunRecord:
    """Read the run folder ``path`` (``config.json`` required; metrics and summary when present).

    Raises:
        RunStateError: no ``config.json``, or a file is damaged (the message names it);
        RecordSchemaError: a file of a schema this version does not read (the message names the schema).
    """
    folder = RunFolder(path)
    if not folder.config.is_file():
        raise RunStateError(f"{folder.root} is not a run folder: it has no config.json")
    snapshot = ConfigSnapshot.from_dict(_read_json(folder.config), str(folder.config))
    epochs: dict[int, EpochRecord] = {}
    probes: dict[int, ProbeRecord] = {}
    for rec in read_metrics(folder.metrics, snapshot.schema):
        (epochs if isinstance(rec, EpochRecord) else probes)[rec.epoch] = rec  # type: ignore[index]
    summary = None
    if folder.summary.is_file():
        summary = RunSummary.from_dict(_read_json(folder.summary), str(folder.summary))
    return RunRecord(folder.root, snapshot.config, [epochs[e] for e in sorted(epochs)],
                     [probes[e] for e in sorted(probes)], summary, snapshot.schema)


def is_finished(path: str | os.PathLike) -> bool:
    """True iff ``path`` holds a completed run; a missing or damaged run is simply not finished."""
    try:
        return load_run(path).finished
    except RunStateError:
        return False
