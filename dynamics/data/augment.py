"""Batch augmentations of the training protocol, vectorised over the batch (no per-sample Python work).

Every function takes x (N, C, H, W) and a ``torch.Generator`` on x's device, so a batch's augmentation is a
deterministic function of the generator's state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dynamics.errors import InputError

__all__ = ["random_crop", "horizontal_flip", "affine", "random_affine", "Augment"]


def _check(x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise InputError(f"augmentations take a batch (N, C, H, W), got shape {tuple(x.shape)}")


def crop_at(x: torch.Tensor, padding: int, offsets: torch.Tensor) -> torch.Tensor:
    """Zero-pad by ``padding`` and cut an (H, W) window at ``offsets`` (N, 2) = (top, left) per sample."""
    n, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    rows = (offsets[:, 0, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (offsets[:, 1, None] + torch.arange(w, device=x.device))[:, None, None, :]
    return padded[torch.arange(n, device=x.device)[:, None, None, None],
                  torch.arange(c, device=x.device)[None, :, None, None], rows, cols]


def random_crop(x: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop with zero padding: each sample is shifted by an independent uniform offset in
    [-padding, padding]² (what ``RandomCrop(H, padding)`` does), same shape out.

    >>> x = torch.arange(16.).reshape(1, 1, 4, 4)
    >>> random_crop(x, padding=0).equal(x)
    True
    """
    _check(x)
    offsets = torch.randint(0, 2 * padding + 1, (len(x), 2), generator=generator, device=x.device)
    return crop_at(x, padding, offsets)


def horizontal_flip(x: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each sample left-right with probability ``p``.

    >>> x = torch.arange(4.).reshape(1, 1, 2, 2)
    >>> horizontal_flip(x, p=1.0).flatten().tolist()
    [1.0, 0.0, 3.0, 2.0]
    """
    _check(x)
    mask = torch.rand(len(x), generator=generator, device=x.device) < p
    return torch.where(mask[:, None, None, None], x.flip(-1), x)


def affine(x: torch.Tensor, angle: torch.Tensor, translate: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Rotate by ``angle`` (N,) degrees (counter-clockwise on the displayed image), scale by ``scale`` (N,),
    shift by ``translate`` (N, 2) pixels (right, down); bilinear sampling, zeros outside.

    >>> x = torch.arange(9.).reshape(1, 1, 3, 3)
    >>> affine(x, torch.zeros(1), torch.tensor([[1.0, 0.0]]), torch.ones(1))[0, 0].tolist()
    [[0.0, 0.0, 1.0], [0.0, 3.0, 4.0], [0.0, 6.0, 7.0]]
    """
    _check(x)
    n, _, h, w = x.shape
    a = angle.to(x.dtype) * (math.pi / 180)
    cos, sin = torch.cos(a) / scale, torch.sin(a) / scale
    # output pixel p maps to input pixel A⁻¹ (p - t); normalised coordinates are pixel * 2 / size.
    tx, ty = translate[:, 0].to(x.dtype) * 2 / w, translate[:, 1].to(x.dtype) * 2 / h
    theta = torch.stack([
        torch.stack([cos, -sin * h / w, -(cos * tx - sin * ty * h / w)], dim=1),
        torch.stack([sin * w / h, cos, -(sin * w / h * tx + cos * ty)], dim=1),
    ], dim=1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_affine(
    x: torch.Tensor, degrees: float = 10.0, translate: float = 0.1, scale: tuple[float, float] = (0.9, 1.1),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Small random affine map per sample: angle ~ U[-degrees, degrees], shift ~ U[-translate, translate] of
    the side in each direction, scale ~ U[scale]."""
    _check(x)
    n, _, h, w = x.shape
    u = torch.rand(n, 4, generator=generator, device=x.device, dtype=x.dtype)
    angle = (2 * u[:, 0] - 1) * degrees
    shift = (2 * u[:, 1:3] - 1) * translate * torch.tensor([w, h], device=x.device, dtype=x.dtype)
    s = scale[0] + (scale[1] - scale[0]) * u[:, 3]
    return affine(x, angle, shift, s)


@dataclass
class Augment:
    """The protocol's augmentation as one callable ``aug(x, generator) -> x``.

    Order: affine (if ``affine_degrees`` or ``affine_translate`` or ``affine_scale`` set), crop, flip.

    >>> aug = Augment(crop_padding=2, flip=True)
    >>> aug(torch.zeros(3, 1, 8, 8), torch.Generator().manual_seed(0)).shape
    torch.Size([3, 1, 8, 8])
    """

    crop_padding: int = 0
    flip: bool = False
    affine_degrees: float = 0.0
    affine_translate: float = 0.0
    affine_scale: tuple[float, float] | None = None

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.affine_degrees or self.affine_translate or self.affine_scale:
            x = random_affine(x, self.affine_degrees, self.affine_translate, self.affine_scale or (1.0, 1.0),
                              generator)
        if self.crop_padding:
            x = random_crop(x, self.crop_padding, generator)
        if self.flip:
            x = horizontal_flip(x, 0.5, generator)
        return x
