"""Running a reproduction: every run of a preset, resumable, then the table and the figures.

Layout of ``out_dir``::

    out_dir/runs/<dataset>-<noaug|aug>-<base|modified>-seed<s>/   one training run each (see runs.py)
    out_dir/table.{md,csv,tex,json}, training_curves.png, conditions_over_training.png

After training, each finished base run gets the lower bound on its own alignment residual at the end
(:mod:`dynamics.reproduce.base_residual`, timed separately, written to its ``alignment_lower.json``; skipped with
the reason when no subset can bound it or it does not fit the memory budget), and each finished modified run whose
end certificate predates the tighter ‖Z*‖ bound is recertified from its final checkpoint
(:mod:`dynamics.reproduce.recertify`, timed, written to its ``run_certificate_end.json``; nothing is trained).
The torch thread count of every
run is chosen once (``threads``, default: the cores free when the reproduction starts) and recorded in each
run's summary.

Running the same command again skips the finished runs, resumes the interrupted ones from their checkpoint
and starts the rest; a run folder holding a *different* configuration is an error, never overwritten. A
dataset whose files are missing is listed as skipped with the loader's message (where it looked), and the
other datasets go on.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dynamics.data.catalogue import DataMissingError
from dynamics.data.files import load_dataset
from dynamics.errors import ConfigError, DataError, NonFiniteError, RunStateError
from dynamics.reproduce.base_residual import (ALIGNMENT_LOWER_FILE, DEFAULT_MEMORY_BUDGET, base_alignment_lower)
from dynamics.reproduce.recertify import describe, needs_recertification, recertify_end
from dynamics.reproduce.presets import Preset, get_preset, preset_config_dicts
from dynamics.reproduce.report import FigureWriter, write_report
from dynamics.reproduce.table import COLUMNS_CAPTION, ReproductionTable, SkippedDataset, build_table
from dynamics.training.config import LOCATION_FIELDS, TrainConfig
from dynamics.training.loop import train
from dynamics.training.records import RunSummary
from dynamics.training.run_folder import RunRecord, load_run
from dynamics.training.threads import resolve_threads

__all__ = ["reproduce", "plan", "PlannedRun", "RUNS_SUBDIR"]

log = logging.getLogger(__name__)

RUNS_SUBDIR = "runs"


@dataclass
class PlannedRun:
    """One run of the plan and what :func:`reproduce` will do with it.

    ``state`` is ``"finished"`` (skip), ``"diverged"`` (ended with a non-finite loss: skip, reported),
    ``"resume"`` (a started run: continue from its checkpoint), ``"restart"`` (a run folder that stopped
    before its first checkpoint: start it again in place) or ``"new"``.
    """

    name: str
    config: dict[str, Any]
    path: Path
    state: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "state": self.state}

    def __str__(self) -> str:
        return f"{self.name}: {self.state} ({self.path})"


def _state(path: Path, config: dict[str, Any]) -> str:
    if not (path / "config.json").is_file():
        return "new"
    record = load_run(path)
    there = record.config.to_dict()
    diff = sorted(k for k in set(config) | set(there) if k not in LOCATION_FIELDS and config.get(k) != there.get(k))
    if diff:
        raise RunStateError(
            f"{path} holds a run with a different configuration (fields {diff}: "
            f"{ {k: there.get(k) for k in diff} } there, { {k: config.get(k) for k in diff} } planned); "
            f"choose another --out folder or delete that run folder")
    if record.finished:
        return "finished"
    if record.status == "nonfinite":
        return "diverged"
    if any(path.rglob("*.pt")):  # train() keeps checkpoints/last.pt
        return "resume"
    return "restart"  # started but stopped before its first checkpoint: nothing to resume from


def plan(preset: str | Preset, out_dir: str | os.PathLike, datasets: Sequence[str] | None = None,
         seeds: Sequence[int] | None = None, augment: Sequence[bool] | None = None, device: str | None = None,
         data_root: str | None = None) -> list[PlannedRun]:
    """The runs of ``preset`` under ``out_dir/runs`` and the state of each (see :class:`PlannedRun`).

    Raises:
        ConfigError: unknown preset or dataset, bad seeds.
        RunStateError: a run folder holds a different configuration.
    """
    runs_dir = Path(out_dir) / RUNS_SUBDIR
    out = []
    for name, cfg in preset_config_dicts(preset, datasets, augment, seeds, device, data_root):
        cfg = TrainConfig.from_dict(cfg).validate().to_dict()  # all fields, as train() writes config.json
        path = runs_dir / name
        out.append(PlannedRun(name, cfg, path, _state(path, cfg)))
    return out


def _describe(record: RunRecord, with_time: bool = True) -> str:
    final = record.final
    parts = []
    if final.test_error_percent is not None:
        parts.append(f"test error {final.test_error_percent:.2f} %")
    if final.train_loss is not None:
        parts.append(f"train loss {final.train_loss:.2e}")
    cert = record.summary.run_certificate_end if record.summary is not None else None
    if cert and cert.get("epsilon_ce") is not None:
        parts.append(f"eps {cert['epsilon_ce']:.2e} ({'certified' if cert['epsilon_ce'] < 0.5 else 'not < 1/2'})")
    if record.summary is not None and with_time:
        parts.append(f"{record.summary.wall_time_s:.0f} s")
    return ", ".join(parts)


def _check_device(devices: set[str], p: Preset) -> None:
    if any(d.startswith("cuda") for d in devices):
        if not torch.cuda.is_available():
            raise ConfigError(f"preset {p.name!r} trains on {sorted(devices)} but no CUDA device is visible; pass "
                              f"--device cpu (device='cpu') to train on the CPU, or use --preset cpu")


def _check_data(dataset: str, data_root: str | None) -> None:
    """Load both splits (DataError when one is missing)."""
    load_dataset(dataset, "train", data_root)
    load_dataset(dataset, "test", data_root)


def _missing(dataset: str, data_root: str | None) -> str | None:
    """Why ``dataset`` cannot be trained on here, naming the split ("training images not available here: " and
    the loader's message), or None when both splits load. A dataset with only its test split (KMNIST here) is
    skipped, never trained on part of it."""
    try:
        _check_data(dataset, data_root)
    except DataError as exc:
        try:
            load_dataset(dataset, "train", data_root)
        except DataMissingError as train_exc:
            return f"training images not available here: {train_exc}"
        except DataError as train_exc:  # present but unreadable (e.g. a checksum mismatch): the loader's words
            return str(train_exc)
        return f"test split not available here: {exc}" if isinstance(exc, DataMissingError) else str(exc)
    return None


def reproduce(preset: str | Preset, datasets: Sequence[str] | None = None,
              out_dir: str | os.PathLike = "reproduction", data_root: str | None = None,
              seeds: Sequence[int] | None = None, augment: Sequence[bool] | None = None, dry_run: bool = False,
              device: str | None = None, figures: FigureWriter | None = None,
              data: Mapping[str, tuple[Any, Any, Any, Any]] | None = None,
              progress: Callable[[str], None] | None = None, threads: int | None = None,
              residual_memory_budget: int = DEFAULT_MEMORY_BUDGET) -> ReproductionTable:
    """Train every run of ``preset`` that is not finished, then write the table and the figures.

    Args:
        preset: ``"paper"``, ``"cpu"`` or a :class:`Preset`.
        datasets: subset of the preset's datasets (default: all of the preset's).
        out_dir: output folder (runs under ``out_dir/runs``; tables and figures in ``out_dir``).
        data_root: where the dataset files are (default: ``$DYNAMICS_DATA``, then ``~/.cache/dynamics``).
        seeds, augment: override the preset's seeds / augmentation conditions (e.g. ``[False]``).
        dry_run: list the plan with each run's state (and which datasets' files are missing); train nothing,
            write nothing; the returned table covers the runs already finished.
        device: ``"cpu"`` / ``"cuda"`` (default: the preset's).
        figures: draws the PNG figures (the command line passes :func:`dynamics.cli.report.write_figures`);
            ``None``: tables only. See :func:`~dynamics.reproduce.report.write_report`.
        data: ``{dataset: (x_train, y_train, x_test, y_test)}`` tensors used instead of loading the files
            (passed to :func:`dynamics.training.train` as ``data=``), e.g. generated data in tests.
        progress: called with one line per run (the CLI prints it to stderr); every line is also logged.
        threads: torch threads of every run (default: the cores free now, chosen once; recorded in each run's
            summary). Not part of a run's identity: a resumed run may use another count.
        residual_memory_budget: bytes the base runs' residual lower bound may use (above it: skipped, reason).

    Returns:
        the :class:`ReproductionTable` of the finished runs, with the skipped datasets and their reasons.
    """
    t_begin = time.perf_counter()
    p = get_preset(preset)
    data = dict(data or {})
    planned = plan(p, out_dir, datasets, seeds, augment, device, data_root)
    n_threads, threads_reason = resolve_threads(threads)
    for run in planned:
        run.config["threads"] = n_threads
    if not dry_run:
        _check_device({r.config["device"] for r in planned if r.state not in ("finished", "diverged")}, p)

    def say(line: str) -> None:
        log.log(logging.DEBUG if progress is not None else logging.INFO, "%s", line)  # one copy on a console
        if progress is not None:
            progress(line)

    skipped: dict[str, str] = {}
    checked: dict[str, str | None] = {}  # dry runs: each dataset's files are checked once
    total = len(planned)
    counts = {s: sum(r.state == s for r in planned) for s in ("finished", "diverged", "resume", "restart", "new")}
    say(f"reproduce {p.name}: {total} runs in {Path(out_dir) / RUNS_SUBDIR} ({counts['finished']} finished, "
        f"{counts['diverged']} diverged, {counts['resume']} to resume, "
        f"{counts['new'] + counts['restart']} to start); {n_threads} torch thread(s): {threads_reason}")
    for i, run in enumerate(planned, 1):
        dataset = run.config["dataset"]
        head = f"[{i}/{total}] {run.name}"
        if dataset in skipped:
            say(f"{head}: skipped ({dataset} unavailable)")
            continue
        if run.state in ("finished", "diverged"):
            say(f"{head}: {'already finished' if run.state == 'finished' else 'diverged earlier'}, "
                f"{_describe(load_run(run.path))}")
            continue
        if dry_run:
            if dataset not in checked:
                checked[dataset] = None if dataset in data else _missing(dataset, data_root)
            reason = checked[dataset]
            if reason is not None:
                skipped[dataset] = reason
                say(f"{head}: would be skipped: {reason}")
                continue
            say(f"{head}: would {'resume' if run.state == 'resume' else 'start'} ({run.path})")
            continue
        say(f"{head}: {'resuming' if run.state == 'resume' else 'starting'} ...")
        start = time.perf_counter()
        existed = run.path.exists()
        try:
            _train(run, data.get(dataset))
        except DataError as exc:
            if not existed and run.path.is_dir() and not any(run.path.iterdir()):
                run.path.rmdir()  # leave no empty run folder behind for a dataset that is not there
            skipped[dataset] = (None if dataset in data else _missing(dataset, data_root)) or str(exc)
            say(f"{head}: skipped, {dataset} data unavailable: {skipped[dataset]}")
            continue
        except NonFiniteError as exc:  # the summary says "nonfinite"; the table counts it, never averages it
            say(f"{head}: diverged after {time.perf_counter() - start:.0f} s: {exc}")
            continue
        record = load_run(run.path)
        say(f"{head}: {record.status} in {time.perf_counter() - start:.0f} s, {_describe(record, False)}")

    if not dry_run:
        t_residual = time.perf_counter()
        _base_residuals(planned, data, residual_memory_budget, say)
        say(f"reproduce {p.name}: base residual bounds took {time.perf_counter() - t_residual:.0f} s")
        _recertify(planned, data, say)
    records = [load_run(r.path) for r in planned if (r.path / "config.json").is_file()]
    skipped_list = [SkippedDataset(d, reason) for d, reason in skipped.items()]
    caption = f"{COLUMNS_CAPTION} {p.caption()}"
    if dry_run:
        return build_table(records, skipped_list, caption=caption)
    table = write_report(records, out_dir, skipped_list, caption=caption, figures=figures)
    say(f"reproduce {p.name}: table and figures written to {out_dir}; wall time of this invocation "
        f"{time.perf_counter() - t_begin:.0f} s")
    return table


def _base_residuals(planned: Sequence[PlannedRun], data: Mapping[str, Any], memory_budget: int,
                    say: Callable[[str], None]) -> None:
    """The residual lower bound of every finished base run that has none yet (timed; skipped with a reason)."""
    for run in planned:
        if run.config["modified"] or (run.path / ALIGNMENT_LOWER_FILE).is_file() or \
                not (run.path / "config.json").is_file():
            continue
        record = load_run(run.path)
        if not record.finished:
            continue
        try:
            out = base_alignment_lower(record, data.get(run.config["dataset"]), memory_budget)
        except (RunStateError, DataError) as exc:  # e.g. a deleted checkpoint: said; the table shows "not computed"
            say(f"{run.name}: base residual bound not computed: {exc}")
            continue
        if out["skipped"] is not None:
            say(f"{run.name}: base residual bound skipped ({out['time_s']:.0f} s): {out['skipped']}")
        else:
            say(f"{run.name}: base residual r >= {out['lower']:.3e} (<= {out['upper']:.3e}) on all {out['n']} "
                f"training points, subset |S| = {out['subset_size']}, {out['time_s']:.0f} s")


def _recertify(planned: Sequence[PlannedRun], data: Mapping[str, Any], say: Callable[[str], None]) -> None:
    """The end certificate of every finished modified run written with the generic ‖Z*‖ bound, recomputed."""
    for run in planned:
        if not run.config["modified"] or not (run.path / "config.json").is_file():
            continue
        record = load_run(run.path)
        if not needs_recertification(record):
            continue
        try:
            out = recertify_end(record, data.get(run.config["dataset"]))
        except (RunStateError, DataError) as exc:
            say(f"{run.name}: end certificate not recomputed: {exc}")
            continue
        say(f"{run.name}: {describe(out)}")


def _train(run: PlannedRun, data: tuple[Any, Any, Any, Any] | None) -> RunSummary | None:
    config = TrainConfig.from_dict(run.config).validate()
    return train(config, run.path, resume=run.state == "resume", overwrite=run.state == "restart", data=data)
