"""Exact embeddings of a smaller MLP in a larger one: the constructions behind statements 5 and 6.

* :func:`widen` adds hidden units to every hidden layer of an MLP with **zero outgoing weights** (arbitrary,
  seeded incoming weights; old units ignore the new ones). The function is unchanged for every input, and
  the Jacobian columns of the old parameters are unchanged: J̃[:, old] = J, so Col J ⊆ Col J̃.
* :func:`duplicate_unit` copies one hidden unit (same incoming weights) and splits its outgoing weights
  α / (1 − α) between the two copies. The function is unchanged and every new column is a multiple of an old
  one: Col J̃ = Col J although p grew.

Both work on any model whose hidden layers are ``nn.Linear`` modules in ``model.body`` (an ``nn.Sequential``)
followed by ``model.readout`` (the :class:`dynamics.models.MLP` layout), without BatchNorm.

>>> import torch
>>> from dynamics.models import MLP
>>> _ = torch.manual_seed(0)
>>> net, x = MLP(3, 2, depth=2, width=4), torch.randn(5, 3)
>>> wide, old = widen(net, 7)
>>> torch.allclose(wide(x), net(x)), sum(p.numel() for p in wide.parameters()), int(old.sum())
(True, 100, 46)
"""

from __future__ import annotations

import copy
from typing import Optional, Sequence

import torch
from torch import nn

from dynamics.errors import InputError

__all__ = ["widen", "duplicate_unit", "hidden_linears"]


def hidden_linears(model: nn.Module) -> list[int]:
    """Indices in ``model.body`` of its ``nn.Linear`` layers; InputError if the layout is not an MLP's."""
    body, readout = getattr(model, "body", None), getattr(model, "readout", None)
    if not isinstance(body, nn.Sequential) or not isinstance(readout, nn.Linear):
        raise InputError(f"{type(model).__name__} is not an MLP (needs model.body: nn.Sequential of Linear "
                         f"layers and activations, and model.readout: nn.Linear); build it with dynamics.models.MLP")
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in body):
        raise InputError("the embedding needs an MLP without BatchNorm (batch statistics change with width)")
    idx = [i for i, m in enumerate(body) if isinstance(m, nn.Linear)]
    if not idx:
        raise InputError("the MLP has no hidden layer to widen (depth=0); use depth >= 1")
    return idx


def _old_mask(new: nn.Module, old: nn.Module) -> torch.Tensor:
    """Boolean (p_new,) mask over the new model's flattened parameters: True where an old entry was copied."""
    masks = []
    old_params = dict(old.named_parameters())
    for name, p in new.named_parameters():
        m = torch.zeros(p.shape, dtype=torch.bool)
        q = old_params[name]
        m[tuple(slice(0, s) for s in q.shape)] = True
        masks.append(m.reshape(-1))
    return torch.cat(masks)


