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
from dynamics.training.checkpoint import load_checkpoint
from dynamics.training.framework import rebuild
from dynamics.training.run_certificate import GENERIC_ZSTAR, run_certificate
from dynamics.training.run_folder import RunRecord, load_run

__all__ = ["recertify_end", "needs_recertification", "read_recertified", "RECERTIFIED_FILE"]

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
    if not record.modified or not record.finished or record.summary is None or record.summary.switch is None:
        raise RunStateError(f"{record.path}: recertify_end needs a finished modified run, got {record}")
    ckpt = Path(record.path) / "checkpoints" / "last.pt"
    if not ckpt.is_file():
        raise RunStateError(f"{ckpt} is missing: the final parameters of {record.path} are needed; rerun the run")
    start = time.perf_counter()
    state = load_checkpoint(ckpt, cfg.digest())
    if state.get("framework") is None:
        raise RunStateError(f"{ckpt} holds no modified model (no framework state): is it the run's last epoch?")
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
    loss = cfg.loss if cfg.phase2_loss is None else cfg.phase2_loss
    cert = run_certificate(model, tensors.x_train, tensors.y_train, tensors.x_test, tensors.y_test,
                           record.summary.switch.certificate, "end", loss=loss)
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


def read_recertified(run: RunRecord) -> dict[str, Any] | None:
    """The ``run_certificate_end.json`` of a run folder, or None when there is none."""
    path = Path(run.path) / RECERTIFIED_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())
