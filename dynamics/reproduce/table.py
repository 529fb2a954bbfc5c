"""The base-vs-modified reproduction table: aggregation over seeds and its Markdown, CSV and LaTeX forms.

One row per (dataset, augmentation). For each of the base and the modified algorithm: the test error in %
(``100 * (1 - test_acc)`` of the final epoch) and the final training loss, as mean (std) over the finished
seeds, std with the n − 1 denominator (blank for a single seed). The condition columns come from the
modified runs' summaries: the alignment residual r = ‖(I − P)Y‖/‖Y‖ at the switch τ and at the end (max over
seeds), the on-model residual (max over seeds and over both checks), and "yes (k/n)" when the on-model
structure and the alignment condition held at τ and at the end on all n seeds.

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
from typing import Any

from dynamics.reproduce.run_groups import RunRecord, group_runs
from dynamics.training.records import FinalMetrics

__all__ = ["COLUMNS_CAPTION", "GroupStats", "ConditionStats", "TableRow", "SkippedDataset", "ReproductionTable",
           "build_table", "test_error_percent", "latex_escape"]

COLUMNS_CAPTION = (
    "Test error (%) at the last epoch and final training loss, mean (std) over seeds (std with the n-1 "
    "denominator), of the base algorithm and of the modified framework. Condition verified 'yes (k/s, n = m, "
    "cert.)': the on-model structure and the alignment condition held at the switch tau and at the end on k of s "
    "seeds, measured on m training points (min over seeds); 'cert.': the feature construction's certificate also "
    "covered the whole training set on every seed. r: alignment residual ||(I-P)Y||/||Y|| of the modified model "
    "on those points at tau and at the end (max over seeds); on-model residual: ||f_X - J_S theta_S||/||f_X|| "
    "(max over seeds and both checks).")


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
    def from_runs(cls, runs: Iterable[RunRecord]) -> GroupStats:
        seeds, errs, losses = [], [], []
        nonfinite = unfinished = 0
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
        return cls(seeds, errs, losses, nonfinite, unfinished)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(n=self.n, test_error_mean=self.test_error_mean, test_error_std=self.test_error_std,
                 train_loss_mean=self.train_loss_mean, train_loss_std=self.train_loss_std)
        return d


@dataclass
class ConditionStats:
    """The condition checks recorded by the finished modified runs of one (dataset, augment)."""

    n_runs: int
    n_verified: int
    r_tau_max: float | None
    r_end_max: float | None
    on_model_residual_max: float | None
    n_checked_min: int | None
    n_certified: int = 0
    certificate_methods: list[str] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        """True iff at least one run was checked and every run passed at τ and at the end."""
        return self.n_runs > 0 and self.n_verified == self.n_runs

    @property
    def certified(self) -> bool:
        """True iff every run's feature certificate covered the whole training set at τ and at the end."""
        return self.n_runs > 0 and self.n_certified == self.n_runs

    @classmethod
    def from_runs(cls, runs: Iterable[RunRecord]) -> ConditionStats:
        n = ok = certified = 0
        r_tau: list[float] = []
        r_end: list[float] = []
        on_model: list[float] = []
        checked: list[int] = []
        methods: list[str] = []
        for r in runs:
            if not r.finished:
                continue
            n += 1
            tau, end = r.condition("tau"), r.condition("end")
            passed = tau is not None and end is not None and tau.holds and end.holds
            certified += all(c is not None and c.full_set_certified is True for c in (tau, end))
            for c, bucket in ((tau, r_tau), (end, r_end)):
                if c is None:
                    continue
                bucket.append(c.alignment_residual)
                on_model.append(c.on_model_residual)
                checked.append(c.n_checked)
                if c.certificate_method is not None and c.certificate_method not in methods:
                    methods.append(c.certificate_method)
            ok += passed
        return cls(n, ok, _max(r_tau), _max(r_end), _max(on_model), min(checked) if checked else None,
                   certified, methods)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verified": self.verified, "certified": self.certified}


def _max(values: list[float]) -> float | None:
    if not values:
        return None
    return max(values, key=lambda v: (math.isnan(v), v))  # NaN wins: a failed measurement is never hidden


@dataclass
class TableRow:
    """One (dataset, augmentation) row."""

    dataset: str
    augment: bool
    n_train: int | None
    base: GroupStats
    modified: GroupStats
    condition: ConditionStats

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "augment": self.augment, "n_train": self.n_train,
                "base": self.base.to_dict(), "modified": self.modified.to_dict(),
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


HEADERS = ("Dataset", "# train", "Condition verified", "r at τ", "r at end", "On-model residual",
           "Augmentation", "Base test error %", "Modified test error %", "Base train loss", "Modified train loss")

