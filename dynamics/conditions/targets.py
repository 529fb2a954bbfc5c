"""Validating and normalising targets y into the (n, k) matrix Y whose row-major flattening is vec(Y).

Accepted forms (n samples, k model outputs per sample):

* floating ``(n, k)``: used as is (integer ``(n, k)``, e.g. one-hot stored as int, is cast to float);
* floating ``(n, d1, d2, ...)`` with ``d1·d2·... == k``: flattened row-major, like the model output;
* floating ``(n,)`` when ``k == 1``: a column;
* integer ``(n,)`` when ``k > 1``: class labels in ``0..k-1``, turned into one-hot rows (the classification
  targets of THEORY.md); integer ``(n,)`` when ``k == 1`` is read as numbers, not labels.

Anything else raises :class:`TargetError` (an :class:`~dynamics.errors.InputError`) saying what to pass.

>>> import torch
>>> normalise_targets(torch.tensor([2, 0]), n=2, k=3)
tensor([[0., 0., 1.],
        [1., 0., 0.]], dtype=torch.float64)
>>> normalise_targets(torch.tensor([0.5, 1.5]), n=2, k=1).shape
torch.Size([2, 1])
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dynamics.errors import InputError

__all__ = ["TargetError", "normalise_targets"]


class TargetError(InputError):
    """Targets y with the wrong type, shape, values, or inconsistent with x or with the model output."""


def normalise_targets(y, n: int, k: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Check ``y`` against ``n`` samples and ``k`` outputs per sample; return Y as an ``(n, k)`` ``dtype`` tensor.

    Raises:
        TargetError: y is not an array; has the wrong number of rows (n mismatch with x) or of outputs
            (k mismatch with the model); non-finite values; labels out of range; bool or complex dtype.
    """
    if isinstance(y, np.ndarray):
        if y.dtype == object:
            raise TargetError("y is a numpy object array; pass a numeric array of shape (n, k)")
        y = torch.from_numpy(np.ascontiguousarray(y))
    if not isinstance(y, torch.Tensor):
        raise TargetError(f"y must be a torch.Tensor or numpy array of shape (n, k) = ({n}, {k}), "
                          f"got {type(y).__name__}")
    if y.dtype == torch.bool or y.is_complex():
        raise TargetError(f"y has dtype {y.dtype}; pass real targets (y.float() for a boolean one-hot)")
    if y.dim() == 0:
        raise TargetError(f"y is a scalar; pass targets of shape (n, k) = ({n}, {k})")
    if y.shape[0] != n:
        raise TargetError(f"y has {y.shape[0]} rows but x has {n} samples; pass one target per sample "
                          f"(y of shape ({n}, {k}))")
    y = y.detach().cpu()
    if y.dim() == 1:
        if y.is_floating_point() or k == 1:
            if k != 1:
                raise TargetError(
                    f"y has shape ({n},) with floating values but the model has k={k} outputs per sample; pass "
                    f"(n, k) = ({n}, {k}) targets, or integer class labels in 0..{k - 1} to get one-hot targets")
            Y = y.to(dtype).reshape(n, 1)
        else:
            lo, hi = int(y.min()), int(y.max())
            if lo < 0 or hi >= k:
                raise TargetError(f"integer class labels must lie in 0..{k - 1} (k={k} model outputs); "
                                  f"got labels in {lo}..{hi}")
            Y = torch.zeros(n, k, dtype=dtype)
            Y[torch.arange(n), y.long()] = 1
            return Y
    else:
        width = math.prod(y.shape[1:])
        if width != k:
            raise TargetError(f"y has shape {tuple(y.shape)}, i.e. {width} targets per sample, but the model has "
                              f"k={k} outputs per sample; pass y of shape ({n}, {k})")
        Y = y.reshape(n, k).to(dtype)
    if not torch.isfinite(Y).all():
        bad = int((~torch.isfinite(Y)).sum())
        raise TargetError(f"y contains {bad} non-finite values (NaN or inf); clean the targets first")
    return Y
