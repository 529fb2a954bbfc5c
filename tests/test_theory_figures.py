"""The theory figures draw from reports and from their JSON form; bad input says what to pass."""

from __future__ import annotations

import json

import pytest

from dynamics.errors import InputError
from figures import beyond_ntk, depth_rank, necessity, plateau
from theory.report import StatementReport


def _report(statement, name, series, quantities=None, expected=True):
    return StatementReport(statement, name, "toy setting", quantities or {}, {}, True, expected, series=series)


def test_figures_accept_reports_and_their_json_form(tmp_path):
    rep = _report("7", "beyond NTK", {"steps": [0, 1, 2], "kernel_distance": [0, 0.1, 0.2], "r": [0.3, 0.2, 0.1],
                                      "loss": [3.0, 2.0, 1.0]})
    fig = beyond_ntk.plot(json.loads(json.dumps(rep.to_dict())), out_path=tmp_path / "b.png")
    assert (tmp_path / "b.png").stat().st_size > 1000 and len(fig.axes) == 3
    reps = [_report("3", "sufficiency", {"losses": [1.0, 0.1, 0.0], "chunk": 10}, {"half_dist2": 0.0}),
            _report("3", "plateau", {"losses": [1.0, 0.6, 0.5], "chunk": 10}, {"half_dist2": 0.5})]
    assert plateau.plot(reps).axes[0].get_yscale() == "log"
    nec = _report("4", "necessity", {"r": [1e-16, 2e-16]}, {"r": 1e-16})
    control = _report("4", "necessity", {}, {"r": 0.02}, expected=False)
    assert len(necessity.plot([nec, control]).axes[0].patches) == 3


def test_depth_rank_script_writes_its_png(tmp_path):
    assert depth_rank.main(["--out", str(tmp_path / "d.png")]) == 0
    assert (tmp_path / "d.png").stat().st_size > 5000


def test_figure_given_something_else_raises_input_error():
    with pytest.raises(InputError, match="StatementReport"):
        beyond_ntk.plot(42)
    with pytest.raises(InputError, match="series"):
        beyond_ntk.plot({"statement": "7"})
