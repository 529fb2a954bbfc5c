"""The conditions checked (not assumed) at the switch τ and at the end of a run, on a subset and on the full set.

On a seeded subset S of ``n_checked`` training points the model is checked EXACTLY in float64, in eval mode (the
function used at test time; with BatchNorm that is ``bn_mode="eval"``): the on-model structure residual and the
alignment residual r_S = ‖(I − P_S)Y_S‖/‖Y_S‖ of the whole model (f or f̃ = f + g, all parameters).

The subset's residual is also a proven LOWER bound for the full training set: deleting rows can only shrink the
distance of Y to the column space (min_v ‖Jv − Y‖ ≥ min_v ‖J_S v − Y_S‖), and ‖Y‖² = n for one-hot targets, so
r_full ≥ r_S·√(|S|/n) (``alignment_residual_full_lower``). At τ, on the base network, this says whether the
modification was needed at all (a positive value proves the base network is NOT aligned on the full set); a
zero says nothing. For a modified run the full set is covered by the feature certificate
(:mod:`dynamics.training.features`), and with ``full_check`` by LSQR on g over all n points.

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Linear(3, 32), nn.Tanh(), nn.Linear(32, 2))
>>> rec = check_conditions(net, torch.randn(6, 3), torch.tensor([0, 1] * 3), num_classes=2, n_checked=6)
>>> rec["alignment_holds"], rec["n_checked"]
(True, 6)
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import torch
from torch import nn

from dynamics.conditions.alignment import DEFAULT_ALIGNMENT_MEMORY_BUDGET, check_alignment
from dynamics.conditions.on_model import check_on_model_structure
from dynamics.training.framework import GOnTrainingSet, is_augmented, on_model_subset
from dynamics.training.probes import bn_mode_for

__all__ = ["check_conditions", "full_set_lsqr"]


def full_set_lsqr(model: nn.Module, y_train: torch.Tensor) -> dict[str, Any]:
    """:func:`dynamics.check_alignment` (matrix-free LSQR) on g over the WHOLE training set: J_ζ = Φ ⊗ I_k, and
    Col J_ζ ⊆ Col J_f̃, so alignment there implies alignment of f̃. Needs the model's training cache."""
    t0 = time.perf_counter()
    g_train = GOnTrainingSet(model)
    n = g_train.rows.n
    a = check_alignment(g_train, torch.arange(n), y_train.long().cpu(), method="lsqr")
    return {"residual": float(a.residual), "holds": bool(a.holds), "n": n, "iterations": a.iterations,
            "conclusive": bool(a.conclusive), "time_s": time.perf_counter() - t0,
            "what": "dynamics.check_alignment(method='lsqr') on g over the whole training set "
                    "(J_zeta = Phi (x) I_k; Col J_zeta is contained in Col J of f~)"}


def check_conditions(model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, num_classes: int,
                     n_checked: int = 128, seed: int = 0, feature_certificate: dict[str, Any] | None = None,
                     full_check: bool = False, memory_budget: int = DEFAULT_ALIGNMENT_MEMORY_BUDGET
                     ) -> dict[str, Any]:
    """Check the on-model structure and alignment on a subset; attach the full-set certificate if given.

    The alignment check is exact on the subset: the dense J when it and its Gram fit ``memory_budget``, else the
    NTK route (``check_alignment(method="auto")``; a modified model at n = 60,000 has p ≈ 680,000 parameters,
    and a dense J on 128 points would need 6.5 GiB).

    Returns a JSON-ready dict with ``on_model_residual``, ``on_model_holds``, ``alignment_residual``,
    ``alignment_holds``, ``alignment_residual_full_lower`` (proven lower bound on the full set's residual),
    ``rank``, ``sigma_min``, ``certificate`` (str), ``full_set_certified`` (bool or None), ``n_checked``,
    ``bn_mode``, ``checker``, ``time_s`` and, with ``full_check`` on a modified model, ``full_set_lsqr``.
    """
    t0 = time.perf_counter()
    n = len(x_train)
    n_checked = min(n_checked, n)
    g = torch.Generator().manual_seed(seed + 11)
    idx = torch.randperm(n, generator=g)[:n_checked].sort().values
    x, y = x_train[idx.to(x_train.device)], y_train[idx.to(y_train.device)]
    augmented = is_augmented(model)
    if augmented:
        with model.without_cache():  # the engine's private copies of the model stay small
            m = copy.deepcopy(model).eval()
    else:
        m = copy.deepcopy(model).eval()
    bn_mode = bn_mode_for(m)
    yk = nn.functional.one_hot(y.long(), num_classes).double()
    a = check_alignment(m, x, yk, bn_mode=bn_mode, method="auto", memory_budget=memory_budget)
    o = check_on_model_structure(m, x, subset=on_model_subset(m), bn_mode=bn_mode)
    lower = float(a.residual_lower) if a.residual_lower is not None else 0.0
    rec: dict[str, Any] = {
        "n_checked": n_checked, "n": n,
        "bn_mode": "eval (running statistics, the test-time function)" if bn_mode else "none (no BatchNorm)",
        "alignment_residual": float(a.residual), "alignment_holds": bool(a.holds), "rank": a.rank,
        "sigma_min": None if a.sigma_min is None else float(a.sigma_min), "alignment_tolerance": float(a.tolerance),
        "alignment_residual_full_lower": lower * math.sqrt(n_checked / n),
        "alignment_trivial": None if a.trivial is None else bool(a.trivial), "p": a.p, "nk": a.n * a.k,
        "on_model_residual": float(o.euler_residual), "on_model_holds": bool(o.holds),
        "on_model_subset": list(o.subset),
        "alignment_method": a.method, "alignment_conclusive": bool(a.conclusive),
        "checker": f"dynamics.check_alignment(method='{a.method}') and dynamics.check_on_model_structure"}
    if feature_certificate is not None:
        rec["certificate"] = feature_certificate["text"]
        rec["certificate_method"] = feature_certificate["method"]
        rec["full_set_certified"] = bool(feature_certificate["holds"])
    else:
        rec["certificate"] = (f"none: base model; alignment measured on {n_checked} training points; the full-set "
                              f"residual is at least {rec['alignment_residual_full_lower']:.3e}"
                              + (f" (trivial at this size: {n_checked} points give nk = {rec['nk']} <= p = "
                                 f"{rec['p']} rows, so no lower bound above 0 is possible)"
                                 if rec["alignment_trivial"] else ""))
        rec["full_set_certified"] = None
    if full_check and augmented:
        rec["full_set_lsqr"] = full_set_lsqr(model, y_train)
    rec["time_s"] = time.perf_counter() - t0
    return rec
