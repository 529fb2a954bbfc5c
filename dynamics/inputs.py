"""The one place where user tensors are validated and coerced: data batches x, vectors v/u, and the compute dtype.

Every public entry point of the engine (and the checks built on it) passes its array arguments through these
functions, so that the same mistake gets the same message everywhere:

* :func:`as_tensor`: a ``torch.Tensor`` or numpy array (not a list, not an object array);
* :func:`as_batch`: a batch of inputs with samples along dimension 0, finite, real; floating inputs cast to the
  compute dtype, integer inputs (token ids, indices) kept as integers;
* :func:`as_vectors`: a vector ``(m,)`` or a stack of vectors ``(m, q)`` for an operator with ``m`` rows;
* :func:`compute_dtype`: the floating dtype computations run in (float32 or float64; half precisions refused);
* :func:`pair_dtype_notice`: x1 and x2 with different dtypes are both cast to the compute dtype, and a warning
  says which one.

>>> import torch
>>> as_batch(torch.ones(2, 3, dtype=torch.float32), torch.float64, torch.device("cpu")).dtype
torch.float64
>>> as_batch([[1.0]], torch.float64, torch.device("cpu"))
Traceback (most recent call last):
...
dynamics.errors.InputError: x must be a torch.Tensor (or numpy array) with samples along dimension 0, got list
"""

from __future__ import annotations

import warnings
from typing import Optional

import numpy as np
import torch
from torch import nn

from dynamics.errors import InputError

__all__ = ["as_tensor", "as_batch", "as_vectors", "compute_dtype", "pair_dtype_notice", "SUPPORTED_DTYPES"]

SUPPORTED_DTYPES = (torch.float32, torch.float64)


def as_tensor(obj, what: str, hint: str = "") -> torch.Tensor:
    """``obj`` as a tensor: tensors pass through, numpy arrays are wrapped (no copy when contiguous)."""
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise InputError(f"{what} is a numpy object array; pass a numeric array{hint}")
        obj = torch.from_numpy(np.ascontiguousarray(obj))
    if not isinstance(obj, torch.Tensor):
        raise InputError(f"{what} must be a torch.Tensor (or numpy array){hint}, got {type(obj).__name__}")
    return obj


def as_batch(x, dtype: torch.dtype, device: torch.device, what: str = "x") -> torch.Tensor:
    """Validate a batch of inputs (first dimension = samples) and move it to ``dtype``/``device``.

    Floating inputs are cast to the compute dtype; integer inputs (token ids, indices) are kept as they are.

    Raises:
        InputError: not a tensor/array, a scalar, empty, complex or bool, non-finite values.
    """
    x = as_tensor(x, what, " with samples along dimension 0")
    if x.dim() == 0:
        raise InputError(f"{what} is a scalar; pass a batch with samples along dimension 0, e.g. {what}[None]")
    if x.shape[0] == 0:
        raise InputError(f"{what} is empty (shape {tuple(x.shape)}): pass at least one sample")
    if x.is_complex() or x.dtype == torch.bool:
        raise InputError(f"{what} has dtype {x.dtype}; pass real floating inputs (or integer indices)")
    if x.is_floating_point():
        if not torch.isfinite(x).all():
            bad = int((~torch.isfinite(x)).sum())
            raise InputError(f"{what} contains {bad} non-finite values (NaN or inf); clean the data first")
        return x.to(device=device, dtype=dtype)
    return x.to(device=device)


def as_vectors(v, rows: int, what: str, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, bool]:
    """``v`` of shape ``(rows,)`` or ``(rows, q)`` as a ``(rows, q)`` tensor; also whether it was one vector."""
    v = as_tensor(v, what)
    if v.is_complex() or v.dtype == torch.bool:
        raise InputError(f"{what} has dtype {v.dtype}; pass real numbers")
    vector = v.dim() == 1
    if vector:
        v = v[:, None]
    if v.dim() != 2 or v.shape[0] != rows:
        raise InputError(f"{what} must have shape ({rows},) or ({rows}, m), got {tuple(v.shape)}")
    return v.to(dtype=dtype, device=device), vector


def compute_dtype(model: nn.Module, dtype: Optional[torch.dtype]) -> torch.dtype:
    """The floating dtype computations run in: ``dtype`` if given, else the model's parameter dtype.

    Raises:
        InputError: ``dtype`` is not a floating dtype, or is a half precision (float16, bfloat16): the kernels
            and the checks are defined in float32 and float64 only (float64 for anything that decides true/false).
    """
    if dtype is not None:
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise InputError(f"dtype must be a floating torch dtype such as torch.float64, got {dtype!r}")
        resolved, source = dtype, f"dtype={dtype}"
    else:
        resolved = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.get_default_dtype())
        source = f"the model's parameters are {resolved} (no dtype given)"
    if resolved not in SUPPORTED_DTYPES:
        raise InputError(f"{source}: the engine computes in torch.float32 or torch.float64 only (half precision "
                         f"loses the digits a Jacobian or kernel needs); pass dtype=torch.float32, or "
                         f"dtype=torch.float64 for checks. The model itself is not converted")
    return resolved


def pair_dtype_notice(x1, x2, used: torch.dtype) -> None:
    """Warn when x1 and x2 are floating tensors of different dtypes; both are cast to ``used``."""
    d1, d2 = getattr(x1, "dtype", None), getattr(x2, "dtype", None)
    if d1 is None or d2 is None or d1 == d2:
        return
    floating = [d for d in (d1, d2) if isinstance(d, torch.dtype) and d.is_floating_point]
    if len(floating) == 2:
        warnings.warn(f"x1 has dtype {d1} and x2 has dtype {d2}; both are cast to the compute dtype {used}",
                      stacklevel=3)
