"""check_alignment: dense and LSQR paths against a numpy SVD reference, their agreement, bounds, bad input."""

import json

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from torch import nn

import dynamics
from dynamics.conditions.alignment import alignment_residual, check_alignment, choose_method
from dynamics.conditions.targets import TargetError
from dynamics.errors import InputError, MethodError
from reference import (
    ResBlockBN, assert_unchanged, randomise_bn, reference_jacobian, snapshot, svd_residual, tiny_mlp,
)

F64 = torch.float64


def narrow_net(k=2):
    return nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, k))   # p = 12 + 4k


# ---------------------------------------------------------------------- must hold / must fail
@pytest.mark.parametrize("method", ["dense", "lsqr"])
def test_alignment_residual_zero_when_J_full_row_rank(method):
    model = tiny_mlp(k=2)                 # p = 20 + 30 + 12 = 62 > n*k = 8
    x, y = torch.randn(4, 3), torch.randn(4, 2)
    rep = check_alignment(model, x, y, method=method)
    assert rep.holds and rep.residual <= 1e-9 and rep.conclusive
    if method == "dense":
        assert rep.rank == 8


@pytest.mark.parametrize("method", ["dense", "lsqr"])
def test_alignment_fails_for_random_targets_when_J_is_tall_and_matches_svd_reference(method):
    model = narrow_net()
    x, y = torch.randn(20, 3), torch.randn(20, 2)       # 40 rows, 20 columns
    rep = check_alignment(model, x, y, method=method)
    expected = svd_residual(reference_jacobian(model, x), y)
    assert not rep.holds and rep.conclusive
    assert rep.residual == pytest.approx(expected, abs=1e-8)
    assert expected > 0.1


@pytest.mark.parametrize("method", ["dense", "lsqr"])
def test_alignment_holds_for_targets_in_column_space_even_when_J_is_tall(method):
    model = narrow_net()
    x = torch.randn(20, 3)
    J = reference_jacobian(model, x)
    y = (J @ torch.randn(J.shape[1], dtype=F64)).reshape(20, 2)
    rep = check_alignment(model, x, y, method=method)
    assert rep.holds and rep.residual <= 1e-8


def test_outputs_themselves_are_aligned_under_on_model_structure():
    model = narrow_net()
    x = torch.randn(25, 3)
    y = model.double()(x.double()).detach()
    assert check_alignment(model, x, y).residual <= 1e-10


@pytest.mark.exact  # Y = 0 is answered before any arithmetic
def test_zero_targets_are_aligned_in_both_paths():
    for method in ("dense", "lsqr"):
        rep = check_alignment(narrow_net(), torch.randn(10, 3), torch.zeros(10, 2), method=method)
        assert rep.holds and rep.residual == 0.0


def test_integer_labels_give_the_same_result_as_explicit_one_hot():
    model = narrow_net(k=3)
    x, labels = torch.randn(12, 3), torch.randint(0, 3, (12,))
    a = check_alignment(model, x, labels)
    b = check_alignment(model, x, torch.nn.functional.one_hot(labels, 3).double())
    assert a.residual == pytest.approx(b.residual, abs=1e-14)


def test_params_subset_restricts_columns_and_is_reported():
    model = tiny_mlp(k=2)
    x, y = torch.randn(6, 3), torch.randn(6, 2)
    rep = check_alignment(model, x, y, params=["4.bias"])      # Col J = span of per-output constants
    Y = y.double().numpy()
    expected = np.linalg.norm(Y - Y.mean(0)) / np.linalg.norm(Y)
    assert rep.params == ["4.bias"] and rep.p == 2 and rep.rank == 2
    assert rep.residual == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("bn_mode", ["eval", "batch", "frozen"])
@pytest.mark.parametrize("params", [None, r"(fc|bn2)\..*"])
def test_dense_and_lsqr_agree_on_resnet_block_with_batchnorm(bn_mode, params):
    # all 126 parameters: J is 32 x 126 (aligned); fc and bn2 only: 32 x 10 (not aligned)
    model = randomise_bn(ResBlockBN(c=2, k=2)).train()
    x, y = torch.randn(16, 2, 4, 4), torch.randn(16, 2)
    snap = snapshot(model)
    d = check_alignment(model, x, y, params=params, bn_mode=bn_mode, method="dense")
    s = check_alignment(model, x, y, params=params, bn_mode=bn_mode, method="lsqr")
    assert s.istop in (1, 2, 4, 5)
    assert s.residual == pytest.approx(d.residual, abs=1e-6)
    assert d.holds == s.holds == (params is None)
    assert_unchanged(model, snap)


