"""The conditions verified (not assumed) at the switch τ and at the end of a run, stored in the summary.

On a seeded subset of ``n_checked`` training points the model is checked EXACTLY in float64, in eval mode (the
function used at test time; with BatchNorm that is ``bn_mode="eval"``): the on-model structure residual and the
alignment residual r = ‖(I − P)Y‖/‖Y‖ of the whole model (f or f̃ = f + g, all parameters). For the FULL training
set of a modified run the record carries the feature construction's certificate (an exact argument checked on
the data, e.g. a strictly positive-definite Gaussian kernel on distinct points, or a numerical rank), which
implies alignment of f̃ at every θ (see :mod:`dynamics.training.features`).

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Linear(3, 32), nn.Tanh(), nn.Linear(32, 2))
>>> rec = check_conditions(net, torch.randn(6, 3), torch.tensor([0, 1] * 3), num_classes=2, n_checked=6)
>>> rec["alignment_holds"], rec["n_checked"]
(True, 6)
"""

from __future__ import annotations

import contextlib
import copy
import time
from typing import Any

import torch
from torch import nn

from dynamics.training.probes import bn_mode_for, measure, on_model_subset

__all__ = ["check_conditions", "ALIGNMENT_RTOL"]

#: a subset residual below this counts as aligned (float64, exact dense computation)
ALIGNMENT_RTOL = 1e-6


def _checkers():
    try:
        from dynamics.conditions.alignment import check_alignment
        from dynamics.conditions.on_model import check_on_model_structure
        return check_alignment, check_on_model_structure
    except ImportError:
        return None, None


def check_conditions(model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, num_classes: int,
                     n_checked: int = 128, seed: int = 0, feature_certificate: dict[str, Any] | None = None,
                     full_check: bool = False) -> dict[str, Any]:
    """Check the on-model structure and alignment on a subset; attach the full-set certificate if given.

    ``full_check`` (modified runs) also runs the matrix-free LSQR path of :func:`dynamics.check_alignment` on the
    WHOLE training set for J restricted to ζ's columns (Col J_ζ ⊆ Col J_f̃, so alignment there implies alignment
    of f̃), via :class:`~dynamics.training.framework.GOnTrainingSet` (one n × m matrix product per iteration);
    recorded under ``full_set_lsqr``.

    Returns a JSON-ready dict with ``on_model_residual``, ``on_model_holds``, ``alignment_residual``,
    ``alignment_holds``, ``rank``, ``sigma_min``, ``certificate`` (str), ``full_set_certified`` (bool or None),
    ``n_checked``, ``bn_mode``, ``checker`` and ``time_s``.
    """
    t0 = time.perf_counter()
    n_checked = min(n_checked, len(x_train))
    g = torch.Generator().manual_seed(seed + 11)
    idx = torch.randperm(len(x_train), generator=g)[:n_checked].sort().values
    x, y = x_train[idx.to(x_train.device)], y_train[idx.to(y_train.device)]
    with (model.without_cache() if hasattr(model, "without_cache") else contextlib.nullcontext()):
        m = copy.deepcopy(model).eval()
    bn_mode = bn_mode_for(m)
    rec: dict[str, Any] = {"n_checked": n_checked, "bn_mode": "eval (running statistics, the test-time function)"
                           if bn_mode else "none (no BatchNorm)"}
    check_alignment, check_on_model = _checkers()
    if check_alignment is not None:
        yk = nn.functional.one_hot(y.long(), num_classes).double()
        a = check_alignment(m, x, yk, bn_mode=bn_mode, method="dense")
        o = check_on_model(m, x, subset=on_model_subset(m), bn_mode=bn_mode)
        opt = lambda v: None if v is None else float(v)  # noqa: E731
        rec.update(alignment_residual=float(a.residual), alignment_holds=bool(a.holds), rank=a.rank,
                   sigma_min=opt(a.sigma_min), alignment_tolerance=float(a.tolerance),
                   on_model_residual=float(getattr(o, "euler_residual", getattr(o, "residual", float("nan")))),
                   on_model_holds=bool(o.holds),
                   on_model_subset=list(o.subset), checker="dynamics.check_alignment(method='dense') and "
                   "dynamics.check_on_model_structure")
    else:
        p = measure(m, x, y, num_classes)
        rec.update(alignment_residual=p["alignment_residual"], alignment_holds=p["alignment_residual"] < ALIGNMENT_RTOL,
                   rank=p["rank"], sigma_min=p["sigma_min"], alignment_tolerance=ALIGNMENT_RTOL,
                   on_model_residual=p["on_model_residual"], on_model_holds=p["on_model_holds"],
                   checker="eigendecomposition of the float64 NTK on the subset (dynamics.training.probes.measure)")
    if feature_certificate is not None:
        rec["certificate"] = feature_certificate["text"]
        rec["certificate_method"] = feature_certificate["method"]
        rec["full_set_certified"] = bool(feature_certificate["holds"])
    else:
        rec["certificate"] = (f"none: base model; alignment measured on {n_checked} training points only")
        rec["full_set_certified"] = None
    if full_check and feature_certificate is not None and check_alignment is not None:
        from dynamics.training.framework import GOnTrainingSet

        t1 = time.perf_counter()
        if model._phi_cache is not None:
            phi = model._phi_cache
        else:
            h = model._h_cache if model._h_cache is not None else model.rep.embed(x_train)
            with torch.no_grad():
                phi = torch.cat([model.feature_map(h[s:s + 512]) for s in range(0, len(h), 512)])
        g_train = GOnTrainingSet(model, phi.detach())
        a = check_alignment(g_train, torch.arange(len(x_train), device=phi.device), y_train.long(), method="lsqr")
        rec["full_set_lsqr"] = {"residual": float(a.residual), "holds": bool(a.holds), "n": len(x_train),
                                "iterations": a.iterations, "conclusive": bool(a.conclusive),
                                "what": "dynamics.check_alignment(method='lsqr') on g over the whole training set "
                                        "(J_zeta = Phi (x) I_k; Col J_zeta is contained in Col J of f~)",
                                "time_s": time.perf_counter() - t1}
    rec["time_s"] = time.perf_counter() - t0
    return rec