def widen(model: nn.Module, width: int, seed: int = 0, scale: float = 1.0,
          layers: Optional[Sequence[int]] = None) -> tuple[nn.Module, torch.Tensor]:
    """Embed ``model`` in a copy whose hidden layers (``layers``: indices into the hidden Linear layers; default
    all) have ``width`` units, the function unchanged.

    Old units keep their weights and ignore the new ones; new units get seeded Gaussian incoming weights
    (``scale``/sqrt(fan_in)) from all units of the previous layer, and zero outgoing weights everywhere.

    Returns:
        (wide model, mask) where ``mask`` (p_wide,) bool marks the old parameters in the wide model's
        ``named_parameters`` flattening (so ``J_wide[:, mask]`` equals the old J up to the rounding of the
        wider sums, which add exact zeros: in practice bit-identical or within a few ulps).
    """
    idx = hidden_linears(model)
    chosen = set(range(len(idx))) if layers is None else {range(len(idx))[i] for i in layers}
    widths = [model.body[idx[i]].out_features for i in sorted(chosen)]
    if not isinstance(width, int) or width < max(widths):
        raise InputError(f"width must be an int >= the current hidden width {max(widths)}, got {width!r}")
    gen = torch.Generator().manual_seed(seed)
    wide = copy.deepcopy(model)
    prev_old, prev_new = model.body[idx[0]].in_features, model.body[idx[0]].in_features
    for j, i in enumerate(idx):
        lin: nn.Linear = model.body[i]
        out_new = width if j in chosen else lin.out_features
        new = nn.Linear(prev_new, out_new, bias=lin.bias is not None).to(lin.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(torch.randn(new.weight.shape, generator=gen, dtype=lin.weight.dtype)
                             * scale / prev_new ** 0.5)
            new.weight[: lin.out_features, :] = 0
            new.weight[: lin.out_features, :prev_old] = lin.weight
            if lin.bias is not None:
                new.bias.copy_(0.1 * scale * torch.randn(out_new, generator=gen, dtype=lin.bias.dtype))
                new.bias[: lin.out_features] = lin.bias
        wide.body[i] = new
        prev_old, prev_new = lin.out_features, out_new
    width = prev_new
    ro: nn.Linear = model.readout
    new_ro = nn.Linear(width, ro.out_features, bias=ro.bias is not None).to(ro.weight.dtype)
    with torch.no_grad():
        new_ro.weight.zero_()
        new_ro.weight[:, :prev_old] = ro.weight
        if ro.bias is not None:
            new_ro.bias.copy_(ro.bias)
    wide.readout = new_ro
    if hasattr(wide, "feature_dim"):
        wide.feature_dim = width
    return wide, _old_mask(wide, model)


def duplicate_unit(model: nn.Module, layer: int = -1, unit: int = 0, alpha: float = 0.5,
                   seed: Optional[int] = None) -> nn.Module:
    """Copy hidden unit ``unit`` of hidden layer ``layer`` (an index into the hidden Linear layers) and split
    its outgoing weights: α to the original, 1 − α to the copy. f is unchanged; Col J is unchanged.

    >>> import torch
    >>> from dynamics.models import MLP
    >>> _ = torch.manual_seed(0)
    >>> net, x = MLP(3, 2, depth=1, width=4), torch.randn(5, 3)
    >>> torch.allclose(duplicate_unit(net)(x), net(x))
    True
    """
    idx = hidden_linears(model)
    try:
        pos = idx[layer]
    except IndexError:
        raise InputError(f"layer {layer} out of range for {len(idx)} hidden layers") from None
    lin: nn.Linear = model.body[pos]
    if not 0 <= unit < lin.out_features:
        raise InputError(f"unit must be in [0, {lin.out_features}), got {unit}")
    if not 0 < alpha < 1:
        raise InputError(f"alpha must lie strictly between 0 and 1, got {alpha!r}")
    dup = copy.deepcopy(model)
    new = nn.Linear(lin.in_features, lin.out_features + 1, bias=lin.bias is not None).to(lin.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(torch.cat([lin.weight, lin.weight[unit:unit + 1]]))
        if lin.bias is not None:
            new.bias.copy_(torch.cat([lin.bias, lin.bias[unit:unit + 1]]))
    dup.body[pos] = new
    nxt_pos = [i for i in idx if i > pos]
    nxt: nn.Linear = model.body[nxt_pos[0]] if nxt_pos else model.readout
    nn_new = nn.Linear(nxt.in_features + 1, nxt.out_features, bias=nxt.bias is not None).to(nxt.weight.dtype)
    with torch.no_grad():
        w = nxt.weight.clone()
        col = w[:, unit:unit + 1].clone()
        w[:, unit:unit + 1] = alpha * col
        nn_new.weight.copy_(torch.cat([w, (1 - alpha) * col], dim=1))
        if nxt.bias is not None:
            nn_new.bias.copy_(nxt.bias)
    if nxt_pos:
        dup.body[nxt_pos[0]] = nn_new
    else:
        dup.readout = nn_new
        if hasattr(dup, "feature_dim"):
            dup.feature_dim = nn_new.in_features
    return dup
