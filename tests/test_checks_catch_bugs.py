"""Checks that catch bugs: for each check, a plausible bug is injected (monkeypatched into the toolkit) and the
check must fail. Each test first shows the unmutated check passing on the same case, so a failure under the
mutant is the mutant's doing. A check that passes on a mutant is a defect of the check.

All cases are in the practical regime (rank J < n·k): where J has full row rank, P = I and most mutants are
invisible (that blindness is what the ``trivial`` flag reports).
"""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

import dynamics.conditions.decomposition as decomposition_module
import dynamics.models as dm
from dynamics.conditions.alignment import check_alignment
from dynamics.conditions.column_space import ColumnSpace
from dynamics.conditions.on_model import check_on_model_structure
from dynamics.engine.jacobian import JacobianOperator
from dynamics.errors import ModelModifiedError
from theory.decomposition import check_gradient_bound, check_loss_decomposition
from theory.network_size import check_chain_rank

F64 = torch.float64
# the module itself (dynamics.conditions re-exports the function column_space under the same name)
column_space_module = sys.modules[ColumnSpace.__module__]


def tall_problem(seed: int = 0, n: int = 30, k: int = 2):
    """MLP 3-3-2 tanh (p = 20) on n = 30 points: J is 60 x 20, Col J a proper subspace."""
    torch.manual_seed(seed)
    model = dm.MLP(3, k, depth=1, width=3, activation="tanh").double()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=gen, dtype=F64)
    y = torch.randn(n, k, generator=gen, dtype=F64)
    return model, x, y


def outputs(model, x):
    with torch.no_grad():
        return model(x).reshape(x.shape[0], -1)


# ---------------------------------------------------------------------- a projector missing one column
def test_projector_missing_one_column_breaks_the_decomposition_and_the_alignment_of_f(monkeypatch):
    model, x, y = tall_problem()
    assert check_loss_decomposition(model, x, y).holds
    assert check_alignment(model, x, outputs(model, x), method="dense").holds

    original = ColumnSpace.from_jacobian.__func__

    def missing_column(cls, J, rtol=None, method="gram"):
        cs = original(cls, J, rtol, method)
        cs.basis, cs.rank = cs.basis[:, :-1], cs.rank - 1
        return cs

    monkeypatch.setattr(ColumnSpace, "from_jacobian", classmethod(missing_column))
    assert not check_loss_decomposition(model, x, y).holds
    assert not check_alignment(model, x, outputs(model, x), method="dense").holds


# ---------------------------------------------------------------------- output-major Jacobian rows
def test_output_major_jacobian_rows_are_caught(monkeypatch):
    model, x, y = tall_problem()
    f = outputs(model, x)
    assert check_alignment(model, x, f, method="dense").holds and check_loss_decomposition(model, x, y).holds
    original = JacobianOperator.dense

    def output_major(self, memory_budget=None):
        J = original(self, memory_budget)
        return J.reshape(self.n, self.k, -1).transpose(0, 1).reshape(self.n * self.k, -1)

    monkeypatch.setattr(JacobianOperator, "dense", output_major)
    assert not check_alignment(model, x, f, method="dense").holds   # f_X no longer in the (wrong) Col J
    assert not check_loss_decomposition(model, x, y).holds


# ---------------------------------------------------------------------- rank tolerance 1e6x off
def test_rank_tolerance_a_million_times_too_loose_drops_real_directions(monkeypatch):
    model, x, y = tall_problem()
    rep = check_loss_decomposition(model, x, y)
    assert rep.holds and rep.quantities["rank"] == 20
    default = column_space_module.default_rank_rtol
    monkeypatch.setattr(column_space_module, "default_rank_rtol", lambda *a, **k: 1e6 * default(*a, **k))
    loose = check_loss_decomposition(model, x, y)
    assert loose.quantities["rank"] < 20 and not loose.holds


def test_rank_tolerance_a_million_times_too_tight_counts_rounding_noise_as_rank(monkeypatch):
    rep = check_chain_rank(depths=(2, 4, 6), in_features=3)
    assert rep.holds and rep.quantities["rank"] == 3
    default = column_space_module.default_rank_rtol
    monkeypatch.setattr(column_space_module, "default_rank_rtol", lambda *a, **k: 1e-6 * default(*a, **k))
    tight = check_chain_rank(depths=(2, 4, 6), in_features=3)
    assert tight.quantities["rank"] > 3 and not tight.holds


# ---------------------------------------------------------------------- BatchNorm buffers written by a check
def test_batchnorm_statistics_updated_during_a_check_are_refused(monkeypatch):
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).double().eval()
    x, y = torch.randn(20, 3, dtype=F64), torch.randn(20, 2, dtype=F64)
    check_alignment(model, x, y)                     # unmutated: runs, statistics untouched
    check_on_model_structure(model, x)
    original = JacobianOperator.__init__

    def leaky(self, model, x, *args, **kwargs):      # a bug: a training-mode forward on the user's model
        mode = model.training
        model.train()
        with torch.no_grad():
            model(torch.as_tensor(x, dtype=F64))
        model.train(mode)
        original(self, model, x, *args, **kwargs)

    monkeypatch.setattr(JacobianOperator, "__init__", leaky)
    with pytest.raises(ModelModifiedError, match="running_mean"):
        check_alignment(model, x, y)
    with pytest.raises(ModelModifiedError, match="running_mean"):
        check_on_model_structure(model, x)
    with pytest.raises(ModelModifiedError):
        check_loss_decomposition(model, x, y)


# ---------------------------------------------------------------------- a sign error in statement 2's gradient
@pytest.mark.parametrize("wrong", [lambda J, f, Y: J.T @ (Y - f), lambda J, f, Y: J.T @ (f + Y)])
def test_a_sign_error_in_the_gradient_of_statement_2_is_caught(monkeypatch, wrong):
    model, x, y = tall_problem()
    assert check_gradient_bound(model, x, y).holds
    monkeypatch.setattr(decomposition_module, "square_loss_gradient", wrong)
    rep = check_gradient_bound(model, x, y)
    assert not rep.holds and rep.quantities["grad_mismatch"] > 1e-3


# ---------------------------------------------------------------------- a read-out with a sigmoid
def test_a_sigmoid_after_the_readout_fails_the_assumption_and_statement_1():
    model, x, y = tall_problem()
    assert check_on_model_structure(model, x).holds and check_loss_decomposition(model, x, y).holds
    with torch.no_grad():
        model.readout.weight.mul_(4.0)               # out of sigmoid's near-linear range
    mutant = nn.Sequential(model, nn.Sigmoid())
    assert not check_on_model_structure(mutant, x).holds
    assert not check_loss_decomposition(mutant, x, y).holds
    assert not check_alignment(mutant, x, outputs(mutant, x), method="dense").holds
