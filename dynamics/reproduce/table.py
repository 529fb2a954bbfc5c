"""The base-vs-modified reproduction table: aggregation over seeds and its Markdown, CSV and LaTeX forms.

One row per (dataset, augmentation). For each of the base and the modified algorithm: the test error in %
(``100 * (1 - test_acc)`` of the final epoch) and the final training loss, as mean (std) over the finished
seeds, std with the n − 1 denominator (blank for a single seed). Per seed (lists aligned with ``seeds``):

* ``modified.optimality_eps``: the run certificate's ε at the end on the whole training set (ε < ½ proves
  every training point classified correctly and L_sum ≤ 2ε; None without a proven σ_min(Φ)); from the run
  folder's ``run_certificate_end.json`` when the run was recertified from its final checkpoint
  (:mod:`dynamics.reproduce.recertify`), else from its summary;
  ``modified.train_accuracies`` (eval mode, whole training set), ``modified.g_over_f_test`` (‖g‖/‖f‖ on the test
  set), ``modified.test_predictions_changed`` (fraction of test predictions that differ from the base run of the
  same seed, from the two runs' ``test_predictions.npy``; None without the base run);
* ``base.alignment_lower``: a rigorous lower bound on the base network's own alignment residual on its whole
  training set at the end (:mod:`dynamics.reproduce.base_residual`; None when skipped, with the reason in
  ``base.alignment_lower_notes``);
* ``condition.full_set_certified``: the feature construction's certificate (Φ of full row rank, proven on all
  training points) held at τ and at the end.

The residuals of the conditions on 128-point subsets are not shown: for any network with p ≫ 128·k they are
rounding noise (J has full row rank there).

Only finished runs (status ``completed``, all epochs done) enter the numbers; diverged (``nonfinite``) and
unfinished runs are counted in the notes, never averaged in silently.

>>> t = build_table([])
>>> t.rows, t.to_csv().splitlines()[0].split(",")[:3]
([], ['dataset', 'n_train', 'augment'])
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dynamics.reproduce.base_residual import read_alignment_lower
from dynamics.reproduce.recertify import read_recertified
from dynamics.reproduce.run_groups import RunRecord, group_runs
from dynamics.training.records import FinalMetrics
from dynamics.training.run_certificate import prediction_change

__all__ = ["COLUMNS_CAPTION", "GroupStats", "ConditionStats", "TableRow", "SkippedDataset", "ReproductionTable",
           "build_table", "test_error_percent", "latex_escape", "read_test_predictions"]

COLUMNS_CAPTION = (
    "Test error (%) at the last epoch and final training loss (eval mode, whole training set), mean (std) over "
    "seeds (std with the n-1 denominator), of the base algorithm and of the modified framework. Certified eps: "
    "the modified runs' run certificate at the end on the whole training set, max over seeds, and on how many "
    "seeds eps < 1/2 (which proves 100 % training accuracy and L_sum <= 2 eps); train acc: the modified runs' "
    "training accuracy (min over seeds); ||g||/||f|| test: g's share of the logits on the test set (mean over "
    "seeds); changed: test predictions that differ from the base run of the same seed (mean over seeds, %); "
    "full-set cert.: seeds on which the feature certificate (Phi of full row rank) was proven on all training "
    "points at tau and at the end. Base residual >=: a rigorous lower bound on the base network's own alignment "
    "residual on its whole training set at the end (min over seeds; '-' when skipped, reason below).")


def test_error_percent(final: FinalMetrics) -> float | None:
    """Test error in % of a run's final metrics (:attr:`FinalMetrics.test_error_percent`).

    >>> test_error_percent(FinalMetrics(test_acc=0.9925))
    0.75
    """
    return final.test_error_percent


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


@dataclass
class GroupStats:
    """Test error (%) and final training loss of one (dataset, augment, algorithm) over its finished seeds."""

    seeds: list[int]
    test_errors: list[float]
    train_losses: list[float]
    n_nonfinite: int = 0
    n_unfinished: int = 0
    paths: list[str] = field(default_factory=list)
    train_accuracies: list[float | None] = field(default_factory=list)
    optimality_eps: list[float | None] = field(default_factory=list)
    g_over_f_test: list[float | None] = field(default_factory=list)
    test_predictions_changed: list[float | None] = field(default_factory=list)
    alignment_lower: list[float | None] = field(default_factory=list)
    alignment_lower_notes: list[str | None] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def test_error_mean(self) -> float | None:
        return _mean_std(self.test_errors)[0]

    @property
    def test_error_std(self) -> float | None:
        return _mean_std(self.test_errors)[1]

    @property
    def train_loss_mean(self) -> float | None:
        return _mean_std(self.train_losses)[0]

    @property
    def train_loss_std(self) -> float | None:
        return _mean_std(self.train_losses)[1]

    @classmethod
    def from_runs(cls, runs: Iterable[RunRecord], base_predictions: dict[int, np.ndarray] | None = None,
                  ) -> GroupStats:
        """The finished runs' numbers; ``base_predictions`` ({seed: test predictions of the base run}) gives the
        modified runs' ``test_predictions_changed``."""
        seeds, errs, losses = [], [], []
        nonfinite = unfinished = 0
        stats = cls([], [], [])
        for r in runs:
            if r.status == "nonfinite":
                nonfinite += 1
                continue
            if not r.finished:
                unfinished += 1
                continue
            err, loss = r.final.test_error_percent, r.final.train_loss
            if err is None or loss is None:
                unfinished += 1
                continue
            seeds.append(r.seed)
            errs.append(err)
            losses.append(float(loss))
            stats._add_per_seed(r, base_predictions)
        stats.seeds, stats.test_errors, stats.train_losses = seeds, errs, losses
        stats.n_nonfinite, stats.n_unfinished = nonfinite, unfinished
        return stats

    def _add_per_seed(self, r: RunRecord, base_predictions: dict[int, np.ndarray] | None) -> None:
        self.paths.append(str(r.path))
        self.train_accuracies.append(r.final.train_acc)
        if r.modified:
            cert = read_recertified(r) or (r.summary.run_certificate_end if r.summary is not None else None) or {}
            self.optimality_eps.append(cert.get("epsilon_ce"))
            self.g_over_f_test.append(cert.get("g_over_f_test"))
            mine = read_test_predictions(r)
            base = (base_predictions or {}).get(r.seed)
            self.test_predictions_changed.append(None if mine is None or base is None
                                                 else prediction_change(mine, base))
        else:
            lower = read_alignment_lower(r)
            self.alignment_lower.append(None if lower is None else lower.get("lower"))
            self.alignment_lower_notes.append("not computed" if lower is None else lower.get("skipped"))

    MODIFIED_KEYS = ("optimality_eps", "g_over_f_test", "test_predictions_changed")
    BASE_KEYS = ("alignment_lower", "alignment_lower_notes")

    @property
    def modified(self) -> bool:
        """Whether these are modified runs (they carry run certificates; base runs carry the residual bound)."""
        return len(self.optimality_eps) > 0

    def to_dict(self, modified: bool | None = None) -> dict[str, Any]:
        """JSON-ready; the per-seed keys of the other algorithm are left out (``modified``: which one; default:
        inferred from the lists)."""
        modified = self.modified if modified is None else modified
        d = asdict(self)
        for key in (self.BASE_KEYS if modified else self.MODIFIED_KEYS):
            d.pop(key)
        d.update(n=self.n, test_error_mean=self.test_error_mean, test_error_std=self.test_error_std,
                 train_loss_mean=self.train_loss_mean, train_loss_std=self.train_loss_std)
        return d


