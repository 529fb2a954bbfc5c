"""A guard that the checks never modify the model they check (BatchNorm running statistics included).

:func:`unchanged` records the version counters of the model's parameters (PyTorch increments them on every
in-place write from Python; no copy of the weights is needed) and a copy of its buffers (small: BatchNorm
statistics, whose in-place update by the native batch-norm kernel does not move the counter), and raises
:class:`~dynamics.errors.ModelModifiedError` if anything changed while the check ran.

>>> import torch, torch.nn as nn
>>> bn = nn.BatchNorm1d(3)
>>> with unchanged(bn, "demo"):
...     _ = bn.eval()(torch.randn(4, 3))          # eval mode: statistics untouched
>>> with unchanged(bn, "demo"):
...     _ = bn.train()(torch.randn(4, 3))         # doctest: +IGNORE_EXCEPTION_DETAIL
Traceback (most recent call last):
dynamics.errors.ModelModifiedError: demo changed the model: running_mean ...
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

import torch
from torch import nn

from dynamics.errors import ModelModifiedError

__all__ = ["unchanged", "guarded"]

F = TypeVar("F", bound=Callable)


@contextmanager
def unchanged(model: nn.Module, what: str) -> Iterator[None]:
    """Raise ModelModifiedError after the block if a parameter or buffer of ``model`` was written in place."""
    versions = {name: t._version for name, t in model.named_parameters()}
    buffers = {name: t.detach().clone() for name, t in model.named_buffers()}
    yield
    moved = [name for name, t in model.named_parameters() if versions.get(name) != t._version]
    moved += [name for name, t in model.named_buffers() if name not in buffers or not _same(buffers[name], t)]
    if moved:
        raise ModelModifiedError(f"{what} changed the model: {', '.join(moved[:5])}"
                                 f"{' ...' if len(moved) > 5 else ''} were written during the check; this is a bug "
                                 f"in the toolkit (its numbers are not trustworthy), please report it")


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    b = b.detach().to(a.device)
    if a.is_floating_point():
        return bool(torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num()))
    return bool(torch.equal(a, b))


def guarded(func: F) -> F:
    """Decorate a check whose first argument is the model: it runs inside :func:`unchanged`."""
    @functools.wraps(func)
    def wrapper(model, *args, **kwargs):
        if not isinstance(model, nn.Module):  # let the check report its own bad-input error
            return func(model, *args, **kwargs)
        with unchanged(model, func.__qualname__):
            return func(model, *args, **kwargs)
    return wrapper  # type: ignore[return-value]