# ---------------------------------------------------------------------- LSQR bounds
def test_lsqr_upper_bound_is_never_below_true_residual_even_when_stopped_early():
    model = narrow_net()
    x, y = torch.randn(20, 3), torch.randn(20, 2)
    true = check_alignment(model, x, y, method="dense").residual
    for iters in (1, 3, 10):
        rep = check_alignment(model, x, y, method="lsqr", iter_lim=iters)
        assert rep.iterations == iters and rep.istop == 7
        assert rep.residual >= true - 1e-12


@pytest.mark.exact  # the given sigma_min is passed through unchanged
def test_lsqr_lower_bound_with_given_sigma_min_brackets_true_residual():
    model = narrow_net()
    x, y = torch.randn(20, 3), torch.randn(20, 2)
    dense = check_alignment(model, x, y, method="dense")
    for iters in (5, 15, 200):
        rep = check_alignment(model, x, y, method="lsqr", iter_lim=iters, sigma_min=dense.sigma_min)
        assert rep.sigma_min == dense.sigma_min
        assert rep.residual_lower <= dense.residual + 1e-12 <= rep.residual + 2e-12
    assert rep.conclusive and not rep.holds and rep.residual_lower == pytest.approx(dense.residual, abs=1e-8)


def test_lsqr_sigma_min_estimate_is_conservative_after_convergence():
    model = narrow_net()
    x, y = torch.randn(20, 3), torch.randn(20, 2)
    dense = check_alignment(model, x, y, method="dense")
    rep = check_alignment(model, x, y, method="lsqr")
    assert rep.istop in (1, 2) and 0 < rep.sigma_min <= dense.sigma_min
    assert rep.sigma_min_source == "lsqr-estimate" and dense.sigma_min_source == "exact"
    assert any("heuristic" in note for note in rep.notes)


def test_lsqr_is_inconclusive_when_stopped_too_early_without_sigma_bound():
    model = narrow_net()
    x, y = torch.randn(20, 3), torch.randn(20, 2)
    rep = check_alignment(model, x, y, method="lsqr", iter_lim=1, sigma_min=1e-12)
    assert not rep.holds and not rep.conclusive
    assert "inconclusive" in str(rep)


