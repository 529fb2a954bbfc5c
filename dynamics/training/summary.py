"""The summary of a run (``summary.json``): final metrics at the final parameters, the conditions at the end.

The final train and test metrics are evaluated in eval mode on the whole sets at the final parameters; they are
not the running means of the epoch records (:mod:`dynamics.training.records` names the two differently).
"""

from __future__ import annotations

from dynamics.provenance import provenance
from dynamics.training.records import ConditionCheck, FinalMetrics, RunSummary
from dynamics.training.certification import check_conditions
from dynamics.training.determinism import rng_untouched
from dynamics.training.evaluation import LOSS_DEFINITIONS, evaluate
from dynamics.training.run_certificate import run_certificate
from dynamics.training.run_state import RunState

__all__ = ["build_summary"]


def build_summary(run: RunState, status: str, error: str | None, wall_time_s: float,
                  threads: dict | None = None) -> RunSummary:
    """The :class:`RunSummary` of ``run`` ending with ``status`` (``"completed"`` evaluates and checks the end);
    ``threads``: the torch threads used and why (recorded as given)."""
    cfg, d = run.cfg, run.data
    final, conditions_end, run_cert_end = FinalMetrics(), None, None
    if status == "completed":
        train_loss, train_acc = evaluate(run.model, d.x_train, d.y_train, run.loss, indexed=run.indexed)
        test_loss, test_acc = evaluate(run.model, d.x_test, d.y_test, run.loss)
        final = FinalMetrics(train_loss, train_acc, test_loss, test_acc)
        # the representation is frozen after the switch, so the feature certificate at the end is the one at tau
        cert = None if run.switch is None else run.switch.certificate
        with rng_untouched():
            conditions_end = ConditionCheck.from_dict(check_conditions(
                run.model, d.x_train, d.y_train, d.num_classes, cfg.check_size, cfg.seed, cert, cfg.full_check))
            if run.switch is not None:
                run.model.cache_training_features(d.x_train)  # present unless g read augmented images
                run_cert_end = run_certificate(run.model, d.x_train, d.y_train, d.x_test, d.y_test, cert, "end",
                                               loss=run.loss).to_dict()
    return RunSummary(
        config=cfg, status=status, epochs_completed=run.epoch, final=final, n_train=d.n_train, n_test=d.n_test,
        switch=run.switch, conditions_tau=run.conditions_tau, conditions_end=conditions_end,
        run_certificate_tau=run.run_certificate_tau, run_certificate_end=run_cert_end,
        zeta={"lr": cfg.lr, "weight_decay": cfg.zeta_weight_decay} if run.switch is not None else None,
        provenance=provenance(seed=cfg.seed, world_size=run.ctx.world_size, deterministic=cfg.device == "cpu"),
        wall_time_s=wall_time_s, train_time_s=run.train_time_s,
        probe_time_s=run.probe.total_time_s if run.probe else 0.0, error=error, threads=threads,
        loss_definition=LOSS_DEFINITIONS[run.loss] + ("" if run.loss == cfg.loss else
                                                       f" (after the switch; {LOSS_DEFINITIONS[cfg.loss]} before)"))
