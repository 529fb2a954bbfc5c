"""BatchNorm semantics for Jacobians and kernels: which function of θ is being differentiated.

A network with BatchNorm in training mode is not a per-sample function, so "the Jacobian" is ambiguous.
When any BatchNorm layer is in training mode, the caller must choose ``bn_mode``:

``"eval"``
    Normalise with the running statistics (``running_mean``, ``running_var``): the function used at test
    time. Each output depends on its own sample only. Requires running statistics.
``"batch"``
    Normalise with the statistics of the batch ``x`` itself, as a training step does: the Jacobian of the
    whole-batch map X -> f(X), cross-sample terms kept (the statistics depend on θ and on every sample).
    This is what a full-batch gradient step with batch statistics sees. Never vmapped per sample.
``"frozen"``
    Batch statistics of ``x`` computed once at the current θ and then held constant: same values as
    ``"batch"`` at θ, but derivatives do not flow through the statistics. Per-sample once frozen.

Running buffers of the user's model are never touched: all work happens on a private copy
(:func:`prepare_module`). There is no silent fallback to per-sample normalisation.

>>> import torch.nn as nn
>>> net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
>>> resolve_bn_mode(net, None)
Traceback (most recent call last):
...
dynamics.errors.BatchNormModeError: BatchNorm1d '1' is in training mode; pass bn_mode='eval' ...
>>> resolve_bn_mode(net.eval(), None)
'eval'
"""

from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import nn

from dynamics.errors import BatchNormModeError

__all__ = ["BN_MODES", "batchnorm_layers", "resolve_bn_mode", "prepare_module",
           "freeze_batch_statistics"]

BN_MODES = ("eval", "batch", "frozen")
_BN_TYPES = (nn.modules.batchnorm._BatchNorm,)

_CHOICES = ("pass bn_mode='eval' (running statistics, the test-time function), 'batch' (statistics of the batch x, "
            "cross-sample terms kept, what a training step sees) or 'frozen' (batch statistics at the current "
            "parameters, held constant)")


def batchnorm_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """All BatchNorm modules of ``model`` (BatchNorm1d/2d/3d, SyncBatchNorm, subclasses) with their names."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, _BN_TYPES)]


def resolve_bn_mode(model: nn.Module, bn_mode: Optional[str]) -> Optional[str]:
    """Check ``bn_mode`` against the model; return the mode in force (None when the model has no BatchNorm).

    Raises:
        BatchNormModeError: an unknown mode; a BatchNorm layer in training mode without ``bn_mode``;
            ``"eval"`` for a layer that has no running statistics.
    """
    if bn_mode is not None and bn_mode not in BN_MODES:
        raise BatchNormModeError(f"unknown bn_mode {bn_mode!r}; {_CHOICES}")
    layers = batchnorm_layers(model)
    if not layers:
        return None
    if bn_mode is None:
        training = [(n, m) for n, m in layers if m.training]
        if training:
            name, m = training[0]
            more = f" (and {len(training) - 1} more BatchNorm layers)" if len(training) > 1 else ""
            raise BatchNormModeError(f"{type(m).__name__} '{name}' is in training mode{more}; {_CHOICES}")
        bn_mode = "eval"
    if bn_mode == "eval":
        for name, m in layers:
            if m.running_mean is None or m.running_var is None:
                raise BatchNormModeError(
                    f"bn_mode='eval' needs running statistics, but {type(m).__name__} '{name}' has none "
                    f"(track_running_stats=False); use bn_mode='batch' or 'frozen'")
    return bn_mode


def prepare_module(model: nn.Module, bn_mode: Optional[str], dtype: Optional[torch.dtype]) -> nn.Module:
    """A private copy of ``model`` set up for ``bn_mode`` (``frozen`` still needs :func:`freeze_batch_statistics`).

    The copy's parameters do not require gradients: derivatives are taken with respect to tensors passed in
    through ``torch.func.functional_call``. The user's model is not modified.
    """
    module = copy.deepcopy(model)
    if dtype is not None:
        module = module.to(dtype)
    for p in module.parameters():
        p.requires_grad_(False)
    for _, m in batchnorm_layers(module):
        if bn_mode == "eval":
            m.eval()
        elif bn_mode in ("batch", "frozen"):
            # Batch statistics and no running-statistics update: F.batch_norm then receives None for the
            # running buffers (see torch.nn.modules.batchnorm._BatchNorm.forward).
            m.train()
            m.track_running_stats = False
    return module


@torch.no_grad()
def freeze_batch_statistics(module: nn.Module, x: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Turn a module prepared for ``"batch"`` into the ``"frozen"`` function at its current parameters.

    Runs one forward pass on ``x``, records each BatchNorm layer's batch mean and *biased* variance (the ones
    training-mode normalisation divides by), stores them as the layer's running statistics and puts the layer
    in eval mode, so that the frozen function equals the batch function in value at these parameters.

    Returns:
        ``{layer name: (mean, var)}`` of the statistics used.
    """
    layers = batchnorm_layers(module)
    stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []
    for name, m in layers:
        def hook(mod, inputs, name=name):
            (inp,) = inputs
            dims = [0] + list(range(2, inp.dim()))
            stats[name] = (inp.mean(dim=dims), inp.var(dim=dims, unbiased=False))
        handles.append(m.register_forward_pre_hook(hook))
    try:
        module(x)
    finally:
        for h in handles:
            h.remove()
    for name, m in layers:
        mean, var = stats[name]
        m.running_mean = mean.detach().clone()
        m.running_var = var.detach().clone()
        m.eval()
    return stats
