"""The base network's own alignment residual at the end of its run: a rigorous lower bound, or why there is none.

After a base run finishes, :func:`base_alignment_lower` loads its final parameters (``checkpoints/last.pt``) and
bounds r = ‖(I − P) vec(Y)‖/‖vec(Y)‖ on the whole training set from below with
:func:`dynamics.check_alignment`'s subset route (a seeded subset S with |S|·k > p; the network in eval mode, the
function it is tested with): a positive lower bound proves that the base network alone does NOT satisfy the
alignment condition at its final parameters. It is written to ``alignment_lower.json`` in the run folder, timed
separately from training, and read by the reproduction table (``base.alignment_lower``).

It is skipped, with the reason recorded, when no subset can give a positive bound (n·k ≤ p: J can have full
row rank on the whole training set) or when the subset route does not fit the memory budget ([J_S, Y_S] is
|S|·k × (p + 1) float64 numbers; at p = 77,754 and k = 10 at least 45 GiB, 112.6 GiB at the default 1.5× subset).

>>> need_for_lower_bound(n=1000, k=10, p=77754)["skipped"][:40]
'no subset can bound r from below: n·k = '
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from dynamics.atomic import write_json
from dynamics.conditions.alignment import check_alignment
from dynamics.conditions.gram import default_subset, minimum_subset
from dynamics.conditions.subset_bound import subset_bytes
from dynamics.data.train_test import load_train_test
from dynamics.models import create_for_data
from dynamics.training.run_folder import RunRecord, load_run

__all__ = ["base_alignment_lower", "need_for_lower_bound", "read_alignment_lower", "ALIGNMENT_LOWER_FILE",
           "DEFAULT_MEMORY_BUDGET"]

ALIGNMENT_LOWER_FILE = "alignment_lower.json"
DEFAULT_MEMORY_BUDGET = 2 * 2**30


def need_for_lower_bound(n: int, k: int, p: int, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> dict[str, Any]:
    """The subset the bound would use and its memory, with ``skipped`` set to the reason when it cannot run."""
    need = minimum_subset(p, k)
    out: dict[str, Any] = {"n": n, "k": k, "p": p, "subset_size": None, "bytes": None, "skipped": None}
    if need > n:
        out["skipped"] = (f"no subset can bound r from below: n·k = {n * k} ≤ p = {p}, so J can have full row rank "
                          f"on all n = {n} training points (the bound needs |S|·k > p, |S| ≥ {need})")
        return out
    size = default_subset(n, p, k)
    out["subset_size"], out["bytes"] = size, subset_bytes(size * k, p)
    if out["bytes"] > memory_budget:
        out["skipped"] = (f"too costly here: the subset route needs [J_S, Y_S] of {size * k} x {p + 1} float64 "
                          f"({out['bytes'] / 2**30:.1f} GiB) > the memory budget {memory_budget / 2**30:.1f} GiB "
                          f"(and ~{2 * size * k * p * p / 1e12:.0f} Tflop for its QR)")
    return out


def base_alignment_lower(run: RunRecord | str | os.PathLike, data: tuple | None = None,
                         memory_budget: int = DEFAULT_MEMORY_BUDGET, subset_seed: int = 0,
                         write: bool = True) -> dict[str, Any]:
    """The lower bound on the base run's final alignment residual on its whole training set (module docstring).

    Args:
        run: a finished base run (record or folder) with its ``checkpoints/last.pt``.
        data: ``(x_train, y_train, x_test, y_test)`` the run was trained on (default: loaded as the run did).
        memory_budget: bytes the subset route may use; above it the bound is skipped with the reason.
        subset_seed: seed choosing S.
        write: also write ``alignment_lower.json`` into the run folder.

    Returns:
        ``{"lower", "upper", "subset_size", "p", "k", "n", "time_s", "skipped", ...}``; ``lower``/``upper`` are
        None when skipped.

    Raises:
        RunStateError: the run is not a finished base run, or its checkpoint is missing.
    """
    record = run if isinstance(run, RunRecord) else load_run(run)
    cfg = record.config
    start = time.perf_counter()
    state = record.final_state(modified=False)
    tensors = load_train_test(cfg.dataset, cfg.data_root, cfg.train_subset, cfg.seed, data)
    model = create_for_data(cfg.model, tensors.x_train, tensors.num_classes, **cfg.model_options)
    model.load_state_dict(state["model"])
    model.eval()
    n, k = len(tensors.x_train), tensors.num_classes
    p = sum(q.numel() for q in model.parameters() if q.requires_grad)
    out = need_for_lower_bound(n, k, p, memory_budget)
    out.update(lower=None, upper=None, method="subset", bn_mode="eval", subset_seed=subset_seed)
    if out["skipped"] is None:
        report = check_alignment(model, tensors.x_train, tensors.y_train, bn_mode="eval", method="subset",
                                 subset_size=out["subset_size"], subset_seed=subset_seed,
                                 memory_budget=memory_budget)
        out.update(lower=report.residual_lower, upper=report.residual_upper, notes=list(report.notes))
    out["time_s"] = time.perf_counter() - start
    if write:
        write_json(Path(record.path) / ALIGNMENT_LOWER_FILE, out)
    return out


def read_alignment_lower(run: RunRecord) -> dict[str, Any] | None:
    """The ``alignment_lower.json`` of a run folder, or None when it was not computed."""
    path = Path(run.path) / ALIGNMENT_LOWER_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())
