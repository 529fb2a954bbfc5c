"""check_alignment's exact Gram routes and subset bounds against the dense route and a numpy SVD reference."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import dynamics
from dynamics.conditions.alignment import check_alignment
from dynamics.conditions.column_space import ColumnSpace
from dynamics.conditions.gram import column_gram, minimum_subset
from dynamics.engine.jacobian import jacobian
from dynamics.errors import InputError, MemoryBudgetError, NonFiniteError
from reference import reference_jacobian, svd_residual
from theory.network_size import positive_chain

F64 = torch.float64


def net(k=2, width=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, width), nn.Tanh(), nn.Linear(width, k))   # p = 4·width + (width+1)·k


def test_column_gram_accumulation_equals_dense_JtJ_for_any_block_size():
    model = net()
    x, Y = torch.randn(13, 3), torch.randn(26, dtype=F64)
    J = jacobian(model, x, dtype=F64)
    for block in (1, 4, 13, 50):
        acc = column_gram(model, x, Y, block_samples=block)
        # float64 sums of 26 products of O(1) numbers in a different order: |error| ≤ 26·eps·max|G| ≈ 1e-14
        assert torch.allclose(acc.gram, J.T @ J, rtol=0, atol=1e-13 * float((J.T @ J).abs().max()))
        assert torch.allclose(acc.jt_y, J.T @ Y, rtol=0, atol=1e-13 * float((J.T @ Y).abs().max()))
        assert acc.rows == 26 and acc.y_norm2 == pytest.approx(float(Y @ Y), rel=1e-14)


@pytest.mark.parametrize("aligned", [False, True])
def test_gram_route_on_tall_J_matches_dense_and_svd_reference(aligned):
    model = net()
    x = torch.randn(30, 3)                             # 60 rows, p = 20 columns
    J = reference_jacobian(model, x)
    y = (J @ torch.randn(J.shape[1], dtype=F64)).reshape(30, 2) if aligned else torch.randn(30, 2)
    dense = check_alignment(model, x, y, method="dense")
    gram = check_alignment(model, x, y, method="gram")
    assert gram.route == "eigh(JtJ)" and gram.trivial is False and gram.rank == dense.rank == 20
    assert gram.residual_lower <= gram.residual <= gram.residual_upper
    # the r² = 1 − q formula loses digits when r is small: |r_gram − r| ≤ sqrt(accuracy) (stated in the report)
    assert abs(gram.residual - svd_residual(J, y)) <= math.sqrt(gram.accuracy) + 1e-12
    assert gram.holds == aligned == dense.holds and gram.conclusive


def test_gram_route_on_wide_J_uses_the_ntk_and_is_trivial_at_full_row_rank():
    model = net(width=16)                              # p = 98 > nk = 16
    x, y = torch.randn(8, 3), torch.randn(8, 2)
    rep = check_alignment(model, x, y, method="gram")
    assert rep.route == "eigh(JJt)" and rep.rank == 16 and rep.trivial is True and rep.holds
    assert "trivially" in str(rep) and rep.to_dict()["quantities"]["nk"] == 16


@pytest.mark.parametrize("seed", range(6))
def test_subset_bounds_bracket_the_exact_residual(seed):
    model = net(seed=seed)
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(60, 3, generator=gen), torch.randn(60, 2, generator=gen, dtype=F64)
    exact = svd_residual(reference_jacobian(model, x), y)
    for size in (minimum_subset(20, 2), 20, 45, 60):
        rep = check_alignment(model, x, y, method="subset", subset_size=size, subset_seed=seed)
        assert rep.subset_size == size and rep.trivial is False
        assert rep.residual_lower - 1e-12 <= exact <= rep.residual_upper + 1e-12
        assert rep.residual_lower > 0.05 and rep.conclusive and not rep.holds
    full = check_alignment(model, x, y, method="subset", subset_size=60)
    assert full.residual_lower == pytest.approx(exact, abs=1e-7) and full.residual_upper == pytest.approx(exact, abs=1e-7)


def test_subset_bounds_settle_an_aligned_target_by_the_upper_bound():
    model = net()
    x = torch.randn(40, 3)
    y = (reference_jacobian(model, x) @ torch.randn(20, dtype=F64)).reshape(40, 2)
    rep = check_alignment(model, x, y, method="subset", subset_size=15)
    assert rep.holds and rep.conclusive and rep.residual_upper <= 1e-9


# ---------------------------------------------------------------------- bad input
def test_subset_larger_than_the_data_is_refused_with_the_limit():
    with pytest.raises(InputError, match="larger than the data \\(n = 30\\); pass subset_size ≤ 30"):
        check_alignment(net(), torch.randn(30, 3), torch.randn(30, 2), method="subset", subset_size=31)


def test_subset_too_small_says_the_bound_is_necessarily_zero_and_which_size_would_do():
    with pytest.raises(InputError, match="necessarily 0; use subset_size ≥ 11"):
        check_alignment(net(), torch.randn(30, 3), torch.randn(30, 2), method="subset", subset_size=10)


def test_subset_when_no_subset_can_be_tall_points_to_the_exact_ntk_route():
    with pytest.raises(InputError, match="method='gram'"):
        check_alignment(net(width=16), torch.randn(8, 3), torch.randn(8, 2), method="subset")


def test_gram_over_budget_gives_the_size_needed_and_the_alternative():
    with pytest.raises(MemoryBudgetError, match=r"need 0\.00 GiB.*at least 9600 bytes.*method='lsqr'"):
        check_alignment(net(), torch.randn(30, 3), torch.randn(30, 2), method="gram", memory_budget=4000)


def test_gram_route_refuses_batch_statistics():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).train()
    with pytest.raises(InputError, match="whole batch"):
        check_alignment(model, torch.randn(30, 3), torch.randn(30, 2), method="subset", bn_mode="batch",
                        subset_size=20)


class SqrtNet(nn.Module):
    """f = sqrt(w·x): its derivative w.r.t. w is x / (2 sqrt(w·x)), infinite/NaN at x = 0."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return torch.sqrt(self.w * x)


