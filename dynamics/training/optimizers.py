"""Optimisers and learning-rate schedules by name, with clear errors.

Schedules are pure functions of the epoch (``lr_factor``): the learning rate of every parameter group at
epoch ``e`` (0-based) is ``group["initial_lr"] * lr_factor(config, e)``. Being stateless they resume exactly and
work unchanged when the modified framework adds a parameter group for ζ at the switch.

>>> import torch
>>> from dynamics.training.config import TrainConfig
>>> cfg = TrainConfig(optimizer="sgd", lr=0.1, schedule="step", milestones=[2], gamma=0.1, epochs=4)
>>> opt = build_optimizer(cfg, [{"params": [torch.nn.Parameter(torch.zeros(2))]}])
>>> [round(set_epoch_lr(opt, cfg, e), 6) for e in range(4)]
[0.1, 0.1, 0.01, 0.01]
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from dynamics.errors import ConfigError

__all__ = ["OPTIMIZERS", "build_optimizer", "lr_factor", "set_epoch_lr", "add_param_group"]


def _sgd(groups: list[dict], cfg: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           weight_decay=cfg.weight_decay)


def _adam(groups: list[dict], cfg: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)


def _adamw(groups: list[dict], cfg: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)


def _rmsprop(groups: list[dict], cfg: Any) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(groups, lr=cfg.lr, momentum=cfg.momentum, eps=cfg.eps, weight_decay=cfg.weight_decay)


#: name -> factory(param_groups, config). Adaptive optimisers are marked in ADAPTIVE.
OPTIMIZERS: dict[str, Callable[[list[dict], Any], torch.optim.Optimizer]] = {
    "sgd": _sgd,
    "adam": _adam,
    "adamw": _adamw,
    "rmsprop": _rmsprop,
}
ADAPTIVE = frozenset({"adam", "adamw", "rmsprop"})


def build_optimizer(cfg: Any, param_groups: list[dict] | list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The optimiser ``cfg.optimizer`` over ``param_groups``; each group gets ``initial_lr`` for the schedule."""
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {cfg.optimizer!r}; valid: {', '.join(sorted(OPTIMIZERS))}")
    groups = [g if isinstance(g, dict) else {"params": [g]} for g in param_groups]
    opt = OPTIMIZERS[cfg.optimizer](groups, cfg)
    for g in opt.param_groups:
        g.setdefault("initial_lr", g["lr"])
    return opt


def add_param_group(opt: torch.optim.Optimizer, params: list[torch.nn.Parameter], **options: Any) -> dict:
    """Add a parameter group (the framework's ζ) with the optimiser's defaults overridden by ``options``."""
    group = {"params": list(params), **options}
    opt.add_param_group(group)
    g = opt.param_groups[-1]
    g.setdefault("initial_lr", g["lr"])
    return g


def lr_factor(cfg: Any, epoch: int) -> float:
    """The multiplier of the initial learning rate during 0-based ``epoch``."""
    if cfg.schedule == "none":
        return 1.0
    if cfg.schedule == "step":
        return float(cfg.gamma ** sum(1 for m in cfg.milestones if epoch >= m))
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / cfg.epochs))
    raise ConfigError(f"unknown schedule {cfg.schedule!r}; valid: none, step, cosine")


def set_epoch_lr(opt: torch.optim.Optimizer, cfg: Any, epoch: int) -> float:
    """Set every group's lr for 0-based ``epoch``; return the lr of the first group."""
    f = lr_factor(cfg, epoch)
    for g in opt.param_groups:
        g["lr"] = g["initial_lr"] * f
    return float(opt.param_groups[0]["lr"])
