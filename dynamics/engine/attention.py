"""Attention kernels that every engine method can differentiate, switched on only inside the engine's calls.

PyTorch runs ``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer`` through a fused "fast path" when no
gradient is being recorded, and ``F.scaled_dot_product_attention`` through fused flash/memory-efficient
kernels. Those have no forward-mode derivative (``jvp``, used by ``method="ntvp"`` and ``JacobianOperator @ v``)
and no batching rule for every transform. Inside :func:`differentiable_attention` the fast path is off and
scaled dot-product attention uses its reference ("math") implementation, which is built from differentiable
operations; the same function is computed. The previous settings are restored on exit, so the user's
process is left as it was.

>>> import torch
>>> with differentiable_attention():
...     torch.backends.mha.get_fastpath_enabled()
False
"""

from __future__ import annotations

import contextlib

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

__all__ = ["differentiable_attention"]


@contextlib.contextmanager
def differentiable_attention():
    """MHA fast path off and the math SDPA backend inside the block; the previous settings restored after."""
    old = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(old)
