"""``dynamics verify``: runs every statement, prints the table, writes report.json and figures, exit status."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dynamics.cli import main
from dynamics.errors import InputError
from theory import verify
from theory.report import StatementReport, format_table


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("verify")
    code = main(["verify", "--quick", "--out", str(out), "--data-root", str(out / "no-data")])
    return code, out


def test_verify_quick_passes_and_writes_report_with_provenance(quick_run, capsys):
    code, out = quick_run
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] is True
    assert {"torch", "git_commit", "seed"} <= set(report["provenance"])
    statements = {r["statement"] for r in report["reports"]}
    assert statements == {"1", "2", "3", "4", "5", "6", "7"}
    assert any(not r["expected"] for r in report["reports"])  # the controls are there, and failed as they must
    assert all(r["passed"] for r in report["reports"])
    assert report["skipped"] and report["skipped"][0].startswith("Semeion: skipped")


def test_every_statement_has_a_non_trivial_holding_row_and_a_failing_control(quick_run):
    _, out = quick_run
    report = json.loads((out / "report.json").read_text())
    assert report["coverage"] == {s: {"non_trivial_holds": True, "control_fails": True} for s in "1234567"}
    for r in report["reports"]:
        assert {"p", "nk", "rank"} <= set(r["quantities"]), r["name"]
        assert isinstance(r["trivial"], bool) and isinstance(r["control"], bool)


def test_table_prints_the_trivial_flag(quick_run, capsys):
    code, out = quick_run
    rows = json.loads((out / "report.json").read_text())["reports"]
    table = format_table([StatementReport(**{k: r[k] for k in ("statement", "name", "setting", "quantities",
                                                                "tolerance", "holds", "expected", "trivial",
                                                                "control")}) for r in rows])
    assert table.splitlines()[0].split(" | ")[4].strip() == "trivial"
    assert " YES " in table and any(r["trivial"] for r in rows) and any(not r["trivial"] for r in rows)


def test_verify_writes_every_figure(quick_run):
    _, out = quick_run
    names = {p.name for p in (out / "figures").glob("*.png")}
    assert names == {"loss_decomposition.png", "gradient_bound.png", "plateau.png", "necessity.png",
                     "width_sweep.png", "depth_rank.png", "beyond_ntk.png"}
    assert all((out / "figures" / n).stat().st_size > 5000 for n in names)


def test_verify_exits_1_when_a_statement_fails(tmp_path, monkeypatch, capsys):
    bad = StatementReport("1", "loss decomposition", "forced failure", {"rel_gap": 1.0}, {"rtol": 1e-8}, False)
    control = StatementReport("2", "gradient bound", "control that held", {}, {"rtol": 1e-8}, True, expected=False)
    monkeypatch.setattr(verify, "collect", lambda **kw: verify.VerifyResult(reports=[bad, control]))
    assert main(["verify", "--out", str(tmp_path), "--no-figures"]) == 1
    text = capsys.readouterr().out
    assert "FAILED: statement 1" in text and "FAILED: statement 2" in text and "YES (control must fail)" in text
    assert json.loads((tmp_path / "report.json").read_text())["passed"] is False


def test_unknown_group_raises_input_error():
    with pytest.raises(InputError, match="groups"):
        verify.collect(include=("nonsense",))


def test_table_lists_every_column_and_wraps_long_cells():
    rep = StatementReport("3", "sufficiency", "a setting " * 8, {f"q{i}": 1.0 / 3 for i in range(12)},
                          {"rtol": 1e-6}, True)
    table = format_table([rep])
    assert [c.strip() for c in table.splitlines()[0].split(" | ")] == ["statement", "setting", "measured",
                                                                       "tolerance", "trivial", "holds"]
    assert all(f"q{i}=0.3333" in table for i in range(12)) and len(table.splitlines()) > 3


@pytest.mark.skipif(not os.environ.get("DYNAMICS_DATA"), reason="DYNAMICS_DATA not set (real data root)")
def test_semeion_rows_hold_on_real_data():
    root = Path(os.environ["DYNAMICS_DATA"])
    if not (root / "semeion" / "semeion.data").exists():
        pytest.skip(f"no semeion/semeion.data under {root}")
    result = verify.collect(include=("semeion",), data_root=str(root), quick=True)
    assert not result.skipped and len(result.reports) == 4
    assert all(r.holds for r in result.reports), format_table(result.reports)
    assert not any(r.trivial for r in result.reports[2:])  # rank J ≈ 410 < nk = 1000 at the solution
