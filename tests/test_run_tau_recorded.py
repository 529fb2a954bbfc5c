"""Issue 9's bug: `dynamics train --modified` without `--tau` records the effective switch epoch, and the report
draws the τ line from it (it used to read the raw `tau` of config.json, None, and drew no line)."""

from __future__ import annotations

import json
from pathlib import Path

from dynamics.cli import main
from dynamics.reproduce.run_groups import discover_runs
from dynamics.training.run_folder import load_run
from figures import training_curves

TRAIN = ["train", "--dataset", "blobs", "--model", "mlp", "--model-options", '{"width": 8, "depth": 1}',
         "--epochs", "5", "--batch-size", "16", "--check-size", "8", "--no-progress"]


def _tau_lines(fig) -> set[float]:
    return {ln.get_xdata()[0] for ax in fig.get_axes() for ln in ax.get_lines()
            if len(ln.get_xdata()) == 2 and ln.get_xdata()[0] == ln.get_xdata()[1] and ln.get_linestyle() == "--"}


def test_modified_without_tau_records_the_effective_switch_and_the_report_draws_it(tmp_path, capsys):
    run = tmp_path / "runs" / "mod"
    assert main([*TRAIN, "--modified", "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())["config"]
    summary = json.loads((run / "summary.json").read_text())
    assert config["tau"] is None and summary["switch"]["tau_effective"] == 2  # epochs // 2
    phases = [json.loads(line)["phase"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert phases == ["base", "base", "modified", "modified", "modified"]
    assert load_run(run).tau == 2
    assert _tau_lines(training_curves.plot(discover_runs([run]))) == {2.0}
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "training_curves.png").stat().st_size > 5000


def test_a_base_run_draws_no_tau_line(tmp_path, capsys):  # control: the line comes from the record, not always
    run = tmp_path / "base"
    assert main([*TRAIN, "--out", str(run)]) == 0
    assert json.loads((run / "summary.json").read_text())["switch"] is None
    assert load_run(run).tau is None and _tau_lines(training_curves.plot(discover_runs([run]))) == set()


def test_a_schema_1_run_folder_loads_with_its_configured_switch(tmp_path: Path):
    """Folders written before the schema version (flat config.json, summary with 'framework') still load."""
    cfg = {"dataset": "mnist", "epochs": 6, "modified": True, "tau": None, "seed": 0}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"type": "epoch", "epoch": 1, "phase": "base",
                                                        "train_loss": 0.5, "train_acc": 0.9}) + "\n")
    (tmp_path / "summary.json").write_text(json.dumps({
        "config": cfg, "status": "completed", "epochs_completed": 6, "final": {"train_loss": 0.1, "test_acc": 0.9},
        "framework": {"features": "gaussian", "scale": 1.0, "certificate": {"holds": True}}}))
    r = load_run(tmp_path)
    assert r.schema == 1 and r.tau == 3 and r.epochs[0].running_train_loss == 0.5 and r.final.train_loss == 0.1
    (tmp_path / "summary.json").write_text(json.dumps({"schema": 99, "config": cfg}))
    try:
        load_run(tmp_path)
    except Exception as exc:  # noqa: BLE001 - the message must name the schema it found
        assert "schema 99" in str(exc) and "reads schemas 1, 2" in str(exc)
    else:
        raise AssertionError("a schema-99 summary must be refused")
