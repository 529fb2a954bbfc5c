"""The reproduction table, run loading and figures on synthetic finished runs written by hand.

Each synthetic run directory follows the run-directory contract of dynamics.training (config.json,
metrics.jsonl, summary.json); the expected numbers are computed independently with numpy here.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from dynamics.cli import report as report_cli
from dynamics.cli.report import write_figures
from dynamics.errors import InputError, RunStateError
from dynamics.reproduce.report import write_report
from dynamics.reproduce.run_groups import discover_runs, group_runs
from dynamics.reproduce.table import HEADERS, SkippedDataset, build_table
from dynamics.training.run_folder import is_finished, load_run

EPOCHS, TAU = 4, 2


def _condition(r: float, on_model: float = 1e-7, holds: bool = True, n_checked: int = 100,
               certified: bool = True) -> dict:
    return {"on_model_residual": on_model, "on_model_holds": True, "alignment_residual": r,
            "alignment_holds": holds, "certificate": "kernel positive definite", "certificate_method": "exact",
            "full_set_certified": certified, "n_checked": n_checked}


def write_run(root: Path, dataset: str, augment: bool, modified: bool, seed: int, test_acc: float,
              train_loss: float, *, status: str = "completed", epochs_done: int = EPOCHS,
              tau_cond: dict | None | str = "default", end_cond: dict | None | str = "default",
              with_summary: bool = True, extra_lines: str = "", curve_offset: float = 0.0) -> Path:
    """One synthetic run directory; epoch curves are simple functions of the seed so bands are non-trivial."""
    name = f"{dataset}-{'aug' if augment else 'noaug'}-{'modified' if modified else 'base'}-seed{seed}"
    d = root / name
    d.mkdir(parents=True)
    config = {"dataset": dataset, "model": "resnet_small", "epochs": EPOCHS, "augment": augment,
              "modified": modified, "tau": TAU if modified else None, "seed": seed, "train_subset": None}
    (d / "config.json").write_text(json.dumps(config))
    lines = [json.dumps({"type": "probe", "epoch": 0, "alignment_residual": 0.9, "kernel_distance": 0.0,
                         "on_model_residual": 1e-7})]
    for e in range(1, epochs_done + 1):
        loss = train_loss * (EPOCHS + 1 - e) + curve_offset + 0.01 * seed
        lines.append(json.dumps({"type": "epoch", "epoch": e, "phase": "modified" if modified and e > TAU else "base",
                                 "train_loss": loss, "train_acc": 0.9, "test_loss": 0.3,
                                 "test_acc": test_acc - 0.01 * (EPOCHS - e), "lr": 0.01, "epoch_time_s": 1.0,
                                 "samples_per_s": 100.0}))
        if modified and TAU < e < EPOCHS:  # the run certificate's epsilon after a phase-2 epoch
            record = json.loads(lines[-1])
            lines[-1] = json.dumps({**record, "epsilon_ce": 1.0 * (seed + 1), "eval_train_acc": 0.99})
        if e % 2 == 0:
            lines.append(json.dumps({"type": "probe", "epoch": e, "alignment_residual": 0.5 / e if not modified
                                     else 1e-9, "kernel_distance": 0.1 * e + 0.01 * seed,
                                     "on_model_residual": 1e-7}))
    (d / "metrics.jsonl").write_text("\n".join(lines) + "\n" + extra_lines)
    if with_summary:
        summary = {"config": config, "provenance": {}, "status": status, "epochs_completed": epochs_done,
                   "wall_time_s": 12.0,
                   "final": {"train_loss": train_loss, "train_acc": 0.99, "test_loss": 0.2, "test_acc": test_acc,
                             "test_error": 1 - test_acc},
                   "conditions": {"tau": (_condition(0.01 * (seed + 1)) if tau_cond == "default" else tau_cond)
                                  if modified else None,
                                  "end": (_condition(1e-8 * (seed + 1)) if end_cond == "default" else end_cond)
                                  if modified else None}}
        if modified:
            summary["framework"] = {"features": "gaussian", "scale": 1.0,  # schema 1's name of the switch
                                    "certificate": {"holds": True, "sigma_min_lower": 0.3}}
            summary["run_certificates"] = {"tau": {"epsilon_ce": 100.0 * (seed + 1), "g_over_f_test": 0.0},
                                           "end": {"epsilon_ce": 0.01 * (seed + 1), "g_over_f_test": 0.1 * (seed + 1)}}
        (d / "summary.json").write_text(json.dumps(summary))
        np.save(d / "test_predictions.npy", predictions(modified, seed))
        if not modified:
            lower = {"lower": 0.1 * (seed + 1), "skipped": None} if dataset == "mnist" else \
                {"lower": None, "skipped": "no subset can bound r from below: n·k = 10 ≤ p = 20"}
            (d / "alignment_lower.json").write_text(json.dumps(lower))
    return d


def predictions(modified: bool, seed: int) -> np.ndarray:
    """Test predictions: the base run's are i % 10; the modified run of seed s differs on its first s + 1."""
    pred = np.arange(100, dtype=np.int64) % 10
    if modified:
        pred[:seed + 1] = (pred[:seed + 1] + 1) % 10
    return pred


