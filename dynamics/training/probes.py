"""Probes: the conditions measured on a fixed subset of the training set during training.

On ``n_probe`` fixed training points S (chosen once from the seed) the probe computes, in float64, the empirical
NTK Θ = J_S J_Sᵀ (m·k × m·k, sample-major, m = n_probe) w.r.t. all trainable parameters and its column space with
the toolkit's one rank/projector rule (:meth:`dynamics.conditions.ColumnSpace.from_gram`; rank, tolerance and
σ_min as every other check reports them). With P the projector onto Col J_S and Y_S the one-hot targets:

* ``alignment_residual`` = r_S = ‖(I − P)Y_S‖ / ‖Y_S‖ on the probe set (exact, float64);
* ``alignment_trivial``: True when m·k ≤ p. Then J_S generically has full row rank, r_S = 0 for *any*
  network, trained or not, and r_S says nothing (``alignment_note`` says so; do not plot it);
* ``alignment_lower_bound`` = r_S·‖Y_S‖/‖Y‖ (None when trivial): a rigorous lower bound on the alignment
  residual of the WHOLE training set (any z with Y = J z gives Y_S = J_S z, so dist(Y, Col J) ≥
  dist(Y_S, Col J_S)); for one-hot targets ‖Y‖ = √n_train. It can be positive only when m·k > p, i.e. with
  ``probe_size ≥ ⌊p/k⌋ + 1`` (``alignment_min_probe_size``), which needs an NTK of about p rows;
* ``rank``, ``sigma_min``, ``sigma_max``, ``rank_tolerance``, ``p``, ``rows`` (= m·k);
* ``loss_fit`` = ½‖P(f − Y)‖², ``loss_floor`` = ½‖(I − P)Y‖², ``square_loss`` = ½‖f − Y‖² (sums over the probe
  points; under the on-model structure square_loss = loss_fit + loss_floor);
* ``on_model_residual``: ‖f − J_S θ_S‖/‖f‖ from :func:`dynamics.check_on_model_structure` (S found
  automatically; for f̃ = f + g, S = the read-out of f and ζ);
* ``kernel_distance`` = 1 − ⟨Θ_0, Θ_t⟩_F / (‖Θ_0‖_F ‖Θ_t‖_F) to the NTK at epoch 0 (after the switch Θ_t is the
  kernel of f̃ = f + g, all parameters).

BatchNorm: probes use ``bn_mode="eval"`` (running statistics). It is the function used at test time and a
per-sample function, so the numbers do not depend on which other points are in the probe set.

Cost: one float64 NTK of m·k rows plus an m·k × m·k eigendecomposition. ``max_rows`` bounds m·k (a larger probe is
refused), and each record carries its ``time_s``.

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 2))          # p = 98
>>> rec = measure(net, torch.randn(5, 3), torch.tensor([0, 1, 0, 1, 1]), num_classes=2)
>>> rec["rank"], rec["alignment_trivial"], rec["alignment_lower_bound"]          # 10 rows: r = 0 for any net
(10, True, None)
>>> rec = measure(net, torch.randn(80, 3), torch.randint(0, 2, (80,)), num_classes=2, n_train=1000)
>>> rec["alignment_trivial"], 0 < rec["alignment_lower_bound"] < rec["alignment_residual"]
(False, True)
"""

from __future__ import annotations

import copy
import logging
import math
import time
from typing import Any, Optional

import torch
from torch import nn

from dynamics.conditions.column_space import ColumnSpace
from dynamics.conditions.on_model import check_on_model_structure
from dynamics.engine.ntk import ntk
from dynamics.errors import InputError
from dynamics.training.framework import on_model_subset

__all__ = ["measure", "Probe", "bn_mode_for", "ntk_matrix"]

log = logging.getLogger(__name__)


def bn_mode_for(model: nn.Module) -> str | None:
    """``"eval"`` if the model has a BatchNorm layer, else ``None``."""
    return "eval" if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()) else None


def ntk_matrix(model: nn.Module, x: torch.Tensor, bn_mode: str | None) -> torch.Tensor:
    """Θ (nk, nk) float64, sample-major, w.r.t. all parameters with requires_grad."""
    k = ntk(model, x, bn_mode=bn_mode, dtype=torch.float64)
    n, _, kk, _ = k.shape
    return k.permute(0, 2, 1, 3).reshape(n * kk, n * kk)


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    m = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        return m(x.double()).reshape(len(x), -1)


def _on_model(model: nn.Module, x: torch.Tensor, bn_mode: str | None) -> tuple[float, bool, str]:
    subset = on_model_subset(model)
    rep = check_on_model_structure(model, x, subset=subset, bn_mode=bn_mode)
    return float(rep.euler_residual), bool(rep.holds), f"dynamics.check_on_model_structure(subset={subset!r})"


def measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, rtol: float | None = None,
            theta0: torch.Tensor | None = None, on_model: bool = True, n_train: Optional[int] = None
            ) -> dict[str, Any]:
    """The probe quantities of ``model`` on (x, y) (see the module docstring); y int64 (n,) labels.

    ``n_train``: size of the training set the probe points come from (for the lower bound; default: the probe
    set itself). ``rtol``: relative rank threshold (default: ColumnSpace's). Returns a JSON-ready dict;
    ``"_ntk"`` holds Θ (removed by :class:`Probe` before writing).
    """
    t0 = time.perf_counter()
    bn_mode = bn_mode_for(model)
    theta = ntk_matrix(model, x, bn_mode)
    rows = theta.shape[0]
    p = sum(t.numel() for t in model.parameters() if t.requires_grad)
    cs = ColumnSpace.from_gram(theta, "rows", (rows, p), rtol=rtol)
    yv = nn.functional.one_hot(y.long(), num_classes).double().reshape(-1).to(theta.device)
    f = _outputs(model, x).reshape(-1).to(theta.device)
    r_s = cs.relative_residual(yv)
    m = len(x)
    n_train = m if n_train is None else int(n_train)
    trivial = rows <= p
    min_size = p // num_classes + 1
    rec: dict[str, Any] = {
        "alignment_residual": r_s,
        "alignment_trivial": trivial,
        "alignment_lower_bound": None if trivial else r_s * math.sqrt(m / n_train),
        "alignment_min_probe_size": min_size,
        "alignment_note": (f"trivial at this size: {m} probe points x {num_classes} outputs = {rows} <= p = {p}, so "
                           f"r = 0 for any network; a lower bound on the training set needs probe_size >= {min_size}"
                           if trivial else f"r_S on {m} probe points bounds the training-set residual from below"),
        "rank": cs.rank,
        "rows": rows,
        "p": p,
        "sigma_min": cs.sigma_min if cs.sigma_min is not None else 0.0,
        "sigma_max": cs.sigma_max,
        "rank_tolerance": cs.tolerance,
        "rtol": cs.rtol,
        "loss_fit": 0.5 * float(cs.project(f - yv).square().sum()),
        "loss_floor": 0.5 * cs.residual(yv) ** 2,
        "square_loss": float(0.5 * (f - yv).square().sum()),
        "bn_mode": bn_mode,
        "n_probe": m,
    }
    if on_model:
        rec["on_model_residual"], rec["on_model_holds"], rec["on_model_method"] = _on_model(model, x, bn_mode)
    if theta0 is not None:
        t0_ = theta0.to(theta)
        rec["kernel_distance"] = float(1 - (t0_ * theta).sum() / (t0_.norm() * theta.norm()).clamp_min(1e-300))
    else:
        rec["kernel_distance"] = 0.0
    rec["time_s"] = time.perf_counter() - t0
    rec["_ntk"] = theta
    return rec


class Probe:
    """Measure the conditions on ``n_probe`` fixed training points at chosen epochs.

    Args:
        x_train, y_train: the training set (un-augmented); the probe points are a seeded subset.
        num_classes: k. every: probe after every ``every`` epochs (and at epoch 0 and the last epoch).
        size: number of probe points; ``size * num_classes`` must not exceed ``max_rows``.
        seed: selects the points.
    """

    def __init__(self, x_train: torch.Tensor, y_train: torch.Tensor, num_classes: int, every: int, size: int = 64,
                 seed: int = 0, max_rows: int = 4096) -> None:
        size = min(size, len(x_train))
        if size * num_classes > max_rows:
            raise InputError(f"probe_size={size} with {num_classes} classes gives an NTK of {size * num_classes} "
                             f"rows, above the bound max_rows={max_rows}; lower probe_size to at most "
                             f"{max_rows // num_classes}")
        self.n_train = len(x_train)
        g = torch.Generator().manual_seed(seed + 7)
        self.indices = torch.randperm(len(x_train), generator=g)[:size].sort().values
        self.x, self.y = x_train[self.indices.to(x_train.device)], y_train[self.indices.to(y_train.device)]
        self.num_classes, self.every = num_classes, every
        self.theta0: torch.Tensor | None = None
        self.total_time_s = 0.0

    def due(self, epoch: int, last_epoch: int) -> bool:
        """Whether to probe after ``epoch`` completed epochs (0 = before training)."""
        return self.every > 0 and (epoch == 0 or epoch % self.every == 0 or epoch == last_epoch)

    def __call__(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        """The probe record for ``metrics.jsonl`` (``type="probe"``)."""
        rec = measure(model, self.x, self.y, self.num_classes, theta0=self.theta0, n_train=self.n_train)
        theta = rec.pop("_ntk")
        if self.theta0 is None:
            self.theta0 = theta.cpu()
        self.total_time_s += rec["time_s"]
        return {"type": "probe", "epoch": epoch, **rec}

    def state_dict(self) -> dict[str, Any]:
        return {"indices": self.indices, "theta0": self.theta0, "total_time_s": self.total_time_s}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not torch.equal(state["indices"], self.indices):
            raise InputError("the checkpoint's probe points differ from this run's (different data or seed)")
        self.theta0, self.total_time_s = state["theta0"], float(state["total_time_s"])
