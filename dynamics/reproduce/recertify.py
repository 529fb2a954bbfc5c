"""The end-of-run certificate of a finished modified run, recomputed from its final checkpoint with the current bound.

A modified run records its run certificate ε at the end in ``summary.json`` with the bound of the code that trained
it. Runs written before the tighter ‖Z*‖ bound (:func:`dynamics.training.run_certificate.zstar_norm_bound`;
their certificate has no ``zstar_method``) used ‖Z*‖ ≤ √n_u/σ_min. :func:`recertify_end` loads the final parameters
(``checkpoints/last.pt``, verified against the run's configuration digest), rebuilds f̃ = f + g, recomputes the
training cache and the certificate on the whole training set, and writes ``run_certificate_end.json`` into the run
folder; the summary is not rewritten (it stays the record of the run as trained). The reproduction table reads
this file in preference to the summary's certificate and says so.

Nothing is trained: the parameters are the run's; only the bound on ‖Z*‖ changes, and with it ε.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from dynamics.atomic import write_json
from dynamics.data.train_test import load_train_test
from dynamics.errors import RunStateError
from dynamics.models import create_for_data
from dynamics.training.framework import rebuild
from dynamics.training.run_certificate import GENERIC_ZSTAR, run_certificate
from dynamics.training.run_folder import RunRecord, load_run

__all__ = ["recertify_end", "needs_recertification", "read_recertified", "describe", "RECERTIFIED_FILE"]

RECERTIFIED_FILE = "run_certificate_end.json"


def needs_recertification(record: RunRecord) -> bool:
    """A finished modified run whose end certificate was computed with the generic ‖Z*‖ bound and that has no
    ``run_certificate_end.json`` yet."""
    if not record.modified or not record.finished or record.summary is None:
        return False
    cert = record.summary.run_certificate_end or {}
    if not cert or cert.get("zstar_method", GENERIC_ZSTAR) != GENERIC_ZSTAR:
        return False
    return not (Path(record.path) / RECERTIFIED_FILE).is_file()


def recertify_end(run: RunRecord | str | os.PathLike, data: tuple | None = None, write: bool = True
                  ) -> dict[str, Any]:
    """Recompute the end-of-run certificate of a finished modified run (module docstring).

    Args:
        run: the run (record or folder) with its ``checkpoints/last.pt``.
        data: ``(x_train, y_train, x_test, y_test)`` the run was trained on (default: loaded as the run did).
        write: also write ``run_certificate_end.json`` into the run folder (atomically).

    Returns:
        the certificate's dict plus ``recertified`` (what changed, the previous ε, the seconds taken).

    Raises:
        RunStateError: not a finished modified run, or its final checkpoint is missing.
    """
    record = run if isinstance(run, RunRecord) else load_run(run)
    cfg = record.config
    start = time.perf_counter()
    state = record.final_state(modified=True)
    if state.get("framework") is None or record.summary.switch is None:
        raise RunStateError(f"{record.path}: the final checkpoint holds no modified model (no switch recorded)")
    tensors = load_train_test(cfg.dataset, cfg.data_root, cfg.train_subset, cfg.seed, data)
    # built as training built them (channels-last weights when configured): the frozen representation must
    # reproduce the fitted centres bit for bit, or the feature map refuses the training cache
    base, template = (create_for_data(cfg.model, tensors.x_train, tensors.num_classes, **cfg.model_options)
                      for _ in range(2))
    if cfg.channels_last:
        base, template = (m.to(memory_format=torch.channels_last) for m in (base, template))
    model = rebuild(base, template, state["framework"], state["model"])
    model.eval()
    model.cache_training_features(tensors.x_train)
    cert = run_certificate(model, tensors.x_train, tensors.y_train, tensors.x_test, tensors.y_test,
                           record.summary.switch.certificate, "end", loss=cfg.loss_after_switch)
    previous = record.summary.run_certificate_end or {}
    out = cert.to_dict()
    out["recertified"] = {
        "why": "the end certificate in summary.json used the generic bound ||Z*|| <= sqrt(n_u)/sigma_min; "
               "recomputed from checkpoints/last.pt with the LSQR-solve bound (same parameters, nothing trained)",
        "previous_epsilon_ce": previous.get("epsilon_ce"), "previous_zstar_norm_upper": previous.get("zstar_norm_upper"),
        "train_loss_matches_summary": previous.get("train_loss") is not None and abs(
            out["train_loss"] - previous["train_loss"]) <= 1e-6 * max(1.0, abs(previous["train_loss"])),
        "time_s": time.perf_counter() - start}
    if write:
        write_json(Path(record.path) / RECERTIFIED_FILE, out)
    return out


def describe(out: dict[str, Any]) -> str:
    """One line for a recomputed certificate: the time, ε before → after, and the verdict.

    >>> describe({"epsilon_ce": 0.0861, "ce_certified": True, "zstar_method": "LSQR solve",
    ...           "recertified": {"previous_epsilon_ce": 0.515, "time_s": 263.2}})
    'end certificate recomputed from the final checkpoint (263 s): eps 0.515 -> 0.0861 (< 1/2: certified; LSQR solve)'
    """
    old, new = out["recertified"]["previous_epsilon_ce"], out["epsilon_ce"]
    return (f"end certificate recomputed from the final checkpoint ({out['recertified']['time_s']:.0f} s): "
            f"eps {'n/a' if old is None else format(old, '.3g')} -> {'n/a' if new is None else format(new, '.3g')} "
            f"({'< 1/2: certified' if out['ce_certified'] else 'not < 1/2'}; {out['zstar_method']})")


def read_recertified(run: RunRecord) -> dict[str, Any] | None:
    """The ``run_certificate_end.json`` of a run folder, or None when there is none."""
    path = Path(run.path) / RECERTIFIED_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())