BASE_ACC = [0.990, 0.985, 0.9915]
MOD_ACC = [0.9905, 0.988, 0.989]
BASE_LOSS = [0.01, 0.02, 0.015]
MOD_LOSS = [1e-4, 2e-4, 4e-4]


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    for seed in range(3):
        write_run(root, "mnist", False, False, seed, BASE_ACC[seed], BASE_LOSS[seed])
        write_run(root, "mnist", False, True, seed, MOD_ACC[seed], MOD_LOSS[seed])
    for seed in range(2):
        write_run(root, "semeion", False, False, seed, 0.9, 0.05, curve_offset=0.1)
        write_run(root, "semeion", False, True, seed, 0.92, 0.001)
    return root


def test_table_mean_and_std_over_seeds_match_numpy(runs_dir):
    table = build_table(discover_runs([runs_dir]))
    assert [(r.dataset, r.augment) for r in table.rows] == [("mnist", False), ("semeion", False)]
    row = table.rows[0]
    base_err = 100 * (1 - np.array(BASE_ACC))
    mod_err = 100 * (1 - np.array(MOD_ACC))
    assert row.base.test_error_mean == pytest.approx(base_err.mean(), rel=1e-12)
    assert row.base.test_error_std == pytest.approx(base_err.std(ddof=1), rel=1e-9)
    assert row.modified.test_error_mean == pytest.approx(mod_err.mean(), rel=1e-12)
    assert row.modified.test_error_std == pytest.approx(mod_err.std(ddof=1), rel=1e-9)
    assert row.base.train_loss_mean == pytest.approx(np.mean(BASE_LOSS))
    assert row.modified.train_loss_std == pytest.approx(np.std(MOD_LOSS, ddof=1))
    assert row.n_train == 60000 and table.rows[1].n_train == 1000
    cells = table.cells()[0]
    assert cells[3] == f"{base_err.mean():.2f} ({base_err.std(ddof=1):.2f})"
    assert cells[4] == f"{mod_err.mean():.2f} ({mod_err.std(ddof=1):.2f})"
    assert cells[3] in table.to_markdown()


def test_per_seed_certificate_columns_come_from_each_run(runs_dir):
    row = build_table(discover_runs([runs_dir])).rows[0]
    assert row.modified.seeds == [0, 1, 2]
    assert row.modified.optimality_eps == pytest.approx([0.01, 0.02, 0.03])
    assert row.modified.g_over_f_test == pytest.approx([0.1, 0.2, 0.3])
    assert row.modified.train_accuracies == [0.99] * 3
    assert row.modified.test_predictions_changed == pytest.approx([0.01, 0.02, 0.03])  # s + 1 of 100 differ
    assert row.base.alignment_lower == pytest.approx([0.1, 0.2, 0.3])
    assert row.condition.full_set_certified == [True] * 3 and row.condition.certified
    assert row.condition.sigma_min_lower == [0.3] * 3
    assert row.eps_max == pytest.approx(0.03) and row.n_eps_certified == 3
    semeion = build_table(discover_runs([runs_dir])).rows[1]
    assert semeion.base.alignment_lower == [None, None]
    assert "base residual bound not computed: no subset" in build_table(discover_runs([runs_dir])).to_markdown()
    d = build_table(discover_runs([runs_dir])).to_dict()["rows"][0]
    assert "alignment_lower" in d["base"] and "optimality_eps" not in d["base"]
    assert "test_predictions_changed" in d["modified"] and "alignment_lower" not in d["modified"]


