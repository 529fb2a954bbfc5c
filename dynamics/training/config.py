"""The configuration of one training run, saved with it as ``config.json``.

A :class:`TrainConfig` is a plain dataclass: ``to_dict`` / ``from_dict`` round-trip through JSON, and
``validate`` raises :class:`~dynamics.errors.ConfigError` with a message that says what to change.

>>> cfg = TrainConfig(dataset="mnist", model="mlp", epochs=4, modified=True, tau=2)
>>> TrainConfig.from_dict(cfg.to_dict()) == cfg
True
>>> TrainConfig(epochs=4, modified=True, tau=9).validate()
Traceback (most recent call last):
...
dynamics.errors.ConfigError: tau=9 is outside the budget: the switch must happen after epoch 1..3 (epochs=4) ...
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from dynamics.errors import ConfigError

__all__ = ["TrainConfig", "LOSSES", "SCHEDULES"]

LOSSES = ("ce", "mse")
SCHEDULES = ("none", "step", "cosine")


@dataclass
class TrainConfig:
    """Everything that determines a run (with the seed, the run is reproducible bit for bit on CPU).

    Fields:
        dataset, model: registry names (``dynamics.data`` / ``dynamics.models``); ``model_options`` are passed to
            ``dynamics.models.create`` (e.g. ``{"width": 2}``).
        optimizer: ``sgd`` | ``adam`` | ``adamw`` | ``rmsprop`` (see :mod:`dynamics.training.optimizers`);
            ``lr``, ``momentum``, ``nesterov``, ``weight_decay``, ``betas``, ``eps`` are its hyper-parameters.
        schedule: ``none`` | ``step`` (multiply by ``gamma`` at each epoch in ``milestones``) | ``cosine``
            (per epoch, from ``lr`` to 0 over ``epochs``).
        batch_size: the GLOBAL mini-batch size (split across processes under DDP).
        loss: ``ce`` (cross-entropy on logits) or ``mse`` (½‖f(x) − onehot(y)‖², summed over classes); the
            reported loss is the mean over samples.
        augment: random crop + flip from ``dynamics.data.augment`` (off by default).
        modified, tau, features: the modified framework A(base): base algorithm for ``tau`` epochs, then
            f̃ = f + g with g = ζᵀφ(x) built by the feature construction ``features`` (``"auto"`` chooses);
            ``feature_options`` go to it; ``zeta_weight_decay`` is the weight decay on ζ (0: see docs).
        g_input: what g sees during training when ``augment`` is on. ``"clean"`` (default): g is a function of
            the clean training sample (its cached features), only f sees the augmented image, so training
            costs no extra forward pass; ``"augmented"``: g is recomputed from the augmented image by the
            frozen network at every step (one extra forward pass). At test time and in the checks g always
            sees the input it is given. Without augmentation both are the same function.
        check_size, full_check: the conditions at τ and at the end are checked exactly (dense, float64) on
            ``check_size`` training points; ``full_check`` adds the matrix-free check on the whole training set.
        probe_every, probe_size: probe the conditions on ``probe_size`` fixed training points every
            ``probe_every`` epochs (0 = never).
        seed, device, data_root, train_subset (train on a seeded subset of this size), eval_every (test metrics
            every this many epochs; the last epoch is always evaluated).
    """

    dataset: str = "mnist"
    model: str = "mlp"
    model_options: dict[str, Any] = field(default_factory=dict)
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    batch_size: int = 64
    epochs: int = 50
    schedule: str = "step"
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    loss: str = "ce"
    augment: bool = False
    modified: bool = False
    tau: int | None = None
    features: str = "auto"
    feature_options: dict[str, Any] = field(default_factory=dict)
    zeta_weight_decay: float = 0.0
    g_input: str = "clean"
    full_check: bool = False
    check_size: int = 128
    probe_every: int = 0
    probe_size: int = 64
    seed: int = 0
    device: str = "cpu"
    data_root: str | None = None
    train_subset: int | None = None
    eval_every: int = 1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown TrainConfig field(s) {unknown}; valid fields: {sorted(names)}")
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        if "milestones" in d:
            d["milestones"] = list(d["milestones"])
        return cls(**d)

    @property
    def tau_effective(self) -> int | None:
        """The switch epoch: ``tau`` if given, else half the budget (for modified runs)."""
        if not self.modified:
            return None
        return self.tau if self.tau is not None else max(1, self.epochs // 2)

    def validate(self) -> "TrainConfig":
        """Raise :class:`ConfigError` on an inconsistent configuration; return ``self``."""
        from dynamics.training.optimizers import OPTIMIZERS

        def positive(name: str, value: float) -> None:
            if not value > 0:
                raise ConfigError(f"{name} must be > 0, got {value!r}")

        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(sorted(OPTIMIZERS))}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        if self.loss not in LOSSES:
            raise ConfigError(f"unknown loss {self.loss!r}; valid: {', '.join(LOSSES)}")
        for name in ("lr", "batch_size", "epochs", "eval_every", "probe_size", "check_size"):
            positive(name, getattr(self, name))
        for name in ("weight_decay", "zeta_weight_decay", "momentum"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.g_input not in ("clean", "augmented"):
            raise ConfigError(f"g_input must be 'clean' or 'augmented', got {self.g_input!r}")
        if self.probe_every < 0:
            raise ConfigError(f"probe_every must be >= 0 (0 = no probes), got {self.probe_every}")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise ConfigError("nesterov=True needs optimizer='sgd' with momentum > 0")
        if any(not 0 < m <= self.epochs for m in self.milestones):
            raise ConfigError(f"milestones {self.milestones} must lie in 1..epochs={self.epochs}")
        if self.train_subset is not None and self.train_subset < 1:
            raise ConfigError(f"train_subset must be a positive number of samples, got {self.train_subset}")
        if self.tau is not None and not self.modified:
            raise ConfigError("tau is only meaningful with modified=True (pass --modified)")
        if self.modified:
            tau = self.tau_effective
            if not 1 <= tau < self.epochs:
                raise ConfigError(
                    f"tau={tau} is outside the budget: the switch must happen after epoch 1..{self.epochs - 1} "
                    f"(epochs={self.epochs}) so that both phases get at least one epoch of the same total budget"
                )
            from dynamics.training.features import FEATURES

            if self.features != "auto" and self.features not in FEATURES:
                raise ConfigError(
                    f"unknown feature construction {self.features!r}; valid: auto, {', '.join(sorted(FEATURES))}"
                )
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"device must be 'cpu' or 'cuda[:i]', got {self.device!r}")
        return self
