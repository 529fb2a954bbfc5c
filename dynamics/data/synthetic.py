"""Seeded synthetic datasets for the theory checks: Gaussian mixtures, random labels, teacher regression.

All functions draw from their own ``torch.Generator`` seeded with ``seed``; the same arguments give the same
tensors on every machine (CPU generation).
"""

from __future__ import annotations

import torch

from dynamics.errors import InputError

__all__ = ["gaussian_mixture", "random_labels", "teacher_regression"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def gaussian_mixture(
    n: int, num_classes: int = 2, dim: int = 2, separation: float = 3.0, noise: float = 1.0, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Classification data: class c ~ N(μ_c, noise² I) with means μ_c ~ separation · N(0, I/dim) scaled so that
    E‖μ_c‖ ≈ separation. Classes are balanced (``y = arange(n) % num_classes`` shuffled).

    Returns x float32 (n, dim), y int64 (n,).

    >>> x, y = gaussian_mixture(6, num_classes=3, dim=4, seed=1)
    >>> x.shape, sorted(y.tolist())
    (torch.Size([6, 4]), [0, 0, 1, 1, 2, 2])
    """
    if n < 1 or num_classes < 1 or dim < 1 or noise < 0:
        raise InputError(f"need n, num_classes, dim >= 1 and noise >= 0; got {n}, {num_classes}, {dim}, {noise}")
    g = _gen(seed)
    means = torch.randn(num_classes, dim, generator=g) * (separation / dim**0.5)
    y = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
    x = means[y] + noise * torch.randn(n, dim, generator=g)
    return x, y


def random_labels(n: int, num_classes: int = 10, x: torch.Tensor | None = None, dim: int = 10,
                  seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels uniform on ``0..num_classes-1`` independent of the inputs (memorisation data).

    ``x`` given: keep those inputs (its first dimension must be n); otherwise x ~ N(0, I) of shape (n, dim).

    >>> x, y = random_labels(5, num_classes=3, dim=2, seed=0)
    >>> x.shape, bool(((y >= 0) & (y < 3)).all())
    (torch.Size([5, 2]), True)
    """
    g = _gen(seed)
    if x is None:
        x = torch.randn(n, dim, generator=g)
    elif len(x) != n:
        raise InputError(f"x has {len(x)} rows but n={n}")
    return x, torch.randint(0, num_classes, (n,), generator=g)


def teacher_regression(
    n: int, dim: int = 10, out_dim: int = 1, width: int = 32, depth: int = 1, noise: float = 0.0, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Regression targets from a random ReLU teacher MLP (``depth`` hidden layers of ``width``, He init),
    y = teacher(x) + noise · N(0, I), with x ~ N(0, I).

    Returns x float32 (n, dim), y float32 (n, out_dim).

    >>> x, y = teacher_regression(4, dim=3, out_dim=2, seed=0)
    >>> y.shape
    torch.Size([4, 2])
    """
    if n < 1 or dim < 1 or out_dim < 1 or width < 1 or depth < 0:
        raise InputError(
            f"need n, dim, out_dim, width >= 1 and depth >= 0; got {n}, {dim}, {out_dim}, {width}, {depth}"
        )
    g = _gen(seed)
    x = torch.randn(n, dim, generator=g)
    h, d = x, dim
    with torch.no_grad():
        for _ in range(depth):
            w = torch.randn(d, width, generator=g) * (2.0 / d) ** 0.5
            h, d = torch.relu(h @ w), width
        y = h @ (torch.randn(d, out_dim, generator=g) / d**0.5)
    return x, y + noise * torch.randn(n, out_dim, generator=g)