def test_changed_predictions_against_a_hand_made_pair_and_identical_control(tmp_path):
    root = tmp_path / "runs"
    base = write_run(root, "mnist", False, False, 0, 0.99, 0.01)
    mod = write_run(root, "mnist", False, True, 0, 0.99, 0.01)
    pb = np.array([0, 1, 2, 3, 4, 5, 6, 7], dtype=np.int64)
    np.save(base / "test_predictions.npy", pb)
    np.save(mod / "test_predictions.npy", np.array([0, 1, 9, 3, 4, 5, 0, 7], dtype=np.int64))  # 2 of 8 differ
    assert build_table(discover_runs([root])).rows[0].modified.test_predictions_changed == [0.25]
    np.save(mod / "test_predictions.npy", pb)  # control: identical predictions
    assert build_table(discover_runs([root])).rows[0].modified.test_predictions_changed == [0.0]
    (base / "test_predictions.npy").unlink()  # no base run predictions: unknown, never 0
    assert build_table(discover_runs([root])).rows[0].modified.test_predictions_changed == [None]


def test_one_uncertified_seed_shows_in_the_row(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "mnist", False, True, 0, 0.99, 1e-3)
    write_run(root, "mnist", False, True, 1, 0.99, 1e-3, end_cond=_condition(0.2, holds=False, certified=False))
    write_run(root, "mnist", False, True, 2, 0.99, 1e-3, tau_cond=None)  # τ check missing: not certified
    table = build_table(discover_runs([root]))
    c = table.rows[0].condition
    assert c.full_set_certified == [True, False, False] and c.n_certified == 1 and not c.certified
    assert table.cells()[0][HEADERS.index("Full-set cert.")] == "1/3"


def test_csv_parses_back_to_the_table_numbers(runs_dir):
    table = build_table(discover_runs([runs_dir]))
    rows = list(csv.DictReader(io.StringIO(table.to_csv())))
    assert len(rows) == len(table.rows) == 2
    for parsed, row in zip(rows, table.rows):
        assert parsed["dataset"] == row.dataset and int(parsed["n_train"]) == row.n_train
        assert float(parsed["base_test_error_mean"]) == row.base.test_error_mean
        assert float(parsed["modified_test_error_std"]) == row.modified.test_error_std
        assert float(parsed["modified_train_loss_mean"]) == row.modified.train_loss_mean
        assert float(parsed["eps_max"]) == row.eps_max
        assert parsed["n_full_set_certified"] == str(row.condition.n_certified) and int(parsed["base_n"]) == row.base.n


def test_single_seed_has_no_std_and_blank_csv_cell(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "semeion", True, False, 0, 0.9, 0.1)
    table = build_table(discover_runs([root]))
    assert table.rows[0].base.test_error_std is None
    assert table.cells()[0][3] == "10.00"
    parsed = next(csv.DictReader(io.StringIO(table.to_csv())))
    assert parsed["base_test_error_std"] == "" and parsed["modified_test_error_mean"] == ""
    assert parsed["augment"] == "1"


