"""Numerical hygiene for checks: TF32 off (it breaks 1e-5 agreement between exact methods on Ampere+ GPUs).

>>> with exact_matmul():
...     pass
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["exact_matmul"]


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
