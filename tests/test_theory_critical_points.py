"""Statements 3 (sufficiency: L(θ̄) = ½dist(Y, Col J)² at critical points) and 4 (necessity: zero loss ⇒ aligned)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, settings
from theory_problems import tiny_problems
from torch import nn

import dynamics
import dynamics.models as dm
from dynamics.conditions.column_space import ColumnSpace
from dynamics.errors import InputError
from theory.critical_points import check_necessity, check_sufficiency, readout_subset
from theory.demos_critical import demo_plateau, demo_sufficiency
from theory.descent import minimise


def _outputs(model, x):
    with torch.no_grad():
        return model(x).reshape(x.shape[0], -1)


def test_sufficiency_holds_non_trivially_and_fails_without_alignment_at_a_critical_point_of_the_same_optimiser():
    suff, control = demo_sufficiency(quick=True)
    assert suff.holds and not suff.trivial and suff.quantities["rank"] < suff.quantities["nk"]
    assert suff.quantities["L"] < 1e-12 and suff.quantities["r"] < 1e-10
    q = control.quantities
    assert control.control and not control.holds and control.passed and q["critical"]
    assert q["r"] > 1e-3 and q["L"] > 1e-6 and abs(q["L"] - q["half_dist2"]) <= 1e-6 * q["L"]


def test_plateau_training_stalls_at_half_squared_distance():
    for rep in demo_plateau(quick=True):
        q = rep.quantities
        assert rep.holds, str(rep)
        assert q["rank"] < q["nk"] and q["r"] > 0.05 and q["L"] > 1e-3  # alignment fails: a real plateau
        assert abs(q["L"] - q["half_dist2"]) <= 1e-6 * q["L"]


def test_sufficiency_does_not_hold_away_from_a_critical_point():
    torch.manual_seed(0)
    model = dm.MLP(3, 1, depth=1, width=4, activation="tanh")
    x, y = torch.randn(12, 3), torch.randn(12, 1)
    rep = check_sufficiency(model, x, y)
    assert not rep.holds and not rep.quantities["critical"]
    assert "not a critical point" in rep.notes


@settings(max_examples=20, deadline=None)
@given(tiny_problems())
def test_constructed_critical_point_has_loss_half_squared_distance(problem):
    """Y := f_X(θ) + (I − P)z makes θ critical (∇L = −Jᵀ(I − P)z = 0) with L = ½‖(I − P)z‖² = ½dist²."""
    model, x, z = problem
    J = dynamics.jacobian(model, x, dtype=torch.float64)
    cs = ColumnSpace.from_jacobian(J)
    assume(cs.rank > 0)
    v = cs.complement(z.reshape(-1))
    y = _outputs(model, x) + v.reshape(z.shape)
    rep = check_sufficiency(model, x, y)
    assert rep.holds, str(rep)
    assert abs(rep.quantities["L"] - 0.5 * float(v @ v)) <= 1e-8 * max(1.0, rep.quantities["L"])


@settings(max_examples=20, deadline=None)
@given(tiny_problems())
def test_every_exact_fit_is_aligned(problem):
    """Y := f_X(θ) is a zero-loss point; under the on-model structure r(θ) = 0 and Y = J_S θ_S."""
    model, x, _ = problem
    y = _outputs(model, x)
    assume(float(y.norm()) > 1e-3)  # a dead ReLU net fits Y = 0, where r is undefined
    rep = check_necessity(model, x, y)
    assert rep.holds, str(rep)
    assert rep.quantities["Y_minus_JS_thetaS"] < 1e-10


def test_necessity_holds_for_solutions_found_by_training():
    torch.manual_seed(3)
    x, y = torch.randn(10, 2), torch.randn(10, 2)
    fit = minimise(dm.MLP(2, 2, depth=2, width=8, activation="tanh"), x, y, gtol=1e-10)
    rep = check_necessity(fit.model, x, y)
    assert rep.holds and rep.quantities["fit_residual"] < 1e-6 and rep.quantities["r"] < 1e-8


def test_necessity_fails_for_sigmoid_head_exact_fit():
    torch.manual_seed(0)
    model = dm.NonlinearHeadMLP(3, 2, head="sigmoid", depth=1, width=3).double()
    x = torch.randn(40, 3, dtype=torch.float64)
    y = _outputs(model, x)
    rep = check_necessity(model, x, y, expected=False)
    assert rep.quantities["fit_residual"] <= 1e-15   # Y is f_X itself, evaluated again: rounding at most
    assert not rep.holds and rep.passed and rep.quantities["r"] > 1e-4


def test_necessity_not_applicable_without_a_fit():
    torch.manual_seed(0)
    rep = check_necessity(dm.MLP(3, 1, depth=1, width=4), torch.randn(6, 3), torch.randn(6, 1))
    assert not rep.holds and "not applicable" in rep.notes


def test_readout_subset_uses_the_one_readout_finder():
    assert readout_subset(dm.MLP(3, 2, depth=1, width=4)) == ["readout.weight", "readout.bias"]
    assert readout_subset(nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1))) == ["2.weight", "2.bias"]
    with pytest.raises(InputError, match="read-out"):
        readout_subset(nn.Sequential(nn.ReLU()))


def test_necessity_subset_none_skips_the_subset_residual():
    net = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)).double()
    x = torch.randn(5, 2, dtype=torch.float64)
    rep = check_necessity(net, x, _outputs(net, x), subset=None)
    assert rep.holds and "Y_minus_JS_thetaS" not in rep.quantities
    rep = check_necessity(net, x, _outputs(net, x))
    assert rep.quantities["Y_minus_JS_thetaS"] < 1e-12


def test_necessity_tolerance_follows_the_measured_fit():
    """r ≤ ‖f − Y‖/‖Y‖ under the assumption: a fit of 2e-6 (issue 14's Semeion run) still holds, and a
    perturbation of Y off Col J by more than the fit is caught."""
    torch.manual_seed(0)
    net = dm.MLP(3, 1, depth=1, width=3, activation="tanh").double()
    x = torch.randn(30, 3, dtype=torch.float64)
    f = _outputs(net, x)
    cs = ColumnSpace.from_jacobian(dynamics.jacobian(net, x, dtype=torch.float64))
    off = cs.complement(torch.randn(30, dtype=torch.float64)).reshape(30, 1)
    y = f + 2e-6 * f.norm() * off / off.norm()
    rep = check_necessity(net, x, y)
    assert rep.holds and rep.quantities["fit_residual"] == pytest.approx(2e-6, rel=1e-3)
    assert rep.quantities["r"] <= rep.quantities["r_bound"]


@pytest.mark.parametrize("kw", [{"grad_tol": 0}, {"rtol": -1}, {"grad_tol": "x"}])
def test_bad_tolerances_raise_input_error(kw):
    with pytest.raises(InputError):
        check_sufficiency(dm.MLP(2, 1, depth=1, width=2), torch.randn(3, 2), torch.randn(3, 1), **kw)


def test_zero_targets_raise_input_error_in_necessity():
    with pytest.raises(InputError, match="zero"):
        check_necessity(dm.MLP(2, 1, depth=1, width=2), torch.randn(3, 2), torch.zeros(3, 1))