def test_latex_has_one_line_per_row_and_escapes_specials(tmp_path):
    root = tmp_path / "runs"
    for seed in range(2):
        write_run(root, "my_data", False, False, seed, 0.9, 0.1)
        write_run(root, "my_data", True, True, seed, 0.9, 0.1)
    table = build_table(discover_runs([root]), skipped=[SkippedDataset("svhn", "no file 100% missing")],
                        caption="Errors in % & losses")
    tex = table.to_latex()
    body = tex.split(r"\hline")[2]  # between the header rule and the closing rule
    assert len([ln for ln in body.splitlines() if ln.strip().endswith(r"\\")]) == len(table.rows) == 2
    assert r"my\_data" in tex and "my_data" not in tex.replace(r"my\_data", "")
    assert r"test error \%" in tex and r"Errors in \% \& losses" in tex
    cleaned = re.sub(r"\\[%&_#]", "", tex)
    assert not re.search(r"[%_#]", cleaned), cleaned
    table_lines = [ln for ln in cleaned.splitlines() if ln.endswith(r"\\")]
    assert len(table_lines) == 3 and all(ln.count("&") == len(HEADERS) - 1 for ln in table_lines)
    assert r"\begin{tabular}" in tex and tex.count("{l") == 1
    assert "svhn" in tex and r"100\% missing" in tex


def test_skipped_datasets_are_listed_with_their_reason_in_every_format(runs_dir):
    reason = "kmnist: none of ['train-images-idx3-ubyte.gz'] found in /nowhere/kmnist"
    table = build_table(discover_runs([runs_dir]), skipped=[SkippedDataset("kmnist", reason)])
    assert f"Skipped kmnist: {reason}" in table.to_markdown()
    assert table.to_dict()["skipped"] == [{"dataset": "kmnist", "reason": reason}]
    assert "kmnist" in table.to_latex()


def test_diverged_and_unfinished_runs_are_excluded_and_noted(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "mnist", False, False, 0, 0.99, 0.01)
    write_run(root, "mnist", False, False, 1, 0.10, float("nan"), status="nonfinite", epochs_done=2)
    write_run(root, "mnist", False, False, 2, 0.50, 0.5, epochs_done=2, with_summary=False)
    write_run(root, "mnist", False, False, 3, 0.50, 0.5, epochs_done=3)  # summary says 3 of 4 epochs
    table = build_table(discover_runs([root]))
    base = table.rows[0].base
    assert base.seeds == [0] and base.n_nonfinite == 1 and base.n_unfinished == 2
    assert base.test_error_mean == pytest.approx(1.0)
    text = table.to_markdown()
    assert "1 run(s) diverged" in text and "2 unfinished run(s) excluded" in text


def test_partial_trailing_line_of_metrics_is_ignored(tmp_path):
    d = write_run(tmp_path, "mnist", False, False, 0, 0.99, 0.01, extra_lines='{"type": "epoch", "epo')
    r = load_run(d)
    assert [e.epoch for e in r.epochs] == [1, 2, 3, 4] and r.finished


def test_damaged_line_in_the_middle_of_metrics_raises_run_state_error(tmp_path):
    d = write_run(tmp_path, "mnist", False, False, 0, 0.99, 0.01)
    text = (d / "metrics.jsonl").read_text().splitlines()
    text[2] = text[2][:10]
    (d / "metrics.jsonl").write_text("\n".join(text) + "\n")
    with pytest.raises(RunStateError, match="line 3"):
        load_run(d)
    assert not is_finished(d)


def test_repeated_epoch_records_of_a_resumed_run_keep_the_last(tmp_path):
    again = json.dumps({"type": "epoch", "epoch": 2, "train_loss": 123.0, "test_acc": 0.5}) + "\n"
    d = write_run(tmp_path, "mnist", False, False, 0, 0.99, 0.01, extra_lines=again)
    r = load_run(d)
    assert [e.epoch for e in r.epochs] == [1, 2, 3, 4]
    assert r.curve("running_train_loss")[1][1] == 123.0 and r.curve("test_error")[1][1] == pytest.approx(50.0)


def test_two_runs_with_the_same_seed_in_one_group_raise(tmp_path):
    write_run(tmp_path / "a", "mnist", False, False, 0, 0.99, 0.01)
    write_run(tmp_path / "b", "mnist", False, False, 0, 0.98, 0.01)
    with pytest.raises(RunStateError, match="seed 0"):
        group_runs(discover_runs([tmp_path]))


