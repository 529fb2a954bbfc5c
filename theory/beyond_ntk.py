"""Statement 7 of THEORY.md: statements 1 and 2 hold along real training while the kernel moves.

Derived from the definitions in Kawaguchi et al. (2022): nothing in statements 1–4 assumes that J(θ_t) stays
at J(θ_0) (the NTK regime). Along a recorded run (:class:`theory.descent.Trajectory`) this module evaluates at
every recorded θ_t the decomposition gap (1), the bound (2), the alignment residual r(θ_t), and the kernel
distance of the empirical NTK Θ(θ) = J Jᵀ on a probe set,

    d(θ_0, θ_t) = 1 − ⟨Θ(θ_0), Θ(θ_t)⟩_F / (‖Θ(θ_0)‖_F ‖Θ(θ_t)‖_F)          (0: same kernel up to scale).

The statement holds "beyond the NTK regime" when 1 and 2 hold at every θ_t while d is clearly non-zero.

>>> import torch
>>> from dynamics.models import MLP
>>> from theory.descent import gradient_descent
>>> _ = torch.manual_seed(0)
>>> x, y = torch.randn(10, 2), torch.randn(10, 1)
>>> traj = gradient_descent(MLP(2, 1, depth=1, width=3, activation="tanh"), x, y, lr=0.05, steps=200,
...                         record=[0, 100, 200])
>>> ev = evaluate_trajectory(traj, x, y)
>>> ev.steps, ev.kernel_distance[0] < 1e-12, all(ev.bound_holds)
([0, 100, 200], True, True)
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch
from torch import nn
from tqdm.auto import tqdm

from dynamics.errors import InputError
from theory.decomposition import GRADIENT_RTOL, bound_quantities, decomposition_quantities, gradient_bound_holds
from dynamics.conditions.decomposition import loss_decomposition_terms
from dynamics.engine.ntk import ntk
from theory.descent import Trajectory
from theory.geometry import loss_geometry
from theory.report import StatementReport

__all__ = ["kernel_distance", "empirical_ntk", "TrajectoryEvaluation", "evaluate_trajectory", "check_beyond_ntk",
           "check_limit"]

log = logging.getLogger(__name__)


def kernel_distance(k0: torch.Tensor, kt: torch.Tensor) -> float:
    """1 − ⟨K0, Kt⟩_F / (‖K0‖_F ‖Kt‖_F) for two kernels of the same shape (0 when proportional).

    >>> k = torch.eye(3, dtype=torch.float64)
    >>> kernel_distance(k, 2 * k), round(kernel_distance(k, torch.ones(3, 3, dtype=torch.float64)), 4)
    (0.0, 0.4226)
    """
    if k0.shape != kt.shape:
        raise InputError(f"kernels must have the same shape, got {tuple(k0.shape)} and {tuple(kt.shape)}")
    a, b = k0.reshape(-1).to(torch.float64), kt.reshape(-1).to(torch.float64)
    den = float(torch.linalg.vector_norm(a) * torch.linalg.vector_norm(b))
    if den == 0:
        raise InputError("a kernel is identically zero (J = 0 on the probe set); the distance is undefined")
    return max(0.0, 1.0 - float(a @ b) / den)


def empirical_ntk(model: nn.Module, x) -> tuple[torch.Tensor, str]:
    """Θ = J Jᵀ on ``x`` as an (nk, nk) float64 matrix (sample-major), from :func:`dynamics.ntk`, and its source."""
    K = ntk(model, x, dtype=torch.float64)  # (n, n, k, k)
    n, _, k, _ = K.shape
    return K.permute(0, 2, 1, 3).reshape(n * k, n * k), "dynamics.ntk"


@dataclass
class TrajectoryEvaluation:
    """Per recorded step: loss, the terms of statements 1–2, r, the kernel distance to step 0."""

    steps: list[int]
    loss: list[float]
    proj_term: list[float]
    dist_term: list[float]
    rel_gap: list[float]
    upper: list[float]
    bound_holds: list[bool]
    r: list[float]
    rank: list[int]
    kernel_distance: list[float]
    kernel_source: str
    losses_all: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate_trajectory(trajectory: Trajectory, x, y, probe=None, rtol: float = 1e-8,
                        rank_rtol: Optional[float] = None) -> TrajectoryEvaluation:
    """Evaluate statements 1–2, r and the kernel distance at every recorded step of ``trajectory``.

    Args:
        trajectory: from :func:`theory.descent.gradient_descent`.
        x, y: the training data of the run (r, L and the statements are on it).
        probe: inputs for the kernel (default ``x``).
        rtol: tolerance of the bound checks (relative to max(L, sum of the two terms)).
    """
    probe = x if probe is None else probe
    out = {k: [] for k in ("loss", "proj_term", "dist_term", "rel_gap", "upper", "bound_holds", "r", "rank",
                           "kernel_distance")}
    k0, source = None, ""
    for i in tqdm(range(len(trajectory.steps)), desc="trajectory", disable=None, leave=False):
        model = trajectory.model_at(i)
        t = loss_decomposition_terms(model, x, y, rank_rtol=rank_rtol)
        d, b = decomposition_quantities(t), bound_quantities(t)
        scale = max(t.loss, t.fit_term + t.misalignment_term, 1e-300)
        kt, source = empirical_ntk(model, probe)
        if k0 is None:
            k0 = kt
        for key, val in (("loss", t.loss), ("proj_term", d["proj_term"]), ("dist_term", d["dist_term"]),
                         ("rel_gap", d["rel_gap"]), ("upper", b["upper"]),
                         ("bound_holds", gradient_bound_holds(b["L"], b["lower"], b["upper"], scale, rtol)
                                         and b["grad_mismatch"] <= GRADIENT_RTOL),
                         ("r", t.alignment_residual), ("rank", t.rank),
                         ("kernel_distance", kernel_distance(k0, kt))):
            out[key].append(val)
    return TrajectoryEvaluation(steps=list(trajectory.steps), kernel_source=source,
                                losses_all=list(trajectory.losses), **out)


def check_beyond_ntk(trajectory: Trajectory, x, y, probe=None, rtol: float = 1e-8, min_distance: float = 1e-2,
                     rank_rtol: Optional[float] = None, setting: str = "",
                     evaluation: Optional[TrajectoryEvaluation] = None) -> StatementReport:
    """Statement 7: 1 and 2 hold at every recorded θ_t while d(Θ(θ_0), Θ(θ_t)) exceeds ``min_distance``.

    ``evaluation`` reuses an existing :func:`evaluate_trajectory` result (the same run evaluated once).
    """
    ev = evaluation if evaluation is not None else evaluate_trajectory(trajectory, x, y, probe, rtol, rank_rtol)
    max_gap = max(ev.rel_gap)
    all_bounds = all(ev.bound_holds)
    with torch.no_grad():
        nk = int(trajectory.model(torch.as_tensor(x).to(torch.float64)).numel())
    p = sum(t.numel() for t in trajectory.model.parameters() if t.requires_grad)
    q = {"p": p, "nk": nk, "rank": max(ev.rank),
         "kernel_distance_final": ev.kernel_distance[-1], "kernel_distance_max": max(ev.kernel_distance),
         "r_0": ev.r[0], "r_T": ev.r[-1], "L_0": ev.loss[0], "L_T": ev.loss[-1],
         "max_rel_gap_stmt1": max_gap, "stmt2_all_steps": all_bounds, "points": len(ev.steps)}
    holds = max_gap <= rtol and all_bounds and q["kernel_distance_max"] >= min_distance
    return StatementReport("7", "beyond NTK", setting or f"GD lr={trajectory.lr:g}, {ev.steps[-1]} steps", q,
                           {"rtol": rtol, "min_kernel_distance": min_distance}, holds,
                           notes=f"kernel Θ = J Jᵀ via {ev.kernel_source}; statements 1–2 checked at every "
                                 f"recorded step", series=ev.to_dict(),
                           trivial=min(ev.rank) == nk)


def check_limit(initial: nn.Module, limit: nn.Module, x, y, rtol: float = 1e-6, grad_tol: float = 1e-6,
                min_distance: float = 0.1, claim: str = "limit", setting: str = "",
                expected: bool = True) -> StatementReport:
    """Statement 7 at the end of a run: the kernel moved, and the limit's own r decides the final loss.

    With Θ = J Jᵀ on the training inputs, d = kernel distance between the initial and the final point, and
    scale = ½‖Y‖²:

    * ``claim="limit"``: d ≥ ``min_distance`` (outside the NTK regime), the final point is critical
      (‖∇L‖/(σ_max‖Y‖) ≤ grad_tol), L_T = ½dist(Y, Col J(θ_T))² within rtol·scale, and r_T ≤ 1e-6 ⇒ L_T ≤
      rtol·scale (aligned limit: zero loss; misaligned: the loss is the limit's distance, not zero);
    * ``claim="ntk_prediction"`` (the control): L_T = ½dist(Y, Col J(θ_0))², the prediction of a frozen
      kernel; it must fail when the kernel moved.

    The row is ``trivial`` when rank J(θ_T) = nk.
    """
    if claim not in ("limit", "ntk_prediction"):
        raise InputError(f"claim must be 'limit' or 'ntk_prediction', got {claim!r}")
    g0, gt = loss_geometry(initial, x, y), loss_geometry(limit, x, y)
    k0, _ = empirical_ntk(initial, x)
    kt, _ = empirical_ntk(limit, x)
    scale = max(gt.y_norm2_half, 1e-300)
    d = kernel_distance(k0, kt)
    q = {"p": gt.p, "nk": gt.n * gt.k, "rank": gt.space.rank, "kernel_distance": d, "L_T": gt.loss,
         "half_dist2_T": gt.dist2_half, "r_T": gt.alignment_residual, "half_dist2_0": g0.dist2_half,
         "r_0": g0.alignment_residual, "rel_grad_T": gt.relative_grad_norm}
    if claim == "limit":
        holds = (d >= min_distance and gt.relative_grad_norm <= grad_tol
                 and abs(gt.loss - gt.dist2_half) <= rtol * scale
                 and (gt.alignment_residual > 1e-6 or gt.loss <= rtol * scale))
        name, notes = "beyond NTK (limit)", "the limit's r decides the loss: L_T = ½dist(Y, Col J(θ_T))²"
    else:
        holds = abs(gt.loss - g0.dist2_half) <= rtol * scale
        name = "beyond NTK (frozen-kernel prediction)"
        notes = "control: ½dist(Y, Col J(θ_0))², the frozen kernel's prediction, misses L_T when the kernel moves"
    return StatementReport("7", name, setting, q, {"rtol": rtol, "grad_tol": grad_tol,
                                                   "min_kernel_distance": min_distance}, holds, expected,
                           notes=notes, trivial=gt.space.full_row_rank)
