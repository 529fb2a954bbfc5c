"""The typed run record: what a training run writes and what every reader reads, one dataclass per file part.

A run folder (see :mod:`dynamics.training.run_folder`) holds

* ``config.json`` -- a :class:`ConfigSnapshot` (the :class:`~dynamics.training.config.TrainConfig` and the
  schema version);
* ``metrics.jsonl`` -- one :class:`EpochRecord` or :class:`ProbeRecord` per line;
* ``summary.json`` -- a :class:`RunSummary` (final metrics, the :class:`SwitchRecord` of a modified run with its
  effective switch epoch, the :class:`ConditionCheck` at τ and at the end, provenance, times, status).

The writer (the training loop) builds these objects and calls ``to_dict``; readers (``dynamics.reproduce``,
``figures``) call ``from_dict`` and use the fields and properties, so a rule such as "the conditions held" is
written once, here (:attr:`ConditionCheck.holds`). Every file carries the schema version
(:data:`SCHEMA_VERSION`); files of schema 1 (written before the version existed: no ``schema`` key) are read
through a documented conversion, anything else raises :class:`RecordSchemaError` naming the schema found.

Two different "training loss" values exist and carry different names: ``running_train_loss`` in each epoch
record (the mean over the epoch's samples of the loss at the parameters of each step, in train mode, as the
steps saw them) and ``train_loss`` in :class:`FinalMetrics` (eval mode, whole training set, final parameters).

>>> e = EpochRecord(epoch=1, phase="base", running_train_loss=0.5, running_train_acc=0.75, lr=0.1)
>>> EpochRecord.from_dict(e.to_dict()) == e
True
>>> ConditionCheck.from_dict({"on_model_residual": 0.0, "on_model_holds": True, "alignment_residual": 1e-9,
...                           "alignment_holds": True, "n_checked": 8}).holds
True
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from dynamics.errors import RunStateError
from dynamics.training.config import TrainConfig

__all__ = ["SCHEMA_VERSION", "RecordSchemaError", "ConfigSnapshot", "EpochRecord", "ProbeRecord", "SwitchRecord",
           "ConditionCheck", "FinalMetrics", "RunSummary", "metrics_record_from_dict", "schema_of"]

#: the version of the run-record format written by this code; 1 = the unversioned format before it
SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)


class RecordSchemaError(RunStateError):
    """A run file has a schema this version cannot read, or is missing a field its schema requires."""


def schema_of(d: dict[str, Any], what: str) -> int:
    """The schema version of a record dict (1 when it has no ``schema`` key); refuse unreadable ones.

    >>> schema_of({"a": 1}, "config.json"), schema_of({"schema": 2}, "config.json")
    (1, 2)
    """
    s = d.get("schema", 1)
    if not isinstance(s, int) or isinstance(s, bool) or s not in READABLE_SCHEMAS:
        raise RecordSchemaError(f"{what} has run-record schema {s!r}; this version reads schemas "
                                f"{', '.join(map(str, READABLE_SCHEMAS))}: read it with the version that wrote it, "
                                "or rerun the training")
    return s


def _require(d: dict[str, Any], keys: tuple[str, ...], what: str) -> None:
    missing = [k for k in keys if k not in d]
    if missing:
        raise RecordSchemaError(f"{what} lacks the field(s) {missing} (schema {d.get('schema', 1)}); the file is "
                                "damaged or was written by another program")


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


@dataclass
class ConfigSnapshot:
    """``config.json``: the configuration a run was started with.

    >>> s = ConfigSnapshot(TrainConfig(epochs=3))
    >>> ConfigSnapshot.from_dict(s.to_dict()).config.epochs, ConfigSnapshot.from_dict({"epochs": 3}).schema
    (3, 1)
    """

    config: TrainConfig
    schema: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA_VERSION, "config": self.config.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any], what: str = "config.json") -> ConfigSnapshot:
        """Schema 2: ``{"schema": 2, "config": {...}}``; schema 1: the TrainConfig fields at the top level."""
        schema = schema_of(d, what)
        fields = d if schema == 1 else d.get("config")
        if not isinstance(fields, dict):
            raise RecordSchemaError(f"{what} (schema {schema}) has no 'config' object")
        return cls(TrainConfig.from_dict(fields), schema)


@dataclass
class EpochRecord:
    """One ``{"type": "epoch"}`` line of ``metrics.jsonl`` (``epoch`` is 1-based: epochs completed).

    ``running_train_loss`` / ``running_train_acc``: mean over the epoch's samples of the loss / accuracy at the
    parameters of each step, in train mode. ``test_loss`` / ``test_acc``: eval mode on the whole test set at the
    end of the epoch (``None`` on epochs without evaluation). ``lr``: the network's learning rate (a per-step
    schedule: at the epoch's first step); ``zeta_lr``: ζ's after the switch (None before); ``loss``: the loss
    minimised in this epoch (``ce`` | ``mse``). ``epsilon_ce`` / ``eval_train_acc`` / ``epsilon_time_s``: the run
    certificate's ε, the eval-mode training accuracy on the whole training set, and the seconds they took, on
    the phase-2 epochs selected by ``epsilon_every`` (None elsewhere; ε None without a proven σ_min).
    """

    epoch: int
    phase: str
    running_train_loss: float
    running_train_acc: float
    lr: float
    test_loss: float | None = None
    test_acc: float | None = None
    epoch_time_s: float = 0.0
    samples_per_s: float = 0.0
    zeta_lr: float | None = None
    loss: str | None = None
    epsilon_ce: float | None = None
    eval_train_acc: float | None = None
    epsilon_time_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"type": "epoch", **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], schema: int = SCHEMA_VERSION) -> EpochRecord:
        d = {k: v for k, v in d.items() if k != "type"}
        if schema == 1:  # schema 1 called the running means train_loss / train_acc
            d["running_train_loss"], d["running_train_acc"] = d.pop("train_loss", None), d.pop("train_acc", None)
        _require(d, ("epoch", "running_train_loss", "running_train_acc"), "an epoch record")
        names = {f.name for f in dataclasses.fields(cls)}
        d.setdefault("phase", "base")
        d.setdefault("lr", float("nan"))
        return cls(**{k: v for k, v in d.items() if k in names})

    def __str__(self) -> str:
        test = "" if self.test_acc is None else f", test loss {self.test_loss:.4g} acc {self.test_acc:.4f}"
        return (f"epoch {self.epoch} ({self.phase}): running train loss {self.running_train_loss:.4g} "
                f"acc {self.running_train_acc:.4f}{test}, lr {self.lr:.3g}, {self.epoch_time_s:.2f} s")


@dataclass
class ProbeRecord:
    """One ``{"type": "probe"}`` line: the measurements of :class:`dynamics.training.probes.Probe` at ``epoch``
    (0 = before training), kept as the probe wrote them (``values``: alignment_residual, kernel_distance, ...)."""

    epoch: int
    values: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "probe", "epoch": self.epoch, **self.values}

    @classmethod
    def from_dict(cls, d: dict[str, Any], schema: int = SCHEMA_VERSION) -> ProbeRecord:
        _require(d, ("epoch",), "a probe record")
        return cls(int(d["epoch"]), {k: v for k, v in d.items() if k not in ("type", "epoch")})


def metrics_record_from_dict(d: dict[str, Any], schema: int = SCHEMA_VERSION) -> EpochRecord | ProbeRecord:
    """The typed record of one ``metrics.jsonl`` line (by its ``type``)."""
    kind = d.get("type")
    if kind == "epoch":
        return EpochRecord.from_dict(d, schema)
    if kind == "probe":
        return ProbeRecord.from_dict(d, schema)
    raise RecordSchemaError(f"a metrics record has type {kind!r}; expected 'epoch' or 'probe'")


@dataclass
class SwitchRecord:
    """The switch of a modified run: the effective switch epoch τ (``tau_effective``: the configured ``tau``, or
    the default the configuration chose), the feature construction of g, its scale, and its certificate (the
    dict the feature construction wrote, kept as written). ``details``: the rest of what the switch recorded."""

    tau_effective: int
    features: str
    scale: float
    certificate: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"tau_effective": self.tau_effective, "features": self.features, "scale": self.scale,
                "certificate": dict(self.certificate), **self.details}

    @classmethod
    def from_switch_info(cls, tau: int, info: dict[str, Any]) -> SwitchRecord:
        """From the record :func:`dynamics.training.framework.switch` returns, at epoch ``tau``."""
        _require(info, ("features", "scale", "certificate"), "the switch record")
        rest = {k: v for k, v in info.items() if k not in ("features", "scale", "certificate", "tau_effective")}
        return cls(int(tau), str(info["features"]), float(info["scale"]), dict(info["certificate"]), rest)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SwitchRecord:
        _require(d, ("tau_effective",), "the switch record")
        return cls.from_switch_info(int(d["tau_effective"]), d)


@dataclass
class ConditionCheck:
    """The conditions checked at τ or at the end (:func:`dynamics.training.certification.check_conditions`).

    ``details`` keeps everything else the check recorded (rank, bn_mode, full_set_lsqr, times, ...).
    """

    on_model_residual: float
    on_model_holds: bool
    alignment_residual: float
    alignment_holds: bool
    n_checked: int
    full_set_certified: bool | None = None
    certificate: str | None = None
    certificate_method: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    _KEYS = ("on_model_residual", "on_model_holds", "alignment_residual", "alignment_holds", "n_checked",
             "full_set_certified", "certificate", "certificate_method")

    @property
    def holds(self) -> bool:
        """Both the on-model structure and the alignment condition held on the checked points."""
        return bool(self.on_model_holds) and bool(self.alignment_holds)

    def to_dict(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in self._KEYS}, **self.details}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConditionCheck:
        _require(d, cls._KEYS[:5], "a condition check")
        rest = {k: v for k, v in d.items() if k not in cls._KEYS}
        return cls(float(d["on_model_residual"]), bool(d["on_model_holds"]), float(d["alignment_residual"]),
                   bool(d["alignment_holds"]), int(d["n_checked"]), d.get("full_set_certified"),
                   d.get("certificate"), d.get("certificate_method"), rest)


@dataclass
class FinalMetrics:
    """The summary's final metrics: train AND test evaluated in eval mode on the whole sets at the final
    parameters (``train_loss`` here is not the running mean of :class:`EpochRecord`); ``None`` when the run did
    not complete. ``test_error`` = 1 − ``test_acc`` (a fraction)."""

    train_loss: float | None = None
    train_acc: float | None = None
    test_loss: float | None = None
    test_acc: float | None = None

    @property
    def test_error(self) -> float | None:
        return None if self.test_acc is None else 1.0 - self.test_acc

    @property
    def test_error_percent(self) -> float | None:
        """Test error in % (rounded to 10 decimals so that 0.9925 gives 0.75 exactly)."""
        return None if self.test_acc is None else round(100.0 * (1.0 - float(self.test_acc)), 10)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "test_error": self.test_error}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FinalMetrics:
        return cls(*(_opt_float(d.get(k)) for k in ("train_loss", "train_acc", "test_loss", "test_acc")))


@dataclass
class RunSummary:
    """``summary.json``: how a run ended.

    ``status``: ``"completed"`` or ``"nonfinite"`` (the loss became NaN/inf; ``error`` says where).
    ``switch``: the :class:`SwitchRecord` of a modified run that reached τ, else ``None``.
    ``n_train`` / ``n_test``: the sizes actually trained / tested on (after ``train_subset``).
    ``run_certificate_tau`` / ``_end``: the run certificates of a modified run (the dicts of
    :class:`dynamics.training.run_certificate.RunCertificate`, kept as written).
    ``threads``: ``{"threads": n, "reason": ...}``, the torch threads the run used and why
    (:func:`dynamics.training.threads.resolve_threads`); None in runs written before it was recorded.
    """

    config: TrainConfig
    status: str
    epochs_completed: int
    final: FinalMetrics
    n_train: int | None = None
    n_test: int | None = None
    switch: SwitchRecord | None = None
    conditions_tau: ConditionCheck | None = None
    conditions_end: ConditionCheck | None = None
    run_certificate_tau: dict[str, Any] | None = None
    run_certificate_end: dict[str, Any] | None = None
    zeta: dict[str, Any] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    wall_time_s: float = 0.0
    train_time_s: float = 0.0
    probe_time_s: float = 0.0
    error: str | None = None
    loss_definition: str = ""
    threads: dict[str, Any] | None = None
    schema: int = SCHEMA_VERSION

    @property
    def finished(self) -> bool:
        """Completed, with every configured epoch run."""
        return self.status == "completed" and self.epochs_completed == self.config.epochs

    @property
    def probe_fraction(self) -> float:
        return self.probe_time_s / self.wall_time_s if self.wall_time_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION, "config": self.config.to_dict(), "status": self.status,
            "epochs_completed": self.epochs_completed, "error": self.error, "final": self.final.to_dict(),
            "n_train": self.n_train, "n_test": self.n_test,
            "switch": None if self.switch is None else self.switch.to_dict(),
            "conditions": {"tau": None if self.conditions_tau is None else self.conditions_tau.to_dict(),
                           "end": None if self.conditions_end is None else self.conditions_end.to_dict()},
            "run_certificates": {"tau": self.run_certificate_tau, "end": self.run_certificate_end},
            "zeta": self.zeta, "provenance": self.provenance, "wall_time_s": self.wall_time_s,
            "train_time_s": self.train_time_s, "probe_time_s": self.probe_time_s,
            "probe_fraction": self.probe_fraction, "loss_definition": self.loss_definition,
            "threads": self.threads,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], what: str = "summary.json") -> RunSummary:
        """Schema 2 as written by :meth:`to_dict`; schema 1 (no ``schema`` key) converted: its ``framework`` is
        the switch record, whose τ is the configuration's effective τ."""
        schema = schema_of(d, what)
        _require(d, ("config", "status", "epochs_completed", "final"), what)
        config = TrainConfig.from_dict(d["config"])
        conds = d.get("conditions") or {}
        check = lambda c: None if c is None else ConditionCheck.from_dict(c)  # noqa: E731
        if schema == 1:
            info = d.get("framework")
            switch = None if info is None else SwitchRecord.from_switch_info(config.tau_effective, info)
        else:
            switch = None if d.get("switch") is None else SwitchRecord.from_dict(d["switch"])
        return cls(config=config, status=str(d["status"]), epochs_completed=int(d["epochs_completed"]),
                   final=FinalMetrics.from_dict(d.get("final") or {}), n_train=d.get("n_train"),
                   n_test=d.get("n_test"), switch=switch, conditions_tau=check(conds.get("tau")),
                   conditions_end=check(conds.get("end")),
                   run_certificate_tau=(d.get("run_certificates") or {}).get("tau"),
                   run_certificate_end=(d.get("run_certificates") or {}).get("end"), zeta=d.get("zeta"), provenance=d.get("provenance") or {},
                   wall_time_s=float(d.get("wall_time_s", 0.0)), train_time_s=float(d.get("train_time_s", 0.0)),
                   probe_time_s=float(d.get("probe_time_s", 0.0)), error=d.get("error"),
                   loss_definition=str(d.get("loss_definition", "")), threads=d.get("threads"), schema=schema)
