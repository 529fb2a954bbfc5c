"""CIFAR-style ResNets (He et al. 2016, section 4.2): ResNet-20, ResNet-32 and a short/narrow ResNet-8.

Three stages of ``n`` basic blocks (depth 6n + 2) with widths 16, 32, 64 times a width multiplier, strides 1, 2,
2, global average pooling and a linear read-out. Shortcuts use option B of the paper (a 1x1 convolution with
BatchNorm where the shape changes, identity elsewhere) rather than option A's zero-padding: it keeps every
parameter an ordinary module parameter and works for any channel count. Adaptive average pooling lets the
network take any input from 16x16 to 32x32 (and anything from 4x4 up).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dynamics.errors import InputError
from dynamics.models.base import Classifier, as_size, residual_stages

__all__ = ["BasicBlock", "CifarResNet"]


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus shortcut, then ReLU (post-activation)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(Classifier):
    """ResNet-(6n+2) for small images.

    Args:
        in_channels, num_classes: input channels and number of outputs.
        depth: 6n + 2 (8, 20, 32, 44, 56, ...).
        width: width multiplier on the stage widths ``widths``.
        widths: stage widths before the multiplier (16, 32, 64 as in the paper).
        input_size: optional (H, W); when given it is checked at construction and at every call.

    >>> m = CifarResNet(1, 10, depth=8, width=0.5)
    >>> m(torch.zeros(2, 1, 16, 16)).shape, m.feature_dim
    (torch.Size([2, 10]), 32)
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        depth: int = 20,
        width: float = 1.0,
        widths: Sequence[int] = (16, 32, 64),
        input_size: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise InputError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1 (8, 20, 32, ...), got {depth}")
        n = (depth - 2) // 6
        self.in_channels, self.num_classes = in_channels, num_classes
        self.min_size = 2 ** (len(widths) - 1)
        self.input_size = as_size(input_size)
        if self.input_size is not None and min(self.input_size) < self.min_size:
            raise InputError(
                f"CifarResNet needs inputs of at least {self.min_size}x{self.min_size}, got {self.input_size}"
            )
        planes = [max(1, round(w * width)) for w in widths]
        self.conv1 = nn.Conv2d(in_channels, planes[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes[0])
        self.stages, c = residual_stages(BasicBlock, planes[0], planes, [n] * len(planes))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = c
        self.readout = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.pool(self.stages(out))
        return out.flatten(start_dim=out.dim() - 3)
