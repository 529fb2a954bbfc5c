"""Full-batch training for the demonstrations: float64 copies, stationarity criterion, trajectories."""

from __future__ import annotations

import pytest
import torch

import dynamics.models as dm
from dynamics.errors import InputError
from theory.descent import gradient_descent, minimise


@pytest.mark.exact  # the model is compared with its own copy: no arithmetic
def test_minimise_reaches_relative_stationarity_and_leaves_the_model_untouched():
    torch.manual_seed(0)
    net = dm.MLP(2, 1, depth=1, width=16, activation="tanh")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = torch.randn(8, 2), torch.randn(8, 1)
    res = minimise(net, x, y, gtol=1e-8)
    assert res.converged and (res.relative_grad_norm <= 1e-8 or res.loss <= 1e-28) and res.iterations > 0
    assert res.losses[-1] <= res.losses[0]
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert next(res.model.parameters()).dtype == torch.float64


def test_gradient_descent_records_requested_steps_and_decreases_the_loss():
    torch.manual_seed(0)
    x, y = torch.randn(10, 2), torch.randn(10, 1)
    traj = gradient_descent(dm.MLP(2, 1, depth=1, width=8, activation="tanh"), x, y, lr=0.02, steps=50,
                            record=[0, 10, 50])
    assert traj.steps == [0, 10, 50] and len(traj.losses) == 51 and traj.losses[-1] < traj.losses[0]
    m0 = traj.model_at(0)
    with torch.no_grad():
        assert torch.isclose(0.5 * (m0(x.double()) - y.double()).pow(2).sum(), torch.tensor(traj.losses[0],
                                                                                             dtype=torch.float64))


@pytest.mark.parametrize("kw", [{"gtol": 0.0}, {"max_iter": 0}])
def test_minimise_bad_arguments_raise_input_error(kw):
    with pytest.raises(InputError):
        minimise(dm.MLP(2, 1, depth=1, width=2), torch.randn(3, 2), torch.randn(3, 1), **kw)
