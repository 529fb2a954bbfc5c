"""Forward-mode differentiation where the network allows it, reverse-over-reverse where it does not.

``method="ntvp"`` and ``JacobianOperator @ v`` use forward mode (``torch.func.jvp``). Some operations have no
forward-mode derivative (a custom ``torch.autograd.Function`` without ``jvp``, a few fused kernels). For those:

* :func:`forward_mode_refusal` says so up front, from a jvp of one sample (``""`` when forward mode works), so
  that ``auto`` never picks ``ntvp`` for such a network and an explicit ``method="ntvp"`` gets a clear error;
* :func:`reverse_jvp` computes J·v with reverse mode only: Jᵀu is linear in u, and the VJP of u -> Jᵀu with
  cotangent v is J·v (the "double-vjp" trick); it needs double-backward, which ordinary operations have.

>>> import torch, torch.nn as nn
>>> from dynamics.engine.stacked import StackedFunction
>>> sf = StackedFunction(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double(), torch.randn(5, 3))
>>> forward_mode_refusal(sf)
''
>>> t = {n: torch.randn_like(v) for n, v in sf.theta.items()}
>>> fb = sf.block_function(slice(0, 5))
>>> bool(torch.allclose(reverse_jvp(fb, sf.theta, t), torch.func.jvp(fb, (sf.theta,), (t,))[1]))
True
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.func import jvp, vjp

from dynamics.engine.stacked import StackedFunction

__all__ = ["forward_mode_refusal", "reverse_jvp", "is_forward_mode_error"]


def is_forward_mode_error(exc: BaseException) -> bool:
    """Whether ``exc`` is PyTorch saying that an operation has no forward-mode derivative."""
    text = str(exc).lower()
    return isinstance(exc, (NotImplementedError, RuntimeError)) and (
        "forward ad" in text or "forward-mode" in text or "jvp" in text or "forward mode" in text)


def forward_mode_refusal(sf: StackedFunction) -> str:
    """"" when a jvp of one sample (the whole batch in ``bn_mode="batch"``) runs; else why it does not."""
    sl = slice(0, 1) if sf.per_sample else slice(0, sf.n)
    fb = sf.block_function(sl)
    tangent = {n: torch.zeros_like(t) for n, t in sf.theta.items()}
    try:
        jvp(fb, (sf.theta,), (tangent,))
    except (NotImplementedError, RuntimeError) as exc:
        if not is_forward_mode_error(exc):
            raise
        return f"an operation of the network has no forward-mode derivative ({str(exc).splitlines()[0][:160]})"
    return ""


def reverse_jvp(fb: Callable, theta: dict, tangent: dict) -> torch.Tensor:
    """J·t for the function ``fb`` of ``theta`` using reverse mode only (flat outputs of fb)."""
    out, vjp_fn = vjp(fb, theta)
    u0 = torch.zeros_like(out)
    _, vjp_of_vjp = vjp(lambda u: vjp_fn(u)[0], u0)
    (Jt,) = vjp_of_vjp(tangent)
    return Jt
