"""Recomputing a finished modified run's end certificate from its final checkpoint (dynamics.reproduce.recertify)."""

from __future__ import annotations

import json

import pytest

from _training_common import random_label_data, small_config
from dynamics.errors import RunStateError
from dynamics.reproduce.recertify import RECERTIFIED_FILE, needs_recertification, read_recertified, recertify_end
from dynamics.reproduce.table import build_table
from dynamics.training import train
from dynamics.training.run_certificate import GENERIC_ZSTAR
from dynamics.training.run_folder import load_run


def _data():
    return random_label_data(n=120, dim=4, k=3, seed=0)


@pytest.fixture
def modified_run(tmp_path):
    x, y = _data()
    cfg = small_config(model="mlp", epochs=3, batch_size=20, modified=True, tau=1)
    train(cfg, tmp_path / "mod", data=(x, y, x, y), progress=False)
    return tmp_path / "mod", (x, y, x, y)


def test_recertification_reproduces_the_in_run_certificate(modified_run):
    """Same parameters, same bound: the certificate recomputed from checkpoints/last.pt equals the one the run
    wrote (the slow reference: the run's own end-of-training computation). A wrong checkpoint, model or cache
    would change the loss and ε."""
    path, data = modified_run
    record = load_run(path)
    in_run = record.summary.run_certificate_end
    assert in_run["zstar_method"] != GENERIC_ZSTAR and not needs_recertification(record)
    out = recertify_end(record, data, write=False)
    assert out["recertified"]["train_loss_matches_summary"]
    assert out["epsilon_ce"] == pytest.approx(in_run["epsilon_ce"], rel=1e-6)
    assert out["soft_error"] <= out["epsilon_ce"]                    # ε bounds the measured Σ(1 − p_y)
    assert not (path / RECERTIFIED_FILE).exists()


def test_a_run_with_the_generic_bound_is_recertified_and_the_table_reads_it(modified_run):
    path, data = modified_run
    summary = json.loads((path / "summary.json").read_text())
    cert = summary["run_certificates"]["end"]
    generic = cert["epsilon_ce"] / cert["zstar_norm_upper"] * (len(data[0]) ** 0.5 / (cert["scale"] *
                                                                                       cert["sigma_min_lower"]))
    cert.pop("zstar_method")                                          # as written before the solve bound
    cert["epsilon_ce"], cert["zstar_norm_upper"] = generic, len(data[0]) ** 0.5 / (cert["scale"] *
                                                                                    cert["sigma_min_lower"])
    (path / "summary.json").write_text(json.dumps(summary))
    record = load_run(path)
    assert needs_recertification(record)
    out = recertify_end(record, data)
    assert out["epsilon_ce"] <= generic * (1 + 1e-12) and out["recertified"]["previous_epsilon_ce"] == generic
    record = load_run(path)
    assert read_recertified(record) == json.loads((path / RECERTIFIED_FILE).read_text())
    assert not needs_recertification(record)
    table = build_table([record])
    assert table.rows[0].modified.optimality_eps == [out["epsilon_ce"]]


def test_refuses_a_base_run(tmp_path):
    x, y = _data()
    train(small_config(model="mlp", epochs=1, batch_size=20), tmp_path / "base", data=(x, y, x, y), progress=False)
    with pytest.raises(RunStateError, match="finished modified run"):
        recertify_end(tmp_path / "base", (x, y, x, y))


def test_report_recertify_flag(modified_run, tmp_path, capsys, monkeypatch):
    """``dynamics report --recertify`` recomputes only runs that need it (here: after the summary is made to look
    like one written with the generic bound), and the table it writes reads the recomputed ε."""
    import dynamics.cli.report as report_cli
    from dynamics.cli import main

    path, data = modified_run
    main(["report", str(path), "--out", str(tmp_path / "a"), "--no-figures", "--recertify"])
    assert "recomputed" not in capsys.readouterr().out and not (path / RECERTIFIED_FILE).exists()
    summary = json.loads((path / "summary.json").read_text())
    summary["run_certificates"]["end"].pop("zstar_method")
    (path / "summary.json").write_text(json.dumps(summary))
    monkeypatch.setattr(report_cli, "recertify_end", lambda record: recertify_end(record, data))
    main(["report", str(path), "--out", str(tmp_path / "b"), "--no-figures", "--recertify"])
    assert "end certificate recomputed" in capsys.readouterr().out and (path / RECERTIFIED_FILE).exists()
    table = json.loads((tmp_path / "b" / "table.json").read_text())
    assert table["rows"][0]["modified"]["optimality_eps"] == [read_recertified(load_run(path))["epsilon_ce"]]


def test_a_missing_final_checkpoint_is_named(modified_run):
    path, data = modified_run
    (path / "checkpoints" / "last.pt").unlink()
    with pytest.raises(RunStateError, match="last.pt is missing.*rerun the run"):
        recertify_end(path, data)
