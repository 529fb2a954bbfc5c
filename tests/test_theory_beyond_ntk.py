"""Statement 7: statements 1–2 hold along real training while the empirical NTK moves."""

from __future__ import annotations

import pytest
import torch
from reference import reference_jacobian

import dynamics.models as dm
from dynamics.errors import InputError, NonFiniteError
from theory.beyond_ntk import check_beyond_ntk, empirical_ntk, evaluate_trajectory, kernel_distance
from theory.descent import gradient_descent


def test_kernel_distance_is_zero_for_proportional_kernels_and_positive_otherwise():
    a = torch.randn(5, 5, dtype=torch.float64)
    k = a @ a.T
    assert kernel_distance(k, 3.0 * k) < 1e-15
    assert kernel_distance(k, torch.eye(5, dtype=torch.float64)) > 1e-3
    with pytest.raises(InputError, match="shape"):
        kernel_distance(k, k[:4, :4])
    with pytest.raises(InputError, match="zero"):
        kernel_distance(k, torch.zeros_like(k))


def test_empirical_ntk_equals_reference_j_jt_sample_major():
    torch.manual_seed(0)
    net = dm.MLP(3, 2, depth=1, width=4, activation="tanh").double()
    x = torch.randn(5, 3, dtype=torch.float64)
    K, _ = empirical_ntk(net, x)
    J = reference_jacobian(net, x)
    assert torch.allclose(K, J @ J.T, atol=1e-12)


@pytest.fixture(scope="module")
def run():
    torch.manual_seed(0)
    x, y = torch.randn(20, 2, dtype=torch.float64), torch.randn(20, 2, dtype=torch.float64)
    traj = gradient_descent(dm.MLP(2, 2, depth=1, width=3, activation="tanh"), x, y, lr=0.05, steps=400,
                            record=range(0, 401, 100))
    return traj, x, y


def test_statements_1_and_2_hold_at_every_step_while_the_kernel_moves(run):
    traj, x, y = run
    rep = check_beyond_ntk(traj, x, y)
    assert rep.holds, str(rep)
    assert rep.quantities["kernel_distance_max"] > 1e-2 and rep.quantities["points"] == 5
    assert rep.series["steps"] == [0, 100, 200, 300, 400]
    assert rep.series["loss"][-1] < rep.series["loss"][0]


def test_beyond_ntk_fails_when_the_kernel_must_move_more_than_it_did(run):
    traj, x, y = run
    ev = evaluate_trajectory(traj, x, y)
    assert not check_beyond_ntk(traj, x, y, min_distance=0.99, evaluation=ev).holds


def test_beyond_ntk_fails_for_sigmoid_head_training():
    torch.manual_seed(0)
    net = dm.NonlinearHeadMLP(2, 2, head="sigmoid", depth=1, width=3).double()
    with torch.no_grad():
        net.readout.weight.mul_(4)
    x, y = torch.randn(30, 2, dtype=torch.float64), torch.rand(30, 2, dtype=torch.float64)
    traj = gradient_descent(net, x, y, lr=0.05, steps=100, record=[0, 50, 100])
    rep = check_beyond_ntk(traj, x, y)
    assert not rep.holds and rep.quantities["max_rel_gap_stmt1"] > 1e-6


def test_gradient_descent_raises_on_divergence():
    torch.manual_seed(0)
    x, y = torch.randn(10, 2), torch.randn(10, 1)
    with pytest.raises(NonFiniteError, match="lr"):
        gradient_descent(dm.MLP(2, 1, depth=1, width=8), x, y, lr=1e6, steps=50)
    with pytest.raises(InputError):
        gradient_descent(dm.MLP(2, 1, depth=1, width=8), x, y, lr=-1.0, steps=5)
