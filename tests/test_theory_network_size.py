"""Statements 5 (width helps through nested embeddings) and 6 (depth does not help the width-1 ReLU chain)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import reference_jacobian
from torch import nn

import dynamics.models as dm
from dynamics.conditions.column_space import ColumnSpace
from dynamics.errors import InputError
from theory.demos import demo_width_sweep
from theory.embedding import duplicate_unit, widen
from theory.network_size import (
    chain_column_identity, check_chain_rank, check_duplicate_unit, check_width_helps, positive_chain,
)


def test_widen_keeps_function_and_old_jacobian_columns_against_autograd_reference():
    torch.manual_seed(0)
    net = dm.MLP(3, 2, depth=2, width=3, activation="tanh").double()
    x = torch.randn(7, 3, dtype=torch.float64)
    wide, old = widen(net, 6, seed=1)
    # Not bit-identical: the wide layers sum 6 products (3 of them exact zeros) in a different order than the
    # narrow ones (issue 14: 5.55e-17 apart). Each of the 3 layers adds at most fan_in·eps relative rounding
    # (fan_in ≤ 6) and tanh is 1-Lipschitz, so |Δf| ≤ 3·6·eps·(1 + max|f|) ≈ 4e-15 here.
    f = net(x)
    assert torch.allclose(wide(x), f, rtol=0, atol=3 * 6 * torch.finfo(torch.float64).eps * (1 + float(f.abs().max())))
    J, Jw = reference_jacobian(net, x), reference_jacobian(wide, x)
    assert old.sum() == J.shape[1] and Jw.shape[1] == sum(p.numel() for p in wide.parameters())
    assert torch.allclose(Jw[:, old], J, atol=1e-14)
    assert (Jw[:, ~old].abs().sum(dim=0) > 0).any()  # new columns are not all zero: they add directions


def test_width_helps_holds_and_residual_falls():
    torch.manual_seed(0)
    x, y = torch.randn(20, 3), torch.randn(20, 1)
    rep = check_width_helps(dm.MLP(3, 1, depth=1, width=1, activation="tanh"), x, y, width=6)
    q = rep.quantities
    assert rep.holds
    assert q["rank_wide"] > q["rank"] and q["r_wide"] < q["r"] and q["half_dist2_wide"] < q["half_dist2"]


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 3), st.integers(1, 2), st.integers(0, 3), st.integers(1, 3),
       st.sampled_from(["relu", "tanh", "gelu"]), st.integers(0, 2 ** 16))
def test_width_helps_on_random_nested_pairs(width, depth, extra, k, act, seed):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x, y = torch.randn(8, 2, generator=gen), torch.randn(8, k, generator=gen)
    rep = check_width_helps(dm.MLP(2, k, depth=depth, width=width, activation=act), x, y, width=width + extra,
                            seed=seed)
    assert rep.holds, str(rep)


def test_width_sweep_reaches_full_rank_with_non_increasing_critical_loss_and_its_control_fails():
    embedding, sweep, control = demo_width_sweep(quick=True)
    assert embedding.holds and sweep.holds and not sweep.trivial
    assert control.control and not control.holds and control.quantities["rank_wide"] == control.quantities["rank"]
    s = sweep.series
    # r at successive embeddings: each comparison within the column spaces' stated accuracy (≤ 1e-6 here)
    assert all(b <= a + 1e-6 for a, b in zip(s["r_embedded"], s["r_embedded"][1:]))
    assert s["rank_critical"][-1] == 20 and s["critical_loss"][-1] < 1e-12


def test_chain_column_identity_and_rank_bound_for_depths_1_to_10():
    rep = check_chain_rank(depths=range(1, 11), in_features=3)
    assert rep.holds and rep.quantities["rank"] == 3 and rep.quantities["p"] == 12 and not rep.trivial
    assert rep.quantities["identity_error"] < 1e-13


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 8), st.integers(1, 5), st.booleans(), st.integers(0, 2 ** 16))
def test_chain_rank_never_exceeds_input_dimension(depth, d, bias, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(3 * d + 2, d, generator=gen, dtype=torch.float64)
    chain = positive_chain(depth, d, bias_first=bias, seed=seed)
    # random signs too: the bound is for every θ, not only the active chains
    with torch.no_grad():
        for p in chain.parameters():
            p.mul_(torch.sign(torch.randn(p.shape, generator=gen, dtype=torch.float64)))
    rank = ColumnSpace.from_jacobian(reference_jacobian(chain, x)).rank
    assert rank <= d + int(bias)
    assert chain_column_identity(chain, x) < 1e-12


def test_chain_rank_check_fails_when_the_first_layer_is_widened():
    rep = check_chain_rank(in_features=3, first_width=2, expected=False)
    assert rep.control and not rep.holds and rep.quantities["rank"] > 3


def test_widening_the_middle_of_a_chain_adds_no_rank_so_the_generic_claim_fails():
    x, y = torch.randn(20, 3, dtype=torch.float64), torch.randn(20, 1, dtype=torch.float64)
    chain = positive_chain(4, 3)
    generic = check_width_helps(chain, x, y, width=3, layers=[1], strict=True, expected=False)
    guaranteed = check_width_helps(chain, x, y, width=3, layers=[1])
    assert not generic.holds and guaranteed.holds
    assert generic.quantities["rank_wide"] == generic.quantities["rank"] == 3


def test_rank_bound_fails_for_a_wider_chain_control():
    """A width-2 hidden layer is not the chain: its rank exceeds d_x (the check would rightly fail there)."""
    torch.manual_seed(0)
    x = torch.randn(20, 2, dtype=torch.float64)
    net = dm.MLP(2, 1, depth=2, width=2, bias=False).double()
    assert ColumnSpace.from_jacobian(reference_jacobian(net, x)).rank > 2


def test_duplicated_unit_keeps_function_and_rank():
    torch.manual_seed(0)
    x = torch.randn(15, 3, dtype=torch.float64)
    for layer, unit in [(-1, 0), (0, 2)]:
        rep = check_duplicate_unit(dm.MLP(3, 2, depth=2, width=3, activation="tanh"), x, layer=layer, unit=unit)
        assert rep.holds and rep.quantities["p_dup"] > rep.quantities["p"]
        assert rep.quantities["rank_dup"] == rep.quantities["rank"]


def test_bad_inputs_to_the_embeddings_raise_input_error():
    net = dm.MLP(3, 1, depth=1, width=4)
    with pytest.raises(InputError, match="width"):
        widen(net, 2)
    with pytest.raises(InputError, match="MLP"):
        widen(nn.Sequential(nn.Linear(2, 1)), 4)
    with pytest.raises(InputError, match="BatchNorm"):
        widen(dm.MLP(3, 1, depth=1, width=4, batchnorm=True), 6)
    with pytest.raises(InputError, match="alpha"):
        duplicate_unit(net, alpha=1.0)
    with pytest.raises(InputError, match="unit"):
        duplicate_unit(net, unit=9)
    with pytest.raises(InputError, match="depths"):
        check_chain_rank(depths=[0, 1])
