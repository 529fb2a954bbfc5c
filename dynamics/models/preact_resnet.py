"""PreActResNet-18 (He et al. 2016, "Identity Mappings in Deep Residual Networks").

Layout of the widely used ``kuangliu/pytorch-cifar`` ``preact_resnet.py`` (the architecture of the author's
related public code): a 3x3 stem convolution with 64 channels, four stages of two pre-activation blocks
(BN-ReLU-conv3x3-BN-ReLU-conv3x3, shortcut a bias-free 1x1 conv on the pre-activated input where the shape
changes) with widths 64, 128, 256, 512 times a width multiplier and strides 1, 2, 2, 2, average pooling and a
linear read-out. As in that file there is no BN-ReLU after the last block. The fixed 4x4 average pool becomes
an adaptive average pool, which is the same at 32x32 and lets 16x16 (Semeion) and 28x28 (MNIST) inputs through.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dynamics.errors import InputError
from dynamics.models.base import Classifier, as_size, residual_stages

__all__ = ["PreActBlock", "PreActResNet"]


class PreActBlock(nn.Module):
    """Pre-activation basic block."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet(Classifier):
    """Pre-activation ResNet; ``num_blocks=(2, 2, 2, 2)`` is PreActResNet-18.

    >>> m = PreActResNet(1, 10, width=0.125)
    >>> m(torch.zeros(2, 1, 16, 16)).shape, m.feature_dim
    (torch.Size([2, 10]), 64)
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        num_blocks: Sequence[int] = (2, 2, 2, 2),
        width: float = 1.0,
        widths: Sequence[int] = (64, 128, 256, 512),
        input_size: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if len(num_blocks) != len(widths) or min(num_blocks) < 1:
            raise InputError(
                f"num_blocks {tuple(num_blocks)} must have one positive entry per stage width {tuple(widths)}"
            )
        self.in_channels, self.num_classes = in_channels, num_classes
        self.min_size = 2 ** (len(widths) - 1)
        self.input_size = as_size(input_size)
        if self.input_size is not None and min(self.input_size) < self.min_size:
            raise InputError(
                f"PreActResNet needs inputs of at least {self.min_size}x{self.min_size}, got {self.input_size}"
            )
        planes = [max(1, round(w * width)) for w in widths]
        self.conv1 = nn.Conv2d(in_channels, planes[0], 3, stride=1, padding=1, bias=False)
        self.layers, c = residual_stages(PreActBlock, planes[0], planes, num_blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = c
        self.readout = nn.Linear(c, num_classes)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pool(self.layers(self.conv1(x)))
        return out.flatten(start_dim=out.dim() - 3)
