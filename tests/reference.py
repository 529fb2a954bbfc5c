"""Slow, obviously-correct references that the fast paths are tested against.

Each BatchNorm mode is built here independently of dynamics.engine.batchnorm:
  eval   -- a copy in eval mode (running statistics);
  batch  -- a copy in train mode; plain autograd differentiates through the batch statistics;
  frozen -- a copy whose running statistics were set by one forward pass with momentum=1 (unbiased variance,
            corrected here to the biased one that training-mode normalisation uses), then put in eval mode.
"""

from __future__ import annotations

import copy

import numpy as np

import torch
from torch import nn
from torch.func import functional_call


def reference_module(model: nn.Module, x: torch.Tensor, bn_mode: str | None, dtype=torch.float64) -> nn.Module:
    m = copy.deepcopy(model).to(dtype)
    bns = [mod for mod in m.modules() if isinstance(mod, nn.modules.batchnorm._BatchNorm)]
    if bn_mode == "eval":
        for b in bns:
            b.eval()
    elif bn_mode == "batch":
        for b in bns:
            b.train()
    elif bn_mode == "frozen":
        counts = {}
        hooks = []
        for b in bns:
            b.train()
            b.momentum = 1.0
            b.track_running_stats = True
            if b.running_mean is None:
                b.running_mean = torch.zeros(b.num_features, dtype=dtype)
                b.running_var = torch.ones(b.num_features, dtype=dtype)
                b.num_batches_tracked = torch.tensor(0)

            def hook(mod, inp, b=b):
                counts[id(b)] = inp[0].numel() // inp[0].shape[1]
            hooks.append(b.register_forward_pre_hook(hook))
        with torch.no_grad():
            m(x.to(dtype))
        for h in hooks:
            h.remove()
        for b in bns:
            N = counts[id(b)]
            b.running_var.mul_((N - 1) / N)
            b.eval()
    return m


def reference_jacobian(model: nn.Module, x: torch.Tensor, names: list[str] | None = None,
                       bn_mode: str | None = None, dtype=torch.float64) -> torch.Tensor:
    """J (n*k, p) by torch.autograd.functional.jacobian of a functional_call, in float64."""
    m = reference_module(model, x, bn_mode, dtype)
    params = dict(m.named_parameters())
    if names is None:
        names = [n for n, p in model.named_parameters() if p.requires_grad]
    primals = tuple(params[n].detach().clone() for n in names)
    xx = x.to(dtype) if x.is_floating_point() else x

    def f(*ps):
        return functional_call(m, dict(zip(names, ps)), (xx,)).reshape(-1)

    jac = torch.autograd.functional.jacobian(f, primals)
    rows = jac[0].shape[0]
    return torch.cat([j.reshape(rows, -1) for j in jac], dim=1)


def reference_ntk(model, x1, x2=None, names=None, bn_mode=None) -> torch.Tensor:
    """K (n1, n2, k, k) = J(x1) J(x2)ᵀ from reference Jacobians."""
    J1 = reference_jacobian(model, x1, names, bn_mode)
    J2 = J1 if x2 is None else reference_jacobian(model, x2, names, bn_mode)
    n1, n2 = x1.shape[0], (x1 if x2 is None else x2).shape[0]
    k = J1.shape[0] // n1
    return (J1 @ J2.T).reshape(n1, k, n2, k).permute(0, 2, 1, 3)


# ---------------------------------------------------------------- tiny test networks
class ResBlockBN(nn.Module):
    """conv-BN-ReLU-conv-BN + identity skip, then pool and a linear read-out."""

    def __init__(self, c_in=2, c=3, k=3):
        super().__init__()
        self.stem = nn.Conv2d(c_in, c, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(c)
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, k)

    def forward(self, x):
        h = torch.relu(self.bn0(self.stem(x)))
        r = torch.relu(self.bn1(self.conv1(h)))
        r = self.bn2(self.conv2(r))
        h = torch.relu(h + r)
        return self.fc(h.mean(dim=(2, 3)))


def tiny_mlp(d=3, h=5, k=2, bias=True, act=nn.Tanh):
    return nn.Sequential(nn.Linear(d, h, bias=bias), act(), nn.Linear(h, h, bias=bias), act(), nn.Linear(h, k, bias=bias))


def tiny_cnn(c_in=1, k=3):
    return nn.Sequential(nn.Conv2d(c_in, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 3, 3, stride=2), nn.Tanh(),
                         nn.Flatten(), nn.Linear(3 * 2 * 2, k))


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give BatchNorm layers non-trivial affine parameters and running statistics."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                if m.weight is not None:
                    m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g))
                    m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
                if m.running_mean is not None:
                    m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                    m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return model


def snapshot(model: nn.Module) -> dict:
    """Everything a call must leave untouched: parameters, buffers (bitwise), modes, dtypes."""
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "modes": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
    }


def assert_unchanged(model: nn.Module, snap: dict) -> None:
    now = model.state_dict()
    assert now.keys() == snap["state"].keys()
    for k, v in snap["state"].items():
        assert now[k].dtype == v.dtype, k
        assert torch.equal(now[k], v), f"{k} changed"
    assert [m.training for m in model.modules()] == snap["modes"]
    assert [p.requires_grad for p in model.parameters()] == snap["requires_grad"]


def svd_residual(J, Y) -> float:
    """‖(I − P)Y‖/‖Y‖ with P from numpy's SVD and matrix_rank's default threshold: the slow obvious reference."""
    J, Y = np.asarray(J, dtype=float), np.asarray(Y, dtype=float).reshape(-1)
    U, s, _ = np.linalg.svd(J, full_matrices=False)
    r = int((s > max(J.shape) * np.finfo(float).eps * s[0]).sum())
    U = U[:, :r]
    return float(np.linalg.norm(Y - U @ (U.T @ Y)) / np.linalg.norm(Y))


class DropPath(nn.Module):
    """Stochastic depth (per-sample drop of a residual branch), as model zoos write it."""

    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        keep = (torch.rand(x.shape[0], *([1] * (x.dim() - 1)), dtype=x.dtype) >= self.p).to(x.dtype)
        return x * keep / (1 - self.p)
