"""Optimisers and learning-rate schedules by name, with clear errors.

Schedules are pure functions of the epoch and, for ``onecycle``, of the step within it (``lr_factor``): the
learning rate of a parameter group at 0-based epoch ``e``, step ``b`` of ``B`` is
``group["initial_lr"] * lr_factor(config, e, b, B)``. Being stateless they resume exactly and work unchanged when
the modified framework adds a parameter group for ζ at the switch (ζ's own step is set per epoch by the runner).

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

__all__ = ["OPTIMIZERS", "build_optimizer", "lr_factor", "onecycle_factor", "set_epoch_lr", "set_step_lr",
           "add_param_group", "PER_STEP_SCHEDULES"]

#: schedules whose learning rate changes at every optimiser step (the others change between epochs)
PER_STEP_SCHEDULES = frozenset({"onecycle"})


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


def onecycle_factor(step: int, total_steps: int, pct_start: float = 0.25, div_factor: float = 25.0,
                    final_div_factor: float = 1e4) -> float:
    """lr / peak lr at 0-based optimiser ``step`` of ``total_steps``: PyTorch's ``OneCycleLR`` (two phases, cosine
    annealing): from 1/div_factor up to 1 at step ``pct_start·total − 1``, then down to
    1/(div_factor·final_div_factor) at the last step.

    >>> [round(onecycle_factor(s, 9, 0.25), 4) for s in (0, 1, 8)]
    [0.04, 1.0, 0.0]
    """
    if total_steps < 1 or not 0 <= step < total_steps:
        raise ConfigError(f"onecycle step {step} outside 0..{total_steps - 1}")
    initial, final = 1.0 / div_factor, 1.0 / (div_factor * final_div_factor)
    end_up = float(pct_start * total_steps) - 1
    end_down = total_steps - 1

    def anneal(start: float, stop: float, pct: float) -> float:
        return stop + (start - stop) / 2.0 * (math.cos(math.pi * pct) + 1)

    if step <= end_up:
        return anneal(initial, 1.0, step / end_up) if end_up > 0 else 1.0
    span = end_down - end_up  # as torch: phase 2 runs from end_up (-1 when pct_start = 0) to the last step
    return anneal(1.0, final, (step - end_up) / span) if span > 0 else final


def lr_factor(cfg: Any, epoch: int, step: int = 0, steps_per_epoch: int = 1) -> float:
    """The multiplier of the initial learning rate during 0-based ``epoch`` (and, for per-step schedules, its
    0-based ``step`` of ``steps_per_epoch``)."""
    if cfg.schedule == "onecycle":
        return onecycle_factor(epoch * steps_per_epoch + step, cfg.epochs * steps_per_epoch, cfg.onecycle_pct_start,
                               cfg.onecycle_div_factor, cfg.onecycle_final_div_factor)
    if cfg.schedule == "none":
        return 1.0
    if cfg.schedule == "step":
        return float(cfg.gamma ** sum(1 for m in cfg.milestones if epoch >= m))
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / cfg.epochs))
    raise ConfigError(f"unknown schedule {cfg.schedule!r}; valid: none, step, cosine, onecycle")


def set_epoch_lr(opt: torch.optim.Optimizer, cfg: Any, epoch: int, steps_per_epoch: int = 1) -> float:
    """Set every group's lr for 0-based ``epoch`` (a per-step schedule: its first step); return the first group's."""
    f = lr_factor(cfg, epoch, 0, steps_per_epoch)
    for g in opt.param_groups:
        g["lr"] = g["initial_lr"] * f
    return float(opt.param_groups[0]["lr"])


def set_step_lr(opt: torch.optim.Optimizer, cfg: Any, epoch: int, step: int, steps_per_epoch: int,
                n_groups: int | None = None) -> float:
    """Set the lr of the first ``n_groups`` groups (default: all) for ``step`` of 0-based ``epoch``; return the
    first group's. The runner calls it before every step of a per-step schedule, leaving ζ's group (the last,
    after the switch) at its own per-epoch step."""
    f = lr_factor(cfg, epoch, step, steps_per_epoch)
    groups = opt.param_groups if n_groups is None else opt.param_groups[:n_groups]
    for g in groups:
        g["lr"] = g["initial_lr"] * f
    return float(opt.param_groups[0]["lr"])
