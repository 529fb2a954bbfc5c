"""The state of one run: model, optimiser, loader, probe, the switch; what a checkpoint holds and restores.

"Modified" has one representation here: :attr:`RunState.switch`, the :class:`~dynamics.training.records.SwitchRecord` of
the switch once it has happened (``None`` before it and in base runs). The model is f̃ = f + g exactly when it is
set; the phase of each epoch record is read from it, and the schedule that decides when to switch is the
configuration's :class:`~dynamics.training.config.Phases`.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import torch
from torch import nn

from dynamics.data.augment import Augment
from dynamics.data.loader import TensorLoader
from dynamics.data.train_test import TrainTestData
from dynamics.errors import ConfigError
from dynamics.models import create_for_data
from dynamics.training.records import ConditionCheck, ProbeRecord, SwitchRecord
from dynamics.training.certification import check_conditions
from dynamics.training.config import TrainConfig
from dynamics.training.determinism import rng_state, rng_untouched, seed_everything, set_rng_state
from dynamics.training.distributed import DistContext
from dynamics.training.framework import rebuild, switch, zeta_lr
from dynamics.training.optimizers import ADAPTIVE, add_param_group, build_optimizer, set_epoch_lr
from dynamics.training.probes import Probe
from dynamics.training.run_certificate import run_certificate

__all__ = ["RunState"]

log = logging.getLogger(__name__)


class RunState:
    """The mutable state of one run (kept together so that a checkpoint is one dict)."""

    def __init__(self, cfg: TrainConfig, data: TrainTestData, ctx: DistContext) -> None:
        self.cfg, self.ctx = cfg, ctx
        self.device = torch.device(cfg.device)
        self.data = data.to(self.device)
        x_tr = self.data.x_train
        seed_everything(cfg.seed)
        self.model: nn.Module = self._build_network(x_tr, data.num_classes)
        self.opt = build_optimizer(cfg, [{"params": [p for p in self.model.parameters() if p.requires_grad]}])
        if cfg.augment and x_tr.dim() != 4:
            raise ConfigError("--augment needs image data (N, C, H, W)")
        transform = Augment(crop_padding=max(1, x_tr.shape[-1] // 8), flip=False) if cfg.augment else None
        self.loader = TensorLoader(x_tr, torch.arange(len(x_tr), device=self.device), batch_size=cfg.batch_size,
                                   shuffle=True, seed=cfg.seed, transform=transform)
        self.epoch = 0
        self.switch: SwitchRecord | None = None
        self.conditions_tau: ConditionCheck | None = None
        self.run_certificate_tau: dict[str, Any] | None = None
        self.train_time_s = 0.0
        self.probe = (Probe(x_tr, self.data.y_train, data.num_classes, cfg.probe_every, cfg.probe_size, cfg.seed)
                      if cfg.probe_every else None)
        self.net = ctx.wrap(self.model)

    def _build_network(self, x: torch.Tensor, num_classes: int) -> nn.Module:
        """The configured network on the run's device (channels-last weights with ``channels_last``)."""
        model = create_for_data(self.cfg.model, x, num_classes, **self.cfg.model_options).to(self.device)
        return model.to(memory_format=torch.channels_last) if self.cfg.channels_last else model

    @property
    def phase(self) -> str:
        return "base" if self.switch is None else "modified"

    @property
    def loss(self) -> str:
        """The loss being minimised now: ``phase2_loss`` after the switch when given, else ``loss``."""
        return self.cfg.loss if self.switch is None else self.cfg.loss_after_switch

    @property
    def adaptive(self) -> bool:
        return self.cfg.optimizer in ADAPTIVE

    def set_epoch_lr(self) -> tuple[float, float | None]:
        """Set the learning rates of the current epoch: the schedule's for the network, and after the switch ζ's
        (:func:`~dynamics.training.framework.zeta_lr`: growing geometrically from ``zeta_step`` to
        ``zeta_step_final`` for SGD-like optimisers; the scheduled lr for adaptive ones). Returns (lr, ζ's lr)."""
        lr = set_epoch_lr(self.opt, self.cfg, self.epoch, len(self.loader))
        if self.switch is None:
            return lr, None
        cfg = self.cfg
        z = lr if self.adaptive else zeta_lr(lr, self.epoch, self.switch.tau_effective, cfg.epochs, cfg.zeta_step,
                                             cfg.zeta_step_final)
        self.opt.param_groups[-1]["lr"] = z
        return lr, z

    @property
    def indexed(self) -> bool:
        """Whether forward passes on the training set give f̃ the sample indices (g reads its training cache)."""
        return self.switch is not None and self.cfg.g_reads_training_cache

    # -- the switch -------------------------------------------------------------------------------------------
    def do_switch(self) -> None:
        """Build f̃ = f + g at τ = ``self.epoch``, add ζ to the optimiser, check the conditions (main process)."""
        cfg, d = self.cfg, self.data
        lr = set_epoch_lr(self.opt, cfg, self.epoch, len(self.loader))
        base_check = None
        if self.ctx.is_main:  # measure first: the base network's own condition at τ, before g is added
            with rng_untouched():
                base_check = check_conditions(self.model, d.x_train, d.y_train, d.num_classes, cfg.check_size,
                                              cfg.seed)
        with rng_untouched():
            aug, info = switch(self.model, d.x_train, d.y_train, d.num_classes, cfg.features, cfg.feature_options,
                               lr=lr, batch_size=cfg.batch_size, adaptive=self.adaptive,
                               momentum=cfg.momentum if cfg.optimizer == "sgd" else 0.0, seed=cfg.seed,
                               zeta_step=cfg.zeta_step)
        self._install(aug)
        if cfg.phase2_weight_decay is not None:  # the network's groups; zeta's group is added next
            for group in self.opt.param_groups:
                group["weight_decay"] = cfg.phase2_weight_decay
        add_param_group(self.opt, [aug.zeta], weight_decay=cfg.zeta_weight_decay, lr=cfg.lr)
        self.opt.param_groups[-1]["initial_lr"] = cfg.lr
        info = dict(info, zeta_step=cfg.zeta_step, zeta_step_final=cfg.zeta_step_final)
        if base_check is not None:
            info["base_network_at_tau"] = base_check
        self.switch = SwitchRecord.from_switch_info(self.epoch, info)
        if self.ctx.is_main:
            with rng_untouched():
                self.run_certificate_tau = run_certificate(aug, d.x_train, d.y_train, d.x_test, d.y_test,
                                                           self.switch.certificate, "tau", loss=self.loss).to_dict()
        if self.ctx.is_main:
            with rng_untouched():
                self.conditions_tau = ConditionCheck.from_dict(check_conditions(
                    aug, d.x_train, d.y_train, d.num_classes, cfg.check_size, cfg.seed, self.switch.certificate,
                    cfg.full_check))
            c = self.conditions_tau
            verdict = ("holds" if c.alignment_holds else
                       "FAILS" if c.details.get("alignment_conclusive", True) else "inconclusive")
            if c.details.get("alignment_trivial"):
                verdict += f" trivially (n·k = {c.details.get('nk')} ≤ p = {c.details.get('p')} at this size)"
            log.info("conditions at tau=%d on %d points: on-model %s (residual %.1e), alignment %s (residual %.1e)",
                     self.epoch, c.n_checked, "holds" if c.on_model_holds else "FAILS", c.on_model_residual,
                     verdict, c.alignment_residual)

    def _install(self, aug: nn.Module) -> None:
        self.model = aug
        if self.cfg.g_reads_training_cache:
            aug.cache_training_features(self.data.x_train)
        self.net = self.ctx.wrap(aug)

    def without_training_cache(self) -> contextlib.AbstractContextManager:
        """A context in which f̃ holds no training cache (so copies made by the checks stay small)."""
        return self.model.without_cache() if self.switch is not None else contextlib.nullcontext()

    # -- checkpoints ------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything needed to continue this run bit for bit (see :mod:`dynamics.training.checkpoint`)."""
        return {"epoch": self.epoch, "model": self.model.state_dict(),
                "framework": None if self.switch is None else self.model.spec(),
                "switch": None if self.switch is None else self.switch.to_dict(),
                "optimizer": self.opt.state_dict(), "loader": self.loader.state_dict(), "rng": rng_state(),
                "probe": self.probe.state_dict() if self.probe else None,
                "conditions_tau": None if self.conditions_tau is None else self.conditions_tau.to_dict(),
                "run_certificate_tau": self.run_certificate_tau, "train_time_s": self.train_time_s}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state` of a run with the same configuration and data."""
        if state["switch"] is not None:
            template = self._build_network(self.data.x_train, self.data.num_classes)
            sd = {k: v.to(self.device) for k, v in state["model"].items()}
            aug = rebuild(self.model, template, state["framework"], sd).to(self.device)
            self._install(aug)
            add_param_group(self.opt, [aug.zeta], weight_decay=self.cfg.zeta_weight_decay, lr=self.cfg.lr)
            self.switch = SwitchRecord.from_dict(state["switch"])
        else:
            self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.loader.load_state_dict(state["loader"])
        if self.probe and state["probe"]:
            self.probe.load_state_dict(state["probe"])
        self.epoch = int(state["epoch"])
        ct = state["conditions_tau"]
        self.conditions_tau = None if ct is None else ConditionCheck.from_dict(ct)
        self.run_certificate_tau = state.get("run_certificate_tau")
        self.train_time_s = float(state["train_time_s"])
        set_rng_state(state["rng"])

    # -- probes -----------------------------------------------------------------------------------------------
    def probe_record(self) -> ProbeRecord | None:
        """Measure the conditions on the probe points if a probe is due now (main process), else None."""
        if self.probe is None or not self.ctx.is_main or not self.probe.due(self.epoch, self.cfg.epochs):
            return None
        with rng_untouched(), self.without_training_cache():
            return ProbeRecord.from_dict(self.probe(self.model, self.epoch))