def read_test_predictions(r: RunRecord) -> np.ndarray | None:
    """The run's ``test_predictions.npy`` (None when the run did not write one)."""
    path = Path(r.path) / "test_predictions.npy"
    return np.load(path) if path.is_file() else None


@dataclass
class ConditionStats:
    """The feature certificate of the finished modified runs of one (dataset, augment), per seed.

    ``full_set_certified[i]``: the certificate of seed ``seeds[i]`` (Φ of full row rank, proven on all training
    points) held at τ and at the end; ``sigma_min_lower[i]``: its proven lower bound on σ_min(Φ).
    """

    seeds: list[int] = field(default_factory=list)
    full_set_certified: list[bool] = field(default_factory=list)
    sigma_min_lower: list[float | None] = field(default_factory=list)
    certificate_methods: list[str] = field(default_factory=list)

    @property
    def n_runs(self) -> int:
        return len(self.seeds)

    @property
    def n_certified(self) -> int:
        return sum(self.full_set_certified)

    @property
    def certified(self) -> bool:
        """True iff at least one run and every run's feature certificate covered the whole training set."""
        return self.n_runs > 0 and self.n_certified == self.n_runs

    @classmethod
    def from_runs(cls, runs: Iterable[RunRecord]) -> ConditionStats:
        out = cls()
        for r in runs:
            if not r.finished:
                continue
            tau, end = r.condition("tau"), r.condition("end")
            out.seeds.append(r.seed)
            out.full_set_certified.append(all(c is not None and c.full_set_certified is True for c in (tau, end)))
            cert = r.summary.switch.certificate if r.summary is not None and r.summary.switch is not None else {}
            out.sigma_min_lower.append(cert.get("sigma_min_lower") if cert.get("holds") else None)
            for c in (tau, end):
                if c is not None and c.certificate_method is not None and c.certificate_method not in \
                        out.certificate_methods:
                    out.certificate_methods.append(c.certificate_method)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "n_runs": self.n_runs, "n_certified": self.n_certified,
                "certified": self.certified}