@pytest.mark.parametrize("method", ["dense", "gram", "subset"])
def test_non_finite_jacobian_is_refused_by_every_exact_route(method):
    x = torch.rand(6, 1) + 0.5
    x[3] = 0.0
    with pytest.raises((InputError, NonFiniteError), match="NaN or inf"):
        check_alignment(SqrtNet(), x, torch.rand(6, 1), method=method, subset_size=4)


def test_column_space_from_gram_needs_jt_v_and_refuses_a_basis_projection():
    J = torch.randn(10, 3, dtype=F64)
    cs = ColumnSpace.from_gram(J.T @ J, "columns", (10, 3))
    with pytest.raises(Exception, match="basis"):
        cs.project(torch.randn(10, dtype=F64))


def test_subset_qr_bound_needs_no_rank_decision_and_stays_below_the_exact_residual_for_rank_deficient_J():
    """The width-1 ReLU chain has p = 6 columns but rank J = 3: span Q₁ (6 columns) contains Col J_S, so the QR
    bound is below the exact residual (computed with the exact rank 3 by SVD) and still positive."""
    chain = positive_chain(4, 3)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(40, 3, generator=gen, dtype=F64), torch.randn(40, 1, generator=gen, dtype=F64)
    J = jacobian(chain, x, dtype=F64)
    assert ColumnSpace.from_jacobian(J, method="svd").rank == 3
    exact = svd_residual(J, y)
    rep = check_alignment(chain, x, y, method="subset", subset_size=20)
    assert rep.route == "qr([J_S, Y_S])" and 0.05 < rep.residual_lower <= exact + 1e-12 <= rep.residual_upper + 2e-12


def test_subset_over_budget_gives_the_size_needed_and_the_alternative():
    with pytest.raises(MemoryBudgetError, match=r"at least \d+ bytes.*subset_size \(at least 11\)"):
        check_alignment(net(), torch.randn(30, 3), torch.randn(30, 2), method="subset", subset_size=20,
                        memory_budget=2000)


def test_full_row_rank_but_ill_conditioned_J_holds_conclusively():
    """The README's five-line example: resnet_small on 32 random images has rank J = n·k (trivially aligned), but
    σ_max/σ_min is large (the generic Gram accuracy max(m, p)·eps·(σ_max/σ_r)² exceeds rtol). At full row rank
    every direction is kept, so P = I to rounding and the stated accuracy is max(m, p)·eps; the explicit fit
    agrees. Fails if the verdict is 'FAILS (inconclusive)' as it once was (in training logs too)."""
    torch.manual_seed(0)
    model = dynamics.models.create("resnet_small", in_channels=1, num_classes=10).eval()
    x, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    rep = dynamics.check_alignment(model, x, y, method="dense", dtype=torch.float64, rtol=1e-7)
    assert rep.trivial and rep.rank == 320
    p = sum(q.numel() for q in model.parameters())
    assert rep.accuracy == pytest.approx(p * torch.finfo(torch.float64).eps)
    assert (rep.sigma_max / rep.sigma_min) ** 2 * p * torch.finfo(torch.float64).eps > rep.rtol  # generic: undecided
    assert rep.holds and rep.conclusive and rep.residual_upper <= rep.rtol
