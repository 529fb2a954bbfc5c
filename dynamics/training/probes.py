"""Probes: the conditions measured on a fixed subset of the training set during training.

On ``n_probe`` fixed training points (chosen once from the seed) the probe computes, in float64, the empirical
NTK Θ = J Jᵀ (nk × nk, sample-major) of the model w.r.t. all trainable parameters and its eigendecomposition
Θ = U Λ Uᵀ. With rank r = #{λ_i > rtol² λ_max} (σ_i = √λ_i are J's singular values, so this is the rank of J with
relative tolerance ``rtol`` on σ) and P = U_r U_rᵀ the projector onto Col J:

* ``alignment_residual`` = ‖(I − P)Y‖ / ‖Y‖ (Y = one-hot targets, sample-major), ``rank`` = r,
  ``sigma_min`` = √λ_r (smallest non-zero singular value of J);
* ``loss_fit`` = ½‖P(f − Y)‖², ``loss_floor`` = ½‖(I − P)Y‖², ``square_loss`` = ½‖f − Y‖² (sums over the probe
  points, not means; under the on-model structure square_loss = loss_fit + loss_floor);
* ``on_model_residual``: ‖f − J_S θ_S‖/‖f‖ from :func:`dynamics.check_on_model_structure` (S found
  automatically), or with S = the read-out (and ζ) when the conditions module is unavailable;
* ``kernel_distance`` = 1 − ⟨Θ_0, Θ_t⟩_F / (‖Θ_0‖_F ‖Θ_t‖_F) to the NTK at epoch 0 (after the switch Θ_t is the
  kernel of f̃ = f + g, all parameters).

BatchNorm: probes use ``bn_mode="eval"`` (running statistics). It is the function used at test time and a
per-sample function, so the numbers do not depend on which other points are in the probe set; "batch"/"frozen"
would describe the function of the probe batch as a whole, which no training step ever sees either.

Cost: one float64 NTK of nk rows plus an nk × nk eigendecomposition. ``max_rows`` bounds nk (a larger probe is
refused), and each record carries its ``time_s``; the runner reports the total in the summary.

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 2))
>>> rec = measure(net, torch.randn(5, 3), torch.tensor([0, 1, 0, 1, 1]), num_classes=2)
>>> rec["rank"], rec["alignment_residual"] < 1e-6
(10, True)
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from dynamics.errors import InputError

__all__ = ["measure", "Probe", "bn_mode_for", "ntk_matrix", "on_model_subset"]

log = logging.getLogger(__name__)


def bn_mode_for(model: nn.Module) -> str | None:
    """``"eval"`` if the model has a BatchNorm layer, else ``None``."""
    return "eval" if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()) else None


def ntk_matrix(model: nn.Module, x: torch.Tensor, bn_mode: str | None) -> torch.Tensor:
    """Θ (nk, nk) float64, sample-major, w.r.t. all parameters with requires_grad."""
    try:
        from dynamics.engine.ntk import ntk
    except ImportError:  # the kernel module of the engine is optional here: J Jᵀ is the same matrix
        from dynamics.engine.jacobian import jacobian

        j = jacobian(model, x, bn_mode=bn_mode, dtype=torch.float64)
        return j @ j.T
    k = ntk(model, x, bn_mode=bn_mode, dtype=torch.float64)
    n, _, kk, _ = k.shape
    return k.permute(0, 2, 1, 3).reshape(n * kk, n * kk)


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    import copy

    m = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        return m(x.double()).reshape(len(x), -1)


def on_model_subset(model: nn.Module) -> list[str] | str:
    """S for the on-model check: ``"auto"`` for a plain model; for f̃ = f + g the read-out of f together with ζ
    (f is 1-homogeneous in its read-out and g in ζ, so f̃ is in their union; no single group covers both)."""
    from dynamics.training.framework import AugmentedModel, _last_linear

    if not isinstance(model, AugmentedModel):
        return "auto"
    readout = getattr(model.base, "readout", None) or _last_linear(model.base)
    ids = {id(p) for p in readout.parameters()}
    return [n for n, p in model.named_parameters() if id(p) in ids or n == "zeta"]


def _on_model(model: nn.Module, x: torch.Tensor, bn_mode: str | None) -> tuple[float, bool | None, str]:
    subset = on_model_subset(model)
    try:
        from dynamics.conditions.on_model import check_on_model_structure
    except ImportError:
        check_on_model_structure = None
    if check_on_model_structure is not None:
        rep = check_on_model_structure(model, x, subset=subset, bn_mode=bn_mode)
        res = getattr(rep, "euler_residual", getattr(rep, "residual", float("nan")))
        return float(res), bool(rep.holds), f"dynamics.check_on_model_structure(subset={subset!r})"
    from dynamics.engine.jacobian import JacobianOperator

    names = subset if isinstance(subset, list) else [
        n for n, p in model.named_parameters() if p.requires_grad and n.startswith("readout.")]
    if not names:
        return float("nan"), None, "no read-out found"
    op = JacobianOperator(model, x, params=names, bn_mode=bn_mode, dtype=torch.float64)
    f = op.outputs.reshape(-1)
    res = float((f - op @ op.theta).norm() / f.norm().clamp_min(1e-300))
    return res, res < 1e-8, f"S = {names}, residual ‖f − J_S θ_S‖/‖f‖"


def measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, rtol: float | None = None,
            theta0: torch.Tensor | None = None, on_model: bool = True) -> dict[str, Any]:
    """The probe quantities of ``model`` on (x, y) (see the module docstring); y int64 (n,) labels.

    Returns a JSON-ready dict; ``"_ntk"`` holds Θ (removed by :class:`Probe` before writing).
    """
    t0 = time.perf_counter()
    bn_mode = bn_mode_for(model)
    theta = ntk_matrix(model, x, bn_mode)
    nk = theta.shape[0]
    lam, u = torch.linalg.eigh(theta)
    lam_max = float(lam[-1]) if nk else 0.0
    if rtol is None:
        rtol = float(np.sqrt(nk * np.finfo(np.float64).eps * 10))
    keep = lam > (rtol**2) * lam_max
    rank = int(keep.sum())
    ur = u[:, keep]
    yv = nn.functional.one_hot(y.long(), num_classes).double().reshape(-1).to(theta.device)
    f = _outputs(model, x).reshape(-1).to(theta.device)
    proj = lambda v: ur @ (ur.T @ v)  # noqa: E731
    floor = yv - proj(yv)
    rec: dict[str, Any] = {
        "alignment_residual": float(floor.norm() / yv.norm()),
        "rank": rank,
        "rows": nk,
        "sigma_min": float(lam[keep][0].sqrt()) if rank else 0.0,
        "sigma_max": float(np.sqrt(max(lam_max, 0.0))),
        "rtol": rtol,
        "loss_fit": float(0.5 * proj(f - yv).square().sum()),
        "loss_floor": float(0.5 * floor.square().sum()),
        "square_loss": float(0.5 * (f - yv).square().sum()),
        "bn_mode": bn_mode,
        "n_probe": len(x),
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
        rec = measure(model, self.x, self.y, self.num_classes, theta0=self.theta0)
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
