"""The square-loss decomposition L = ½‖P(f_X − Y)‖² + ½‖(I − P)Y‖² and the gradient bound, measured (dense path).

Statements derived from the definitions in Kawaguchi et al. (2022) (THEORY.md, statements 1 and 2): when
f_X ∈ Col J (the on-model structure assumption), (I − P)(f_X − Y) = −(I − P)Y, so

    L(θ) = ½‖f_X − Y‖² = ½‖P(f_X − Y)‖² + ½‖(I − P)Y‖²,
    ½‖(I − P)Y‖² ≤ L(θ) ≤ ½‖(I − P)Y‖² + ‖∇L(θ)‖² / (2σ₊²),   ∇L = Jᵀ(f_X − Y).

:func:`loss_decomposition_terms` measures every term on the actual model, without assuming anything; ``gap``
is L minus the two terms (zero up to rounding exactly when (I − P) f_X = 0) and ``output_residual`` is
‖(I − P) f_X‖ / ‖f_X‖. The training probes record these along a run.

>>> import torch, torch.nn as nn
>>> _ = torch.manual_seed(0)
>>> net = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1))
>>> t = loss_decomposition_terms(net, torch.randn(30, 2), torch.randn(30, 1))
>>> abs(t.gap) < 1e-10 * t.loss and t.misalignment_term <= t.loss <= t.upper_bound
True
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import torch
from torch import nn

from dynamics.conditions.column_space import ColumnSpace, check_positive_tolerance
from dynamics.conditions.guard import guarded
from dynamics.conditions.targets import normalise_targets
from dynamics.engine.jacobian import JacobianOperator
from dynamics.engine.parameters import ParamSpec
from dynamics.engine.precision import exact_matmul

__all__ = ["LossDecomposition", "loss_decomposition_terms", "square_loss_gradient", "autograd_square_loss_gradient"]


@dataclass
class LossDecomposition:
    """The terms of the square-loss decomposition at one θ (all float64).

    Attributes:
        loss: L = ½‖f_X − Y‖².
        fit_term: ½‖P(f_X − Y)‖², the part gradient descent can remove within Col J.
        misalignment_term: ½‖(I − P)Y‖² = ½ dist(Y, Col J)², the floor of L at any critical point.
        gap: loss − fit_term − misalignment_term (0 up to rounding under the assumption).
        output_residual: ‖(I − P) f_X‖ / ‖f_X‖ (0 under the assumption; absolute when f_X = 0).
        alignment_residual: ‖(I − P)Y‖ / ‖Y‖.
        gradient_norm: ‖∇L‖ = ‖Jᵀ(f_X − Y)‖ over the selected parameters.
        sigma_min: σ₊, smallest singular value counted in the rank (None if rank 0).
        upper_bound: misalignment_term + gradient_norm² / (2 σ₊²) (inf if rank 0).
        rank, rank_tolerance: numerical rank of J and the σ threshold that decided it.
        p, nk: columns and rows of J.
        gradient_mismatch: ‖Jᵀ(f_X − Y) − ∇L_autograd‖ / (‖J‖_F ‖f_X − Y‖): the gradient used here against an
            independent reverse-mode gradient of L on the same function (rounding: ≲ nk·eps ≈ 1e-13).
        accuracy: the column space's stated floating-point accuracy (relative, see ColumnSpace.accuracy).
    """

    loss: float
    fit_term: float
    misalignment_term: float
    gap: float
    output_residual: float
    alignment_residual: float
    gradient_norm: float
    sigma_min: Optional[float]
    upper_bound: float
    rank: int
    rank_tolerance: float
    p: int = 0
    nk: int = 0
    gradient_mismatch: float = 0.0
    accuracy: float = 0.0

    @property
    def trivial(self) -> bool:
        """rank J = n·k: P = I, the misalignment term is 0 and the decomposition reduces to L = ½‖f − Y‖²."""
        return self.rank == self.nk

    def to_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}

    def __str__(self) -> str:
        return "\n".join([
            "Square-loss decomposition L = ½‖P(f−Y)‖² + ½‖(I−P)Y‖²",
            f"  loss                {self.loss:.6g}",
            f"  fit term            {self.fit_term:.6g}   ½‖P(f_X − Y)‖²",
            f"  misalignment term   {self.misalignment_term:.6g}   ½‖(I − P)Y‖² (lower bound on L)",
            f"  gap                 {self.gap:.3g}   (L minus both terms; ‖(I−P)f_X‖/‖f_X‖ = "
            f"{self.output_residual:.3g})",
            f"  upper bound         {self.upper_bound:.6g}   ½‖(I−P)Y‖² + ‖∇L‖²/(2σ₊²), ‖∇L‖ = "
            f"{self.gradient_norm:.3g}, σ₊ = {self.sigma_min if self.sigma_min is None else f'{self.sigma_min:.3g}'}",
            f"  rank                {self.rank} (σ > {self.rank_tolerance:.3g})",
        ])


@guarded
def loss_decomposition_terms(model: nn.Module, x, y, params: ParamSpec = None, bn_mode: Optional[str] = None,
                             dtype: torch.dtype = torch.float64, rank_rtol: Optional[float] = None
                             ) -> LossDecomposition:
    """Measure L, ½‖P(f_X − Y)‖², ½‖(I − P)Y‖² and the gradient bound on (x, y) with the dense J.

    Args:
        model, x, params, bn_mode, dtype: as for :func:`dynamics.jacobian`.
        y: targets, normalised by :func:`dynamics.conditions.targets.normalise_targets` ((n, k) floats,
            (n,) when k = 1, integer labels → one-hot).
        rank_rtol: relative rank threshold for P (default: :mod:`dynamics.conditions.column_space`).
    """
    rank_rtol = check_positive_tolerance(rank_rtol, "rank_rtol")
    op = JacobianOperator(model, x, params=params, bn_mode=bn_mode, dtype=dtype)
    Y = normalise_targets(y, op.n, op.k).reshape(-1)
    J = op.dense().to(torch.float64)
    cs = ColumnSpace.from_jacobian(J, rtol=rank_rtol)
    f = op.outputs.reshape(-1).to(torch.float64)
    Y = Y.to(f.device)
    diff = f - Y
    loss = 0.5 * float(diff @ diff)
    fit = 0.5 * float(cs.project(diff).norm() ** 2)
    mis = 0.5 * cs.residual(Y) ** 2
    f_norm = float(f.norm())
    out_res = cs.residual(f) / f_norm if f_norm > 0 else cs.residual(f)
    with exact_matmul():
        g = square_loss_gradient(J, f, Y)
    reference = autograd_square_loss_gradient(op, Y)
    scale = float(J.norm()) * float(diff.norm())
    mismatch = float((g - reference).norm()) / scale if scale > 0 else float((g - reference).norm())
    grad = float(g.norm())
    upper = mis + grad ** 2 / (2 * cs.sigma_min ** 2) if cs.sigma_min else math.inf
    return LossDecomposition(loss=loss, fit_term=fit, misalignment_term=mis, gap=loss - fit - mis,
                             output_residual=out_res, alignment_residual=cs.relative_residual(Y),
                             gradient_norm=grad, sigma_min=cs.sigma_min, upper_bound=upper, rank=cs.rank,
                             rank_tolerance=cs.tolerance, p=op.p, nk=op.n * op.k, gradient_mismatch=mismatch,
                             accuracy=cs.accuracy)


def square_loss_gradient(J: torch.Tensor, f: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """∇L = Jᵀ(f_X − Y) for L = ½‖f_X − Y‖² (J (nk, p), f and Y (nk,), sample-major), float64.

    >>> J = torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=torch.float64)
    >>> square_loss_gradient(J, torch.tensor([1.0, 1.0], dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    tensor([1., 3.], dtype=torch.float64)
    """
    return J.T @ (f - Y)


def autograd_square_loss_gradient(op: JacobianOperator, Y: torch.Tensor) -> torch.Tensor:
    """∇L of L(θ) = ½‖f_X(θ) − Y‖² by one reverse-mode pass through the same function as J (same parameters,
    BatchNorm semantics and dtype), flattened in J's column order; float64. An independent check of
    :func:`square_loss_gradient`."""
    sf = op.stacked
    theta = {name: t.detach().clone().requires_grad_(True) for name, t in sf.theta.items()}
    with torch.enable_grad():
        out = sf.evaluate(theta).to(torch.float64)
        loss = 0.5 * (out - Y.to(out)).pow(2).sum()
        grads = torch.autograd.grad(loss, list(theta.values()), allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(t)).reshape(-1).to(torch.float64)
                      for g, t in zip(grads, theta.values())])