CSV_FIELDS = ("dataset", "n_train", "augment", "verified", "n_verified", "n_checked_runs", "r_tau_max",
              "r_end_max", "on_model_residual_max", "n_checked_min", "n_certified", "base_test_error_mean",
              "base_test_error_std", "base_n", "modified_test_error_mean", "modified_test_error_std", "modified_n",
              "base_train_loss_mean", "base_train_loss_std", "modified_train_loss_mean",
              "modified_train_loss_std", "base_nonfinite", "modified_nonfinite")


@dataclass
class ReproductionTable:
    """The reproduction table; ``str(table)`` is its Markdown form.

    Attributes:
        rows: one per (dataset, augmentation), in the paper's dataset order, without augmentation first.
        skipped: datasets that were asked for but not run, with the reason.
        caption: what the numbers are, including the preset's reductions from the paper protocol.
        notes: runs excluded from the numbers (unfinished, diverged).
    """

    rows: list[TableRow]
    skipped: list[SkippedDataset] = field(default_factory=list)
    caption: str = COLUMNS_CAPTION
    notes: list[str] = field(default_factory=list)

    def cells(self) -> list[list[str]]:
        """The displayed cells, one list of ``len(HEADERS)`` strings per row."""
        out = []
        for r in self.rows:
            c = r.condition
            verified = "–"
            if c.n_runs:
                details = [f"{c.n_verified}/{c.n_runs}"] + ([] if c.n_checked_min is None else
                                                             [f"n = {c.n_checked_min}"])
                details += ["cert."] if c.certified else []
                verified = f"{'yes' if c.verified else 'no'} ({', '.join(details)})"
            out.append([r.dataset, "–" if r.n_train is None else str(r.n_train), verified, _fmt(c.r_tau_max),
                        _fmt(c.r_end_max), _fmt(c.on_model_residual_max), "yes" if r.augment else "no",
                        _fmt_pm(r.base.test_error_mean, r.base.test_error_std, ".2f"),
                        _fmt_pm(r.modified.test_error_mean, r.modified.test_error_std, ".2f"),
                        _fmt_pm(r.base.train_loss_mean, r.base.train_loss_std, ".1e"),
                        _fmt_pm(r.modified.train_loss_mean, r.modified.train_loss_std, ".1e")])
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
            values = {"dataset": r.dataset, "n_train": r.n_train, "augment": int(r.augment),
                      "verified": int(c.verified), "n_verified": c.n_verified, "n_checked_runs": c.n_runs,
                      "r_tau_max": c.r_tau_max, "r_end_max": c.r_end_max,
                      "on_model_residual_max": c.on_model_residual_max, "n_checked_min": c.n_checked_min,
                      "n_certified": c.n_certified}
            for name, g in (("base", b), ("modified", m)):
                values.update({f"{name}_test_error_mean": g.test_error_mean, f"{name}_test_error_std": g.test_error_std,
                               f"{name}_n": g.n, f"{name}_train_loss_mean": g.train_loss_mean,
                               f"{name}_train_loss_std": g.train_loss_std, f"{name}_nonfinite": g.n_nonfinite})
            writer.writerow(["" if values[k] is None else (repr(values[k]) if isinstance(values[k], float)
                                                          else values[k]) for k in CSV_FIELDS])
        return buf.getvalue()

    def to_latex(self) -> str:
        """A ``table`` environment (plain ``tabular`` with ``\\hline``; no extra packages needed)."""
        header = [latex_escape(h).replace("τ", r"$\tau$") for h in HEADERS]
        lines = [r"\begin{table}[t]", r"\centering", r"\small",
                 r"\begin{tabular}{" + "l" + "r" * 1 + "c" + "r" * 3 + "c" + "r" * 4 + "}", r"\hline",
                 " & ".join(header) + r" \\", r"\hline"]
        for row in self.cells():
            lines.append(" & ".join(latex_escape(c).replace("–", "--") for c in row) + r" \\")
        lines += [r"\hline", r"\end{tabular}"]
        caption = self.caption + "".join(" " + f.rstrip(".") + "." for f in self._footer())
        lines += [r"\caption{" + latex_escape(caption) + "}", r"\label{tab:reproduction}", r"\end{table}"]
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
        row = TableRow(dataset, augment, n_train, GroupStats.from_runs(base_runs), GroupStats.from_runs(mod_runs),
                       ConditionStats.from_runs(mod_runs))
        rows.append(row)
        for name, g in (("base", row.base), ("modified", row.modified)):
            where = f"{dataset} ({'with' if augment else 'without'} augmentation, {name})"
            if g.n_nonfinite:
                notes.append(f"{where}: {g.n_nonfinite} run(s) diverged (non-finite loss), excluded from the mean")
            if g.n_unfinished:
                notes.append(f"{where}: {g.n_unfinished} unfinished run(s) excluded")
    return ReproductionTable(rows, list(skipped), caption if caption is not None else COLUMNS_CAPTION, notes)
