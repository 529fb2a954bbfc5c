"""The training loss and the evaluation of a model on a whole set.

>>> import torch
>>> loss_fn("mse", torch.zeros(1, 2), torch.tensor([1])).item()
0.5
>>> LOSS_DEFINITIONS["ce"]
'mean over samples of cross-entropy'
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["loss_fn", "evaluate", "LOSS_DEFINITIONS"]

#: what the reported loss values are (stored in the summary)
LOSS_DEFINITIONS = {"ce": "mean over samples of cross-entropy",
                    "mse": "mean over samples of ½‖f(x) − onehot(y)‖² (summed over classes)"}


def loss_fn(kind: str, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample losses (B,) of logits (B, k) and labels (B,): cross-entropy, or ½‖logits − onehot(y)‖²."""
    if kind == "ce":
        return nn.functional.cross_entropy(logits, y, reduction="none")
    onehot = nn.functional.one_hot(y, logits.shape[1]).to(logits.dtype)
    return 0.5 * (logits - onehot).square().sum(1)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str, batch_size: int = 512,
             indexed: bool = False) -> tuple[float, float]:
    """(mean loss, accuracy) of ``model`` in eval mode over the whole (x, y), summed in float64.

    ``indexed``: pass the training indices to f̃ = f + g so that g reads its cached training features.
    """
    was = model.training
    model.eval()
    total, correct = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(x), batch_size):
            xb, yb = x[s:s + batch_size], y[s:s + batch_size]
            out = model(xb, index=torch.arange(s, s + len(xb), device=xb.device)) if indexed else model(xb)
            total += float(loss_fn(loss, out, yb).double().sum())
            correct += int((out.argmax(1) == yb).sum())
    model.train(was)
    n = max(len(x), 1)
    return total / n, correct / n
