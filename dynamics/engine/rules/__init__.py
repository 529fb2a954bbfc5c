"""Structured layer rules: one module per layer type, each tested against the autograd reference.

The registry :data:`RULES` is what the layer probe (:mod:`dynamics.engine.layer_probe`), the cost model
(:mod:`dynamics.engine.ntk_plan`) and the per-layer kernel (:mod:`dynamics.engine.ntk_by_layer`) iterate over;
adding a layer type means adding one module here and one entry below.

>>> import torch.nn as nn
>>> rule_for(nn.Linear(3, 2)).name, rule_for(nn.BatchNorm2d(4)).name, rule_for(nn.GELU())
('linear', 'batchnorm', None)
"""

from __future__ import annotations

from typing import Optional

from torch import nn

from dynamics.engine.rules.base import Dims, LayerInfo, LayerRule, why_not_unchanged
from dynamics.engine.rules.batchnorm_affine import BatchNormAffineRule
from dynamics.engine.rules.conv2d import Conv2dRule
from dynamics.engine.rules.layernorm import LayerNormRule
from dynamics.engine.rules.linear import LinearRule

__all__ = ["RULES", "rule_for", "no_rule_reason", "LayerRule", "LayerInfo", "Dims"]

RULES: tuple[LayerRule, ...] = (LinearRule(), Conv2dRule(), BatchNormAffineRule(), LayerNormRule())


def rule_for(module: nn.Module) -> Optional[LayerRule]:
    """The rule that applies to ``module`` (exact type, unchanged forward, no hooks), or None."""
    for rule in RULES:
        if rule.applies_to(module):
            return rule
    return None


def no_rule_reason(module: nn.Module) -> str:
    """Why no rule applies to ``module`` (for :attr:`NTKInfo.fallback`)."""
    family = tuple(t for rule in RULES for t in rule.types)
    return why_not_unchanged(module, family) or f"{type(module).__name__} has no structured rule"
