"""Full-batch training with the square loss L = ½‖f_X − Y‖², in float64, for the demonstrations.

* :func:`gradient_descent`: plain GD with a fixed step, recording the parameters at chosen steps
  (a :class:`Trajectory`), the discretised gradient flow the statements are about.
* :func:`minimise`: L-BFGS (strong Wolfe line search) until ‖∇L‖ ≤ gtol·‖∇L(θ_0)‖: a numerical critical point.

Both train a float64 copy; the model passed in is never modified.

>>> import torch
>>> from dynamics.models import MLP
>>> _ = torch.manual_seed(0)
>>> x, y = torch.randn(6, 2), torch.randn(6, 1)
>>> res = minimise(MLP(2, 1, depth=1, width=16, activation="tanh"), x, y, gtol=1e-6)
>>> res.converged, res.loss < 1e-8
(True, True)
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch import nn

from dynamics.errors import InputError, NonFiniteError
from theory.geometry import stacked_targets

__all__ = ["Trajectory", "MinimiseResult", "gradient_descent", "minimise", "square_loss"]

log = logging.getLogger(__name__)


def square_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """½‖f_X − Y‖² (a sum over samples and outputs, not a mean); ``y`` already stacked as (n, k) float64."""
    out = model(x).reshape(x.shape[0], -1)
    return 0.5 * (out - y).pow(2).sum()


def _prepare(model: nn.Module, x, y) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    m = copy.deepcopy(model).to(torch.float64)
    xx = torch.as_tensor(x).to(torch.float64)
    with torch.no_grad():
        out = m(xx).reshape(xx.shape[0], -1)
    n, k = out.shape
    yy = stacked_targets(y, n, k).reshape(n, k)
    return m, xx, yy


@dataclass
class Trajectory:
    """Parameters recorded along a training run.

    Attributes:
        model: the trained float64 copy (its state at the last step).
        steps: the recorded step indices (0 = initialisation).
        states: ``state_dict`` copies at those steps; :meth:`model_at` rebuilds a model from one.
        losses: L at every step 0..T.
        lr: the step size.
    """

    model: nn.Module
    steps: list[int]
    states: list[dict]
    losses: list[float]
    lr: float

    def model_at(self, i: int) -> nn.Module:
        """A float64 copy of the model at the ``i``-th recorded step."""
        m = copy.deepcopy(self.model)
        m.load_state_dict(self.states[i])
        return m


@dataclass
class MinimiseResult:
    """Outcome of :func:`minimise`: the model at the final point and how stationary it is."""

    model: nn.Module
    loss: float
    grad_norm: float
    grad_norm_0: float
    iterations: int
    converged: bool
    losses: list[float] = field(default_factory=list)

    @property
    def relative_grad_norm(self) -> float:
        return self.grad_norm / self.grad_norm_0 if self.grad_norm_0 > 0 else 0.0


def _grad_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.zero_grad(set_to_none=True)
    loss = square_loss(model, x, y)
    loss.backward()
    g = torch.sqrt(sum((p.grad.pow(2).sum() for p in model.parameters() if p.grad is not None),
                       torch.zeros((), dtype=torch.float64)))
    return float(loss.detach()), float(g)


def gradient_descent(model: nn.Module, x, y, lr: float, steps: int,
                     record: Optional[Sequence[int]] = None, momentum: float = 0.0) -> Trajectory:
    """``steps`` full-batch GD steps on a float64 copy; ``record``: steps to save (default 0, T).

    ``momentum`` = 0: θ ← θ − lr·∇L; ``momentum`` = μ > 0: heavy ball, b ← μb + ∇L, θ ← θ − lr·b (torch.optim.SGD's
    rule without dampening).

    Raises :class:`~dynamics.errors.NonFiniteError` if the loss diverges (lower ``lr``).
    """
    if not lr > 0 or steps < 0 or not 0 <= momentum < 1:
        raise InputError(f"need lr > 0, steps >= 0 and 0 <= momentum < 1, got lr={lr!r}, steps={steps!r}, "
                         f"momentum={momentum!r}")
    m, xx, yy = _prepare(model, x, y)
    wanted = sorted(set(record if record is not None else (0, steps)))
    rec_steps, states, losses = [], [], []
    params = [p for p in m.parameters() if p.requires_grad]
    buffers = [torch.zeros_like(p) for p in params]
    for t in range(steps + 1):
        if t in wanted:
            rec_steps.append(t)
            states.append({k: v.detach().clone() for k, v in m.state_dict().items()})
        m.zero_grad(set_to_none=True)
        loss = square_loss(m, xx, yy)
        if not torch.isfinite(loss):
            raise NonFiniteError(f"gradient descent diverged at step {t} (lr={lr}); use a smaller lr")
        losses.append(float(loss.detach()))
        if t == steps:
            break
        loss.backward()
        with torch.no_grad():
            for p, b in zip(params, buffers):
                if momentum:
                    b.mul_(momentum).add_(p.grad)
                    p -= lr * b
                else:
                    p -= lr * p.grad
    return Trajectory(model=m, steps=rec_steps, states=states, losses=losses, lr=lr)


def minimise(model: nn.Module, x, y, gtol: float = 1e-6, max_iter: int = 2000, history_size: int = 50,
             chunk: int = 50) -> MinimiseResult:
    """L-BFGS on a float64 copy until ‖∇L‖ ≤ gtol·‖∇L(θ_0)‖ (or L ≤ 1e-28, or ``max_iter`` iterations)."""
    if not gtol > 0 or max_iter < 1:
        raise InputError(f"need gtol > 0 and max_iter >= 1, got gtol={gtol!r}, max_iter={max_iter!r}")
    m, xx, yy = _prepare(model, x, y)
    params = [p for p in m.parameters() if p.requires_grad]
    loss0, g0 = _grad_norm(m, xx, yy)
    losses = [loss0]
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=chunk, history_size=history_size, tolerance_grad=0.0,
                            tolerance_change=0.0, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad(set_to_none=True)
        loss = square_loss(m, xx, yy)
        loss.backward()
        return loss

    done, loss, g = 0, loss0, g0
    while done < max_iter and g > gtol * g0 and loss > 1e-28:
        before = [p.detach().clone() for p in params]
        opt.step(closure)
        done += chunk
        loss, g = _grad_norm(m, xx, yy)
        if not (torch.isfinite(torch.tensor(loss)) and torch.isfinite(torch.tensor(g))):
            with torch.no_grad():  # a degenerate line search: keep the last finite point
                for p, b in zip(params, before):
                    p.copy_(b)
            loss, g = _grad_norm(m, xx, yy)
            break
        losses.append(loss)
        if all(torch.equal(p, b) for p, b in zip(params, before)):
            break  # no progress possible in float64
    converged = g <= gtol * g0 or loss <= 1e-28
    log.debug("minimise: %d iterations, L=%.3e, |grad|/|grad0|=%.3e", done, loss, g / max(g0, 1e-300))
    return MinimiseResult(model=m, loss=loss, grad_norm=g, grad_norm_0=g0, iterations=done,
                          converged=converged, losses=losses)