def _max(values: Sequence[float | None]) -> float | None:
    """Max of the values; None when any is missing (a missing certificate is never hidden) or there are none."""
    if not values or any(v is None for v in values):
        return None
    return max(values, key=lambda v: (math.isnan(v), v))  # NaN wins: a failed measurement is never hidden


def _min(values: Sequence[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return min(values)


def _mean(values: Sequence[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return statistics.fmean(values)


@dataclass
class TableRow:
    """One (dataset, augmentation) row."""

    dataset: str
    augment: bool
    n_train: int | None
    base: GroupStats
    modified: GroupStats
    condition: ConditionStats

    @property
    def eps_max(self) -> float | None:
        return _max(self.modified.optimality_eps)

    @property
    def n_eps_certified(self) -> int:
        return sum(e is not None and e < 0.5 for e in self.modified.optimality_eps)

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "augment": self.augment, "n_train": self.n_train,
                "base": self.base.to_dict(modified=False), "modified": self.modified.to_dict(modified=True),
                "condition": self.condition.to_dict()}


@dataclass
class SkippedDataset:
    """A dataset left out of the table, and why (e.g. its files were not found)."""

    dataset: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fmt_pm(mean: float | None, std: float | None, spec: str) -> str:
    if mean is None:
        return "–"
    return f"{mean:{spec}}" + ("" if std is None else f" ({std:{spec}})")


def _fmt(v: float | None, spec: str = ".1e") -> str:
    return "–" if v is None else f"{v:{spec}}"


HEADERS = ("Dataset", "# train", "Augmentation", "Base test error %", "Modified test error %", "Base train loss",
           "Modified train loss", "Certified ε (max; < ½)", "Modified train acc (min)", "‖g‖/‖f‖ test",
           "Changed predictions %", "Full-set cert.", "Base residual ≥")

CSV_FIELDS = ("dataset", "n_train", "augment", "base_test_error_mean", "base_test_error_std", "base_n",
              "modified_test_error_mean", "modified_test_error_std", "modified_n", "base_train_loss_mean",
              "base_train_loss_std", "modified_train_loss_mean", "modified_train_loss_std", "base_nonfinite",
              "modified_nonfinite", "eps_max", "n_eps_certified", "modified_train_acc_min", "g_over_f_test_mean",
              "test_predictions_changed_mean", "n_full_set_certified", "n_certificate_runs",
              "base_alignment_lower_min")


@dataclass
class ReproductionTable:
    """The reproduction table; ``str(table)`` is its Markdown form.

    Attributes:
        rows: one per (dataset, augmentation), in the paper's dataset order, without augmentation first.
        skipped: datasets that were asked for but not run, with the reason.
        caption: what the numbers are, including the preset's reductions from the paper protocol.
        notes: runs excluded from the numbers (unfinished, diverged) and why a base residual bound is missing.
    """

    rows: list[TableRow]
    skipped: list[SkippedDataset] = field(default_factory=list)
    caption: str = COLUMNS_CAPTION
    notes: list[str] = field(default_factory=list)

    def cells(self) -> list[list[str]]:
        """The displayed cells, one list of ``len(HEADERS)`` strings per row."""
        out = []
        for r in self.rows:
            c, m = r.condition, r.modified
            eps = "–" if not m.optimality_eps else \
                f"{_fmt(r.eps_max, '.1e')} ({r.n_eps_certified}/{len(m.optimality_eps)})"
            changed = _mean(m.test_predictions_changed)
            out.append([r.dataset, "–" if r.n_train is None else str(r.n_train), "yes" if r.augment else "no",
                        _fmt_pm(r.base.test_error_mean, r.base.test_error_std, ".2f"),
                        _fmt_pm(m.test_error_mean, m.test_error_std, ".2f"),
                        _fmt_pm(r.base.train_loss_mean, r.base.train_loss_std, ".1e"),
                        _fmt_pm(m.train_loss_mean, m.train_loss_std, ".1e"), eps,
                        _fmt(_min(m.train_accuracies), ".4f") if m.n else "–",
                        _fmt(_mean(m.g_over_f_test), ".2g"), _fmt(None if changed is None else 100 * changed, ".2f"),
                        f"{c.n_certified}/{c.n_runs}" if c.n_runs else "–",
                        _fmt(_min(r.base.alignment_lower), ".2e")])
        return out

    def _footer(self) -> list[str]:
        lines = [f"Skipped {s.dataset}: {s.reason}" for s in self.skipped]
        return lines + list(self.notes)

    def to_markdown(self) -> str:
        lines = [self.caption, "", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in self.cells()]
        footer = self._footer()
        if footer:
            lines += [""] + [f"- {f}" for f in footer]
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """Machine-readable numbers (empty cell = not available), one line per row, header first."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(CSV_FIELDS)
        for r in self.rows:
            c, b, m = r.condition, r.base, r.modified
            values: dict[str, Any] = {"dataset": r.dataset, "n_train": r.n_train, "augment": int(r.augment)}
            for name, g in (("base", b), ("modified", m)):
                values.update({f"{name}_test_error_mean": g.test_error_mean, f"{name}_test_error_std": g.test_error_std,
                               f"{name}_n": g.n, f"{name}_train_loss_mean": g.train_loss_mean,
                               f"{name}_train_loss_std": g.train_loss_std, f"{name}_nonfinite": g.n_nonfinite})
            values.update(eps_max=r.eps_max, n_eps_certified=r.n_eps_certified,
                          modified_train_acc_min=_min(m.train_accuracies), g_over_f_test_mean=_mean(m.g_over_f_test),
                          test_predictions_changed_mean=_mean(m.test_predictions_changed),
                          n_full_set_certified=c.n_certified, n_certificate_runs=c.n_runs,
                          base_alignment_lower_min=_min(b.alignment_lower))
            writer.writerow(["" if values[k] is None else (repr(values[k]) if isinstance(values[k], float)
                                                          else values[k]) for k in CSV_FIELDS])
        return buf.getvalue()

    def to_latex(self) -> str:
        """A ``table`` environment (plain ``tabular`` with ``\\hline``; no extra packages needed)."""
        header = [latex_escape(h).replace("ε", r"$\varepsilon$").replace("½", r"$\frac12$")
                  .replace("‖g‖/‖f‖", r"$\|g\|/\|f\|$").replace("≥", r"$\geq$") for h in HEADERS]
        lines = [r"\begin{table}[t]", r"\centering", r"\small",
                 r"\begin{tabular}{" + "l" + "r" + "c" + "r" * (len(HEADERS) - 3) + "}", r"\hline",
                 " & ".join(header) + r" \\", r"\hline"]
        for row in self.cells():
            lines.append(" & ".join(latex_escape(c).replace("–", "--") for c in row) + r" \\")
        lines += [r"\hline", r"\end{tabular}"]
        caption = self.caption + "".join(" " + f.rstrip(".") + "." for f in self._footer())
        caption = latex_escape(caption).replace("ε", r"$\varepsilon$").replace("‖", r"$\|$")
        lines += [r"\caption{" + caption + "}", r"\label{tab:reproduction}", r"\end{table}"]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {"caption": self.caption, "rows": [r.to_dict() for r in self.rows],
                "skipped": [s.to_dict() for s in self.skipped], "notes": list(self.notes)}

    def __str__(self) -> str:
        return self.to_markdown()


_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                   "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters.

    >>> latex_escape("error % of cifar_10 & #")
    'error \\\\% of cifar\\\\_10 \\\\& \\\\#'
    """
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in text)


def build_table(runs: Iterable[RunRecord], skipped: Sequence[SkippedDataset] = (),
                caption: str | None = None) -> ReproductionTable:
    """Aggregate runs (any mix of datasets, augmentation, base/modified, seeds) into the table.

    Args:
        runs: run records (e.g. from :func:`dynamics.reproduce.run_groups.discover_runs`).
        skipped: datasets not run, listed under the table with their reason.
        caption: the table caption; default: a statement of what each column is.
    """
    groups = group_runs(runs)
    keys = list(dict.fromkeys((d, a) for d, a, _ in groups))
    rows: list[TableRow] = []
    notes: list[str] = []
    for dataset, augment in keys:
        base_runs = groups.get((dataset, augment, False), [])
        mod_runs = groups.get((dataset, augment, True), [])
        n_train = next((r.n_train for r in base_runs + mod_runs if r.finished and r.n_train is not None),
                       next((r.n_train for r in base_runs + mod_runs if r.n_train is not None), None))
        base_predictions = {r.seed: p for r in base_runs if r.finished
                            for p in [read_test_predictions(r)] if p is not None}
        row = TableRow(dataset, augment, n_train, GroupStats.from_runs(base_runs),
                       GroupStats.from_runs(mod_runs, base_predictions), ConditionStats.from_runs(mod_runs))
        rows.append(row)
        for name, g in (("base", row.base), ("modified", row.modified)):
            where = f"{dataset} ({'with' if augment else 'without'} augmentation, {name})"
            if g.n_nonfinite:
                notes.append(f"{where}: {g.n_nonfinite} run(s) diverged (non-finite loss), excluded from the mean")
            if g.n_unfinished:
                notes.append(f"{where}: {g.n_unfinished} unfinished run(s) excluded")
        reasons = sorted({n for n in row.base.alignment_lower_notes if n})
        for reason in reasons:
            notes.append(f"{dataset}: base residual bound not computed: {reason}")
    return ReproductionTable(rows, list(skipped), caption if caption is not None else COLUMNS_CAPTION, notes)