def test_discover_runs_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        discover_runs([tmp_path / "nope"])
    with pytest.raises(RunStateError, match="no run directories"):
        discover_runs([tmp_path])
    with pytest.raises(RunStateError, match="no config.json"):
        load_run(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(RunStateError, match="not a JSON object"):
        load_run(tmp_path)


def test_write_report_writes_tables_and_non_empty_png_figures(runs_dir, tmp_path):
    out = tmp_path / "report"
    table = write_report(discover_runs([runs_dir]), out, skipped=[SkippedDataset("svhn", "missing")],
                         figures=write_figures)
    for name in ("table.md", "table.csv", "table.tex", "table.json"):
        assert (out / name).stat().st_size > 0
    assert (out / "table.md").read_text() == table.to_markdown()
    data = json.loads((out / "table.json").read_text())
    assert len(data["rows"]) == 2 and len(data["runs"]) == 10 and "provenance" in data
    for name in ("training_curves.png", "conditions_over_training.png"):
        png = (out / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_training_curves_figure_has_a_row_per_group_and_marks_tau(runs_dir):
    from figures import conditions_over_training, training_curves

    runs = discover_runs([runs_dir])
    fig = training_curves.plot(runs)
    axes = fig.get_axes()
    assert len(axes) == 4  # (mnist, semeion) x (loss, error)
    ax_loss = axes[0]
    assert ax_loss.get_yscale() == "log"
    vertical = [ln for ln in ax_loss.get_lines() if list(ln.get_xdata()) == [TAU, TAU]]
    assert len(vertical) == 1
    # the mean line of the base runs is the mean over the three seeds at each epoch
    base_line = next(ln for ln in ax_loss.get_lines() if ln.get_label().startswith("base"))
    expected = [np.mean([BASE_LOSS[s] * (EPOCHS + 1 - e) + 0.01 * s for s in range(3)]) for e in range(1, 5)]
    np.testing.assert_allclose(base_line.get_ydata(), expected)
    assert len(ax_loss.collections) == 2  # one min-max band per algorithm
    fig2 = conditions_over_training.plot(runs)
    assert len(fig2.get_axes()) == 4
    eps_line = next(ln for ln in fig2.get_axes()[0].get_lines() if ln.get_label().startswith("modified"))
    assert list(eps_line.get_xdata()) == [TAU, 3, EPOCHS]  # at tau, after epoch 3, at the end
    geo = [np.exp(np.mean(np.log([v * (s + 1) for s in range(3)]))) for v in (100.0, 1.0, 0.01)]
    np.testing.assert_allclose(eps_line.get_ydata(), geo)
    assert fig2.get_axes()[0].get_yscale() == "log"


def test_figures_refuse_runs_without_records(tmp_path):
    from figures import conditions_over_training, training_curves

    d = tmp_path / "r"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"dataset": "mnist", "epochs": 2, "seed": 0}))
    runs = discover_runs([d])
    with pytest.raises(InputError, match="epoch record"):
        training_curves.plot(runs)
    with pytest.raises(InputError, match="run certificate epsilon"):
        conditions_over_training.plot(runs)


def test_report_command_rebuilds_the_table_from_run_dirs(runs_dir, tmp_path, capsys):
    from figures import training_curves


    parser = argparse.ArgumentParser()
    report_cli.add_arguments(parser)
    out = tmp_path / "rep"
    assert report_cli.run(parser.parse_args([str(runs_dir), "--out", str(out), "--no-figures"])) == 0
    printed = capsys.readouterr().out
    assert "| mnist | 60000 | no |" in printed and "3.0e-02 (3/3)" in printed and "10 runs read" in printed
    assert (out / "table.csv").exists() and not (out / "training_curves.png").exists()
    args = parser.parse_args([str(runs_dir), "--out", str(out), "--no-figures", "--preset", "cpu"])
    assert report_cli.run(args) == 0
    assert "3 seeds instead of 5" in (out / "table.md").read_text()
    png = tmp_path / "curves.png"
    assert training_curves.main([str(runs_dir), "--out", str(png)]) == 0 and png.stat().st_size > 5000
