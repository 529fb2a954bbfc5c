"""Numerical hygiene for checks: TF32 off (it breaks 1e-5 agreement between exact methods on Ampere+ GPUs).

>>> with exact_matmul():
...     pass
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["exact_matmul", "resolve_dtype"]


@contextlib.contextmanager
def exact_matmul():
    """Disable TF32 in CUDA matmul and cuDNN inside the block; restore the previous settings after."""
    old_matmul = torch.backends.cuda.matmul.allow_tf32
    old_cudnn = torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old_matmul
        torch.backends.cudnn.allow_tf32 = old_cudnn


def resolve_dtype(model: torch.nn.Module, dtype: torch.dtype | None) -> torch.dtype:
    """The floating dtype computations run in: ``dtype`` if given, else the model's parameter dtype."""
    from dynamics.errors import InputError

    if dtype is not None:
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise InputError(f"dtype must be a floating torch dtype such as torch.float64, got {dtype!r}")
        return dtype
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.get_default_dtype()