@given(depth=st.integers(1, 2), width=st.integers(1, 4), k=st.integers(1, 3), n=st.integers(1, 8),
       act=st.sampled_from([nn.Tanh, nn.ReLU]), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_property_dense_and_lsqr_residuals_agree_on_random_tiny_nets(depth, width, k, n, act, bias, seed):
    torch.manual_seed(seed)
    layers, d = [], 2
    for _ in range(depth):
        layers += [nn.Linear(d, width, bias=bias), act()]
        d = width
    model = nn.Sequential(*layers, nn.Linear(d, k, bias=bias))
    x, y = torch.randn(n, 2), torch.randn(n, k)
    s = np.linalg.svd(reference_jacobian(model, x).numpy(), compute_uv=False)
    assume(s[0] > 0 and not np.any((s > 1e-12 * s[0]) & (s < 1e-5 * s[0])))   # unambiguous numerical rank
    dense = check_alignment(model, x, y, method="dense")
    lsqr = check_alignment(model, x, y, method="lsqr")
    assume(lsqr.istop in (1, 2, 4, 5))                                        # where LSQR converges
    # The dense (Gram) route squares the condition number: its projector is accurate to about
    # eps * (σ_max / σ_min_kept)², which is the documented accuracy this test holds it to.
    kept = s[s > 1e-12 * s[0]]
    tol = 1e-8 + 1e3 * np.finfo(np.float64).eps * (s[0] / kept[-1]) ** 2
    assert lsqr.residual == pytest.approx(dense.residual, abs=max(1e-6, tol))
    assert dense.residual == pytest.approx(svd_residual(reference_jacobian(model, x), y), abs=tol)
    assert lsqr.holds == dense.holds


# ---------------------------------------------------------------------- method choice, reports
def test_auto_picks_dense_when_J_fits_gram_when_only_a_gram_fits_and_lsqr_otherwise():
    assert choose_method(100, 10_000) == "dense"
    assert choose_method(10_000, 100) == "dense"
    assert choose_method(30, 20_000_000) == "gram"          # J 4.8 GB over 2 GiB, the 30 x 30 NTK fits (issue 10)
    assert choose_method(50_000, 19_810) == "lsqr"          # J 7.9 GB, JᵀJ with workspace 9.4 GB
    assert choose_method(50_000, 19_810, memory_budget=16 * 2**30) == "gram"
    assert choose_method(50_000, 19_810, memory_budget=16 * 2**30, per_sample=False) == "lsqr"
    rep = check_alignment(narrow_net(), torch.randn(5, 3), torch.randn(5, 2))
    assert rep.method == "dense"


def test_auto_with_a_small_budget_takes_the_exact_gram_route_and_matches_dense():
    model = narrow_net()
    x, y = torch.randn(40, 3), torch.randn(40, 2)        # 80 x 20: J 12.8 kB, JᵀJ 9.6 kB
    dense = check_alignment(model, x, y, method="dense")
    auto = check_alignment(model, x, y, memory_budget=12_000)
    assert auto.method == "gram" and auto.route == "eigh(JtJ)"
    assert auto.residual == pytest.approx(dense.residual, abs=1e-10)


def test_report_str_and_to_dict_for_both_methods():
    model, x, y = narrow_net(), torch.randn(20, 3), torch.randn(20, 2)
    for method in ("dense", "lsqr"):
        rep = check_alignment(model, x, y, method=method)
        text = str(rep)
        assert text.startswith("Data architecture alignment: FAILS") and f"method      {method}" in text
        d = json.loads(json.dumps(rep.to_dict()))
        assert d["method"] == method and d["n"] == 20 and d["k"] == 2 and d["p"] == 20 and d["rtol"] == 1e-6
        assert set(d) >= {"holds", "residual", "rank", "sigma_min", "tolerance", "iterations", "conclusive"}


def test_alignment_residual_helper_and_lazy_top_level_export():
    model, x, y = narrow_net(), torch.randn(20, 3), torch.randn(20, 2)
    assert dynamics.check_alignment is check_alignment
    assert alignment_residual(model, x, y) == check_alignment(model, x, y).residual


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("y,match", [
    (torch.randn(5, 3), "k=2 outputs"),                 # k mismatch with the model
    (torch.randn(6, 2), "x has 5 samples"),             # n mismatch with x
    (torch.randn(5), "shape \\(5,\\) with floating"),   # floats (n,) but k > 1
    (torch.tensor(1.0), "scalar"),
    (torch.tensor([0, 1, 2, 0, 1]), "0..1"),            # labels out of range for k = 2
    (torch.ones(5, 2, dtype=torch.bool), "bool"),
    ([[0.0, 1.0]] * 5, "torch.Tensor or numpy"),
])
def test_bad_targets_raise_target_error(y, match):
    with pytest.raises(TargetError, match=match):
        check_alignment(narrow_net(), torch.randn(5, 3), y)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_targets_raise_target_error(bad):
    y = torch.randn(5, 2)
    y[2, 1] = bad
    with pytest.raises(TargetError, match="non-finite"):
        check_alignment(narrow_net(), torch.randn(5, 3), y)


def test_target_error_is_an_input_error():
    assert issubclass(TargetError, InputError) and issubclass(TargetError, ValueError)


@pytest.mark.parametrize("kw", [dict(rtol=0.0), dict(rtol=-1.0), dict(rank_rtol=0.0), dict(atol_lsqr=-1e-9),
                                dict(sigma_min=0.0), dict(rtol=float("nan")), dict(iter_lim=0),
                                dict(iter_lim=2.5)])
def test_non_positive_tolerances_raise_input_error(kw):
    with pytest.raises(InputError, match=next(iter(kw))):
        check_alignment(narrow_net(), torch.randn(5, 3), torch.randn(5, 2), **kw)


def test_unknown_method_raises_method_error():
    with pytest.raises(MethodError, match="auto, dense, gram, subset, lsqr"):
        check_alignment(narrow_net(), torch.randn(5, 3), torch.randn(5, 2), method="svd")


def test_lsqr_gives_no_lower_bound_from_its_own_sigma_estimate_before_convergence():
    # after 2 iterations the Ritz estimate of σ₊ is far too large; a "lower bound" from it would exceed the truth
    model = narrow_net()
    x, y = torch.randn(20, 3), torch.randn(20, 2)
    dense = check_alignment(model, x, y, method="dense")
    rep = check_alignment(model, x, y, method="lsqr", iter_lim=2)
    assert rep.sigma_min_source == "lsqr-estimate" and rep.sigma_min > dense.sigma_min
    assert rep.residual_lower is None and not rep.conclusive and not rep.holds
    assert rep.residual >= dense.residual
