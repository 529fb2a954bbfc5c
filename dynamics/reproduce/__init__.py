"""Reproduction of the base-vs-modified experiments: presets, resumable runs, the table and the figures.

* :func:`reproduce` -- train every run of a preset (``"paper"`` or ``"cpu"``, see :mod:`.presets`), skipping
  finished ones and resuming interrupted ones, then write ``table.{md,csv,tex,json}`` and the figures.
* :func:`write_report` / :func:`build_table` -- the same table and figures from finished runs, no training.
* :func:`discover_runs`, :class:`RunRecord` -- reading run directories.

Command line: ``dynamics reproduce --preset cpu`` and ``dynamics report RUN_DIR...``.
"""

from __future__ import annotations

from dynamics.reproduce.presets import PRESETS, Preset, preset_config_dicts, preset_configs
from dynamics.reproduce.report import write_report
from dynamics.reproduce.campaign import plan, reproduce
from dynamics.reproduce.run_groups import RunRecord, discover_runs, group_runs, load_run
from dynamics.reproduce.table import ReproductionTable, SkippedDataset, build_table

__all__ = ["reproduce", "plan", "write_report", "build_table", "ReproductionTable", "SkippedDataset",
           "PRESETS", "Preset", "preset_configs", "preset_config_dicts", "RunRecord", "discover_runs",
           "group_runs", "load_run"]
