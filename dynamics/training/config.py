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

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from dynamics.errors import ConfigError
from dynamics.models import available as available_models
from dynamics.training.features import FEATURES
from dynamics.training.optimizers import OPTIMIZERS

__all__ = ["TrainConfig", "Phases", "LOSSES", "SCHEDULES", "MAX_SEED", "LOCATION_FIELDS"]

LOSSES = ("ce", "mse")
SCHEDULES = ("none", "step", "cosine", "onecycle")
#: the largest seed every generator accepts (numpy's legacy seeding takes 0..2**32 - 1)
MAX_SEED = 2**32 - 1
#: fields that say where a run executes or finds its data, not what it computes (may differ on resume)
LOCATION_FIELDS = frozenset({"device", "data_root", "threads"})


def _option(default: Any, help: str) -> Any:
    """A dataclass field with its command-line help (``dynamics train`` is generated from these)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Phases:
    """The switch schedule of a run as data: the base algorithm before ``tau``, f̃ = f + g from ``tau`` on
    (``tau=None``: a base run, one phase).

    >>> p = Phases(2)
    >>> [p.phase(e) for e in range(4)], p.switch_at(2), Phases(None).switch_at(2)
    (['base', 'base', 'modified', 'modified'], True, False)
    """

    tau: int | None

    def phase(self, epoch: int) -> str:
        """The phase of 0-based ``epoch``: ``"base"`` or ``"modified"``."""
        return "modified" if self.tau is not None and epoch >= self.tau else "base"

    def switch_at(self, epoch: int) -> bool:
        """Whether the switch happens before 0-based ``epoch`` (i.e. after ``epoch`` completed epochs)."""
        return self.tau is not None and epoch == self.tau


@dataclass
class TrainConfig:
    """Everything that determines a run (with the seed, the run is reproducible bit for bit on CPU).

    Fields:
        dataset, model: registry names (``dynamics.data`` / ``dynamics.models``); ``model_options`` are passed to
            ``dynamics.models.create`` (e.g. ``{"width": 2}``).
        optimizer: ``sgd`` | ``adam`` | ``adamw`` | ``rmsprop`` (see :mod:`dynamics.training.optimizers`);
            ``lr``, ``momentum``, ``nesterov``, ``weight_decay``, ``betas``, ``eps`` are its hyper-parameters.
        schedule: ``none`` | ``step`` (multiply by ``gamma`` at each epoch in ``milestones``) | ``cosine``
            (per epoch, from ``lr`` to 0 over ``epochs``) | ``onecycle`` (per optimiser step: PyTorch's
            ``OneCycleLR`` with cosine annealing and a fixed momentum; ``lr`` is the peak, reached at
            ``onecycle_pct_start`` of the steps, from ``lr / onecycle_div_factor`` down to
            ``lr / (onecycle_div_factor * onecycle_final_div_factor)``).
        channels_last: the network's weights and every image batch in channels-last memory format (faster
            convolutions on CPU and GPU; the same function).
        threads: torch intra-op threads of the run (``None``: the cores free now, see
            :func:`dynamics.training.threads.resolve_threads`; recorded in the summary). Where it runs, not what
            it computes: a location field.
        batch_size: the GLOBAL mini-batch size (split across processes under DDP).
        loss: ``ce`` (cross-entropy on logits) or ``mse`` (½‖f(x) − onehot(y)‖², summed over classes); the
            reported loss is the mean over samples.
        augment: random crop + flip from ``dynamics.data.augment`` (off by default).
        modified, tau, features: the modified framework A(base): base algorithm for ``tau`` epochs, then
            f̃ = f + g with g = ζᵀφ(x) built by the feature construction ``features`` (``"auto"`` chooses);
            ``feature_options`` go to it; ``zeta_weight_decay`` is the weight decay on ζ (0: see docs);
            ``zeta_step`` is ζ's step (sets the scale of φ), ``zeta_step_final`` its value in the last epoch
            (geometric growth, ``framework.zeta_lr``); ``phase2_weight_decay`` / ``phase2_loss`` replace
            ``weight_decay`` / ``loss`` after the switch when given (docs/framework.md).
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
        epsilon_every: modified runs record the run certificate's ε and the eval-mode training accuracy on the
            whole training set after every this many phase-2 epochs (one extra pass over the training set each;
            0 = only at τ and at the end, in the summary).
    """

    dataset: str = _option("mnist", "dataset name (see dynamics.data.training_datasets(): the file datasets "
                           "and the generated 'blobs')")
    model: str = _option("mlp", "model name (see dynamics.models.available())")
    model_options: dict[str, Any] = _option({}, "JSON options passed to the model builder, e.g. '{\"width\": 2}'")
    optimizer: str = _option("sgd", "sgd | adam | adamw | rmsprop")
    lr: float = _option(0.01, "initial learning rate")
    momentum: float = _option(0.9, "SGD momentum (RMSprop: its momentum)")
    nesterov: bool = _option(False, "Nesterov momentum (sgd with momentum > 0)")
    weight_decay: float = _option(1e-4, "weight decay of the network's parameters")
    betas: tuple[float, float] = _option((0.9, 0.999), "Adam/AdamW betas (two numbers)")
    eps: float = _option(1e-8, "Adam/AdamW/RMSprop epsilon")
    batch_size: int = _option(64, "global mini-batch size (split across processes under DDP)")
    epochs: int = _option(50, "number of epochs (the whole budget, both phases of a modified run)")
    schedule: str = _option("step", "learning-rate schedule: none | step (multiply by gamma at each milestone; "
                            "no milestones = constant) | cosine | onecycle (per step)")
    milestones: list[int] = _option([], "epochs at which the step schedule multiplies lr by gamma")
    gamma: float = _option(0.1, "factor of the step schedule, in (0, 1] to decay")
    onecycle_pct_start: float = _option(0.25, "onecycle schedule: fraction of the steps spent raising lr to the "
                                        "peak --lr")
    onecycle_div_factor: float = _option(25.0, "onecycle schedule: the first step's lr is lr / this")
    onecycle_final_div_factor: float = _option(1e4, "onecycle schedule: the last step's lr is the first's / this")
    channels_last: bool = _option(False, "channels-last memory format for the network and image batches")
    threads: int | None = _option(None, "torch threads (default: the cores free now, from os.sched_getaffinity "
                                  "and the load average; recorded in summary.json)")
    loss: str = _option("ce", "ce (cross-entropy) | mse (1/2 ||f(x) - onehot(y)||^2 summed over classes)")
    augment: bool = _option(False, "random crop (padding H/8) during training (image data)")
    modified: bool = _option(False, "the modified framework A(base): switch to f + g at tau")
    tau: int | None = _option(None, "switch epoch of --modified (default: epochs // 2, recorded in summary.json)")
    features: str = _option("auto", "feature construction of g: auto | gaussian | random | nnlabel")
    feature_options: dict[str, Any] = _option({}, "JSON options of the feature construction")
    zeta_weight_decay: float = _option(0.0, "weight decay on zeta, the weights of g")
    zeta_step: float = _option(1e-4, "zeta's step at the switch, its own hyper-parameter: the fraction of a batch's "
                               "residual one effective SGD step of g removes along its top direction (sets the "
                               "scale c of phi; recorded in the switch record)")
    zeta_step_final: float = _option(1e6, "zeta's step in the last epoch: after the switch it grows geometrically "
                                     "from --zeta-step to this (framework.zeta_lr; docs/framework.md, Phase 2)")
    phase2_weight_decay: float | None = _option(None, "weight decay of the network's parameters after the switch "
                                                "(default: --weight-decay; 0 = the guaranteed variant)")
    phase2_loss: str | None = _option(None, "loss after the switch: ce | mse (default: --loss)")
    g_input: str = _option("clean", "with --augment: g sees the clean training sample (cached, no extra cost) or "
                           "the augmented image (the frozen network re-runs every step): clean | augmented")
    full_check: bool = _option(False, "also check alignment of g on the whole training set (matrix-free LSQR)")
    check_size: int = _option(128, "training points on which the conditions are checked exactly at tau and at "
                              "the end")
    probe_every: int = _option(0, "probe the conditions every N epochs (0 = never)")
    probe_size: int = _option(64, "number of fixed training points the probes measure")
    seed: int = _option(0, f"random seed, 0..{MAX_SEED}")
    device: str = _option("cpu", "cpu | cuda | cuda:N")
    data_root: str | None = _option(None, "data root (default $DYNAMICS_DATA, then ~/.cache/dynamics)")
    train_subset: int | None = _option(None, "train on a seeded subset of this many training samples")
    eval_every: int = _option(1, "test metrics every N epochs (the last epoch is always evaluated)")
    epsilon_every: int = _option(0, "modified runs: the run certificate's epsilon on the whole training set after "
                                 "every N phase-2 epochs, in the epoch records (0 = only at tau and the end)")

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
        """The switch epoch: ``tau`` if given, else half the budget (for modified runs); the one place of this rule.

        >>> TrainConfig(epochs=7, modified=True).tau_effective, TrainConfig().tau_effective
        (3, None)
        """
        if not self.modified:
            return None
        return self.tau if self.tau is not None else max(1, self.epochs // 2)

    @property
    def g_reads_training_cache(self) -> bool:
        """After the switch, g reads the cached clean training features (no augmentation, or ``g_input="clean"``)
        instead of recomputing them from the (augmented) batch."""
        return not self.augment or self.g_input == "clean"

    @property
    def phases(self) -> Phases:
        """The switch schedule (:class:`Phases`) of this configuration."""
        return Phases(self.tau_effective)

    def digest(self) -> str:
        """SHA-256 of the fields that determine the computation (not :data:`LOCATION_FIELDS`): binds a
        checkpoint to its configuration.

        >>> TrainConfig(device="cpu").digest() == TrainConfig(device="cuda").digest() != TrainConfig(lr=1).digest()
        True
        """
        d = {k: v for k, v in self.to_dict().items() if k not in LOCATION_FIELDS}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()

    @property
    def loss_after_switch(self) -> str:
        """The loss of phase 2: ``phase2_loss`` when given, else ``loss``."""
        return self.loss if self.phase2_loss is None else self.phase2_loss

    def validate(self) -> "TrainConfig":
        """Raise :class:`ConfigError` on an inconsistent configuration; return ``self``."""
        def positive(name: str, value: float) -> None:
            if not value > 0:
                raise ConfigError(f"{name} must be > 0, got {value!r}")

        if self.model not in available_models():
            raise ConfigError(f"unknown model {self.model!r}; valid: {', '.join(available_models())}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(sorted(OPTIMIZERS))}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        if self.loss not in LOSSES:
            raise ConfigError(f"unknown loss {self.loss!r}; valid: {', '.join(LOSSES)}")
        for name in ("lr", "batch_size", "epochs", "eval_every", "probe_size", "check_size", "gamma", "eps"):
            positive(name, getattr(self, name))
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"seed must be in 0..{MAX_SEED}, got {self.seed}")
        if self.milestones and self.schedule != "step":
            raise ConfigError(f"milestones {self.milestones} only apply to schedule='step' (got {self.schedule!r}); "
                              "pass --schedule step or drop --milestones")
        for name in ("weight_decay", "zeta_weight_decay", "momentum"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        positive("zeta_step", self.zeta_step)
        if not self.zeta_step_final >= self.zeta_step:
            raise ConfigError(f"zeta_step_final must be >= zeta_step (equal = constant step), got "
                              f"{self.zeta_step_final!r} < {self.zeta_step!r}")
        if self.phase2_weight_decay is not None and not self.phase2_weight_decay >= 0:
            raise ConfigError(f"phase2_weight_decay must be >= 0 (or None: keep weight_decay), got "
                              f"{self.phase2_weight_decay!r}")
        if self.phase2_loss is not None and self.phase2_loss not in LOSSES:
            raise ConfigError(f"unknown phase2_loss {self.phase2_loss!r}; valid: {', '.join(LOSSES)} (or None)")
        if self.g_input not in ("clean", "augmented"):
            raise ConfigError(f"g_input must be 'clean' or 'augmented', got {self.g_input!r}")
        if not 0 <= self.onecycle_pct_start < 1:
            raise ConfigError(f"onecycle_pct_start must be in [0, 1), got {self.onecycle_pct_start!r}")
        positive("onecycle_div_factor", self.onecycle_div_factor)
        positive("onecycle_final_div_factor", self.onecycle_final_div_factor)
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise ConfigError(f"threads must be a positive integer (or None: the cores free now), got "
                              f"{self.threads!r}")
        if self.epsilon_every < 0:
            raise ConfigError(f"epsilon_every must be >= 0 (0 = only at tau and the end), got {self.epsilon_every}")
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
        if self.modified and self.epochs < 2:
            raise ConfigError(f"--modified needs at least 2 epochs (one before and one after the switch tau); got "
                              f"epochs={self.epochs}")
        if self.modified:
            tau = self.tau_effective
            if not 1 <= tau < self.epochs:
                raise ConfigError(
                    f"tau={tau} is outside the budget: the switch must happen after epoch 1..{self.epochs - 1} "
                    f"(epochs={self.epochs}) so that both phases get at least one epoch of the same total budget"
                )
            if self.features != "auto" and self.features not in FEATURES:
                raise ConfigError(
                    f"unknown feature construction {self.features!r}; valid: auto, {', '.join(sorted(FEATURES))}"
                )
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"device must be 'cpu' or 'cuda[:i]', got {self.device!r}")
        return self
