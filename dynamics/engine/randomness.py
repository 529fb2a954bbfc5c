"""Refuse networks that draw random numbers in the mode they are in (Dropout, stochastic depth, noise layers).

A random network has no Jacobian: two identical calls would return two different kernels. The check is generic,
not a list of layer classes. On the private copy of the model (never the user's), with the global random state
forked so that the user's generators are not advanced:

1. one forward pass with hooks on every module records whether the default random generator (CPU and, for a
   model on a GPU, that device's) advanced during each module's call; the innermost module that advanced it is
   named (a random operation written in a parent's ``forward`` names the parent);
2. a second forward pass on the same inputs under a different seed must give the same outputs (to 1e-4 of their
   largest magnitude, so that nondeterministic GPU reductions are not mistaken for randomness), which also
   catches random numbers drawn from a private ``torch.Generator``; the first module whose output changed
   while its inputs did not is named.

>>> import torch, torch.nn as nn
>>> net, x = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 2)), torch.randn(2, 3)
>>> check_deterministic(net.train(), lambda: net(x))
Traceback (most recent call last):
...
dynamics.errors.StochasticModelError: Dropout '1' draws random numbers in training mode...random function ...
>>> out = check_deterministic(net.eval(), lambda: net(x))  # deterministic: no error
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Optional

import torch
from torch import nn

from dynamics.errors import StochasticModelError

__all__ = ["check_deterministic"]


def _devices(module: nn.Module) -> list[int]:
    return sorted({t.device.index or 0 for t in list(module.parameters()) + list(module.buffers())
                   if t.device.type == "cuda"})


def _rng_state(devices: list[int]) -> list[torch.Tensor]:
    states = [torch.get_rng_state()]
    states += [torch.cuda.get_rng_state(d) for d in devices]
    return states


def _seed(seed: int, devices: list[int]) -> None:
    """Seed the default generators directly (``torch.manual_seed`` also imports the compiler stack on first use)."""
    torch.default_generator.manual_seed(seed)
    for d in devices:
        torch.cuda.default_generators[d].manual_seed(seed)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to the rounding of a nondeterministic reduction (some GPU kernels sum in varying order): a random
    layer changes outputs by O(1) relative amounts, such kernels by ~1e-7; the threshold is 1e-4 of the largest."""
    if not a.is_floating_point():
        return torch.equal(a, b)
    scale = float(a.abs().max()) if a.numel() else 0.0
    return bool(((a - b).abs() <= 1e-4 * scale).all())


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def _refusal(name: str, module: nn.Module, how: str) -> StochasticModelError:
    mode = "training" if module.training else "eval"
    return StochasticModelError(
        f"{type(module).__name__} '{name or '<root>'}' {how} in {mode} mode: the network is a random function "
        f"and its Jacobian is not defined. Call model.eval() first (then pass bn_mode='batch' or 'frozen' if you "
        f"want batch statistics for BatchNorm), or set the layer's drop/noise probability to 0")


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


@contextlib.contextmanager
def _hooks(module: nn.Module, pre: Callable, post: Callable):
    handles = []
    for name, m in module.named_modules():
        handles.append(m.register_forward_pre_hook(lambda mod, inp, name=name: pre(name, mod, inp)))
        handles.append(m.register_forward_hook(lambda mod, inp, out, name=name: post(name, mod, inp, out)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def check_deterministic(module: nn.Module, forward: Callable[[], Any],
                        again: Optional[Callable[[], torch.Tensor]] = None) -> Any:
    """Raise :class:`~dynamics.errors.StochasticModelError` if ``forward()`` (a pass of ``module``) is random.

    Returns the output of the first pass. ``again``, if given, is the second pass on the first rows of the same
    inputs (a per-sample function needs only a few samples to show randomness); its output is compared with
    those rows of the first. ``module`` must be a private copy: hooks are added and removed.
    """
    devices = _devices(module)
    stack: list[list[torch.Tensor]] = []
    culprit: list[tuple[str, nn.Module]] = []

    def pre(name, mod, inp):
        stack.append(_rng_state(devices))

    def post(name, mod, inp, out):
        before = stack.pop()
        if not culprit and not _same(before, _rng_state(devices)):
            culprit.append((name, mod))

    with torch.random.fork_rng(devices=devices):
        _seed(0x5EED, devices)
        with _hooks(module, pre, post), torch.no_grad():
            first = forward()
        if culprit:
            raise _refusal(*culprit[0], "draws random numbers")
        calls: list[tuple[str, nn.Module, list, list]] = []

        def record(name, mod, inp, out):
            calls.append((name, mod, [t.clone() for t in _tensors(inp)], [t.clone() for t in _tensors(out)]))

        _seed(0xD1CE, devices)
        with torch.no_grad():
            if again is not None:  # a few rows first; a full second pass settles any doubt
                try:
                    second = again()
                    if _close(first[:second.shape[0]], second):
                        return first
                except Exception:  # the module refuses part of the batch: compare full passes instead
                    pass
            if all(_close(a, b) for a, b in zip(_tensors(first), _tensors(forward()))):
                return first
        # random numbers from a private generator: find the module whose output changed with its inputs fixed
        runs = []
        for seed in (1, 2):
            calls = []
            _seed(seed, devices)
            with _hooks(module, lambda *a: None, record), torch.no_grad():
                forward()
            runs.append(calls)
        for (name, mod, i1, o1), (_, _, i2, o2) in zip(*runs):
            if all(torch.equal(a, b) for a, b in zip(i1, i2)) and not all(torch.equal(a, b) for a, b in zip(o1, o2)):
                raise _refusal(name, mod, "gives different outputs on the same inputs")
        raise _refusal("", module, "gives different outputs on the same inputs")
