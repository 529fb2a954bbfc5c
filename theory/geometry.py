"""The square-loss geometry at one parameter point: f_X, Y, J, the projector P onto Col J, L and ∇L.

Every statement check of :mod:`theory` starts from :func:`loss_geometry`, which evaluates, in float64,

* ``f``: stacked outputs f_X(θ) ∈ R^{nk} (sample-major), ``y``: stacked targets Y ∈ R^{nk};
* ``jac``: J(θ) = ∂f_X/∂θ_S ∈ R^{nk×p} and ``space``: its column space
  (:class:`dynamics.conditions.column_space.ColumnSpace`, the project's one projector P, with the numerical rank
  tolerance it reports);
* ``loss`` L = ½‖f_X − Y‖², ``grad`` ∇L = Jᵀ(f_X − Y), ``dist2_half`` = ½‖(I − P)Y‖² = ½ dist(Y, Col J)².

>>> import torch
>>> from dynamics.models import MLP
>>> _ = torch.manual_seed(0)
>>> g = loss_geometry(MLP(3, 2, depth=1, width=4), torch.randn(5, 3), torch.randn(5, 2))
>>> g.n, g.k, g.p, tuple(g.jac.shape)
(5, 2, 26, (10, 26))
>>> abs(g.loss - 0.5 * float(((g.f - g.y) ** 2).sum())) < 1e-12
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from dynamics.conditions.column_space import ColumnSpace
from dynamics.conditions.guard import guarded
from dynamics.conditions.targets import normalise_targets
from dynamics.engine.jacobian import JacobianOperator
from dynamics.engine.parameters import ParamSpec

__all__ = ["LossGeometry", "loss_geometry", "stacked_targets"]


def stacked_targets(y, n: int, k: int) -> torch.Tensor:
    """Targets as the stacked float64 vector Y ∈ R^{nk} (sample-major), via
    :func:`dynamics.conditions.targets.normalise_targets` (``(n, k)`` floats, or ``(n,)`` labels -> one-hot).

    >>> stacked_targets(torch.tensor([1, 0]), 2, 3).tolist()
    [0.0, 1.0, 0.0, 1.0, 0.0, 0.0]
    """
    return normalise_targets(y, n, k).reshape(-1)


@dataclass
class LossGeometry:
    """f_X, Y, J and P at one θ (float64); see the module docstring for the definitions."""

    f: torch.Tensor
    y: torch.Tensor
    jac: torch.Tensor
    theta: torch.Tensor
    param_names: list[str]
    space: ColumnSpace
    n: int
    k: int

    @property
    def p(self) -> int:
        return int(self.jac.shape[1])

    @property
    def residual_vector(self) -> torch.Tensor:
        """f_X − Y, shape (nk,)."""
        return self.f - self.y

    @property
    def loss(self) -> float:
        """L = ½‖f_X − Y‖²."""
        return 0.5 * float(self.residual_vector.pow(2).sum())

    @property
    def grad(self) -> torch.Tensor:
        """∇L = Jᵀ(f_X − Y), shape (p,)."""
        return self.jac.T @ self.residual_vector

    @property
    def grad_norm(self) -> float:
        return float(torch.linalg.vector_norm(self.grad))

    @property
    def relative_grad_norm(self) -> float:
        """‖∇L‖ / (σ_max(J)·‖Y‖): scale-free, ≤ ‖f_X − Y‖/‖Y‖; 0 at a critical point."""
        scale = self.space.sigma_max * float(torch.linalg.vector_norm(self.y))
        return self.grad_norm / scale if scale > 0 else 0.0

    @property
    def dist2_half(self) -> float:
        """½‖(I − P)Y‖² = ½ dist(Y, Col J)²: the lower bound of L and the loss at critical points."""
        return 0.5 * self.space.residual(self.y) ** 2

    @property
    def alignment_residual(self) -> float:
        """r(θ) = ‖(I − P)Y‖ / ‖Y‖."""
        return float(self.space.relative_residual(self.y))

    @property
    def on_model_residual(self) -> float:
        """‖(I − P)f_X‖ / ‖f_X‖: zero when f_X ∈ Col J, which the on-model structure implies."""
        return float(self.space.relative_residual(self.f))

    @property
    def y_norm2_half(self) -> float:
        """½‖Y‖², the loss of the zero function: the scale relative tolerances refer to."""
        return 0.5 * float(self.y.pow(2).sum())


@guarded
def loss_geometry(model: nn.Module, x, y, params: ParamSpec = None, bn_mode: Optional[str] = None,
                  rank_rtol: Optional[float] = None) -> LossGeometry:
    """Evaluate f_X, Y, J, P at the model's current parameters, in float64 (the model is not modified).

    Args:
        model: any network mapping ``x`` (n, ...) to outputs (n, k).
        x: inputs, samples along dimension 0.
        y: targets ``(n, k)`` floats or ``(n,)`` integer labels (one-hot).
        params, bn_mode: which parameters form J and the BatchNorm semantics (as for :func:`dynamics.jacobian`).
        rank_rtol: relative numerical-rank tolerance for P (``None``: ColumnSpace's default).
    """
    op = JacobianOperator(model, x, params=params, bn_mode=bn_mode, dtype=torch.float64)
    n, k = op.n, op.k
    yy = stacked_targets(y, n, k)
    jac = op.dense()
    space = ColumnSpace.from_jacobian(jac, rtol=rank_rtol)
    return LossGeometry(f=op.outputs.reshape(-1).to(torch.float64), y=yy, jac=jac, theta=op.theta,
                        param_names=op.param_names, space=space, n=n, k=k)
