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
from theory.decomposition import bound_quantities, decomposition_quantities, gradient_bound_holds
from theory.descent import Trajectory
from dynamics.conditions.decomposition import loss_decomposition_terms
from theory.report import StatementReport

__all__ = ["kernel_distance", "empirical_ntk", "TrajectoryEvaluation", "evaluate_trajectory", "check_beyond_ntk"]

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
    """Θ = J Jᵀ on ``x`` as an (nk, nk) float64 matrix, and the routine used.

    Uses :func:`dynamics.ntk` when the toolkit provides it, otherwise J Jᵀ from :func:`dynamics.jacobian`
    (the same number; the source is recorded in reports).
    """
    try:
        from dynamics.engine.ntk import ntk  # noqa: PLC0415 (lands with the NTK engine)
    except ImportError:
        from dynamics.engine.jacobian import jacobian

        J = jacobian(model, x, dtype=torch.float64)
        return J @ J.T, "J Jᵀ (dynamics.jacobian)"
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
                         ("bound_holds", gradient_bound_holds(b["L"], b["lower"], b["upper"], scale, rtol)),
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
    q = {"kernel_distance_final": ev.kernel_distance[-1], "kernel_distance_max": max(ev.kernel_distance),
         "r_0": ev.r[0], "r_T": ev.r[-1], "L_0": ev.loss[0], "L_T": ev.loss[-1],
         "max_rel_gap_stmt1": max_gap, "stmt2_all_steps": all_bounds, "points": len(ev.steps)}
    holds = max_gap <= rtol and all_bounds and q["kernel_distance_max"] >= min_distance
    return StatementReport("7", "beyond NTK", setting or f"GD lr={trajectory.lr:g}, {ev.steps[-1]} steps", q,
                           {"rtol": rtol, "min_kernel_distance": min_distance}, holds,
                           notes=f"kernel Θ = J Jᵀ via {ev.kernel_source}; statements 1–2 checked at every "
                                 f"recorded step", series=ev.to_dict())
