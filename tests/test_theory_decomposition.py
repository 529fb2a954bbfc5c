"""Statements 1 (loss decomposition) and 2 (gradient bound): hold under the on-model structure, fail without it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from reference import reference_jacobian, tiny_cnn
from theory_problems import tiny_problems

import dynamics.models as dm
from dynamics.errors import InputError
from theory.decomposition import (
    check_gradient_bound, check_loss_decomposition, decomposition_holds, gradient_bound_holds,
)


def reference_terms(model, x, y):
    """L, ½‖P(f−Y)‖², ½‖(I−P)Y‖², ‖∇L‖, σ₊ from an autograd J and numpy's SVD (slow, obvious)."""
    J = reference_jacobian(model, x).numpy()
    with torch.no_grad():
        f = model.double()(x.double()).reshape(-1).numpy()
    Y = y.double().reshape(-1).numpy()
    U, S, _ = np.linalg.svd(J, full_matrices=False)
    r = int((S > S[0] * max(J.shape) * np.finfo(float).eps).sum())
    P = U[:, :r] @ U[:, :r].T
    res = f - Y
    return (0.5 * res @ res, 0.5 * np.sum((P @ res) ** 2), 0.5 * np.sum((Y - P @ Y) ** 2),
            np.linalg.norm(J.T @ res), S[r - 1])


def test_decomposition_terms_match_svd_reference():
    torch.manual_seed(1)
    model = dm.MLP(3, 2, depth=2, width=3, activation="tanh").double()
    x, y = torch.randn(20, 3, dtype=torch.float64), torch.randn(20, 2, dtype=torch.float64)
    rep1, rep2 = check_loss_decomposition(model, x, y), check_gradient_bound(model, x, y)
    L, proj, dist, gn, sigma = reference_terms(model, x, y)
    assert rep1.quantities["rank"] <= 32 < 40  # nk = 40 > p = 32: the second term is not trivially zero
    assert dist > 0.1
    np.testing.assert_allclose([rep1.quantities[k] for k in ("L", "proj_term", "dist_term")], [L, proj, dist],
                               rtol=1e-8)
    np.testing.assert_allclose(rep2.quantities["grad_norm"], gn, rtol=1e-10)
    # σ₊ ≈ 1e-6 σ_max here: the Gram route of ColumnSpace resolves it to ~1e-5 relative (its docstring)
    np.testing.assert_allclose(rep2.quantities["sigma_plus"], sigma, rtol=1e-4)
    assert rep1.holds and rep2.holds


@pytest.mark.parametrize("name", ["mlp_relu", "cnn", "resnet_bn_eval"])
def test_decomposition_and_bound_hold_on_models_with_linear_readout(name):
    torch.manual_seed(0)
    if name == "mlp_relu":
        model, x, bn = dm.MLP(4, 3, depth=2, width=6), torch.randn(12, 4), None
    elif name == "cnn":
        model, x, bn = tiny_cnn(1, 3), torch.randn(5, 1, 5, 5), None
    else:
        model, x, bn = dm.create("resnet_small", in_channels=1, num_classes=3), torch.randn(4, 1, 8, 8), "eval"
    y = torch.randint(0, 3, (x.shape[0],))
    assert check_loss_decomposition(model, x, y, bn_mode=bn).holds
    assert check_gradient_bound(model, x, y, bn_mode=bn).holds


@settings(max_examples=25, deadline=None)
@given(tiny_problems())
def test_decomposition_holds_on_random_tiny_networks(problem):
    model, x, y = problem
    rep = check_loss_decomposition(model, x, y)
    assert rep.holds, str(rep)
    assert rep.quantities["f_off_colJ"] < 1e-6


@settings(max_examples=25, deadline=None)
@given(tiny_problems())
def test_gradient_bound_holds_on_random_tiny_networks(problem):
    model, x, y = problem
    rep = check_gradient_bound(model, x, y)
    assert rep.holds, str(rep)
    assert rep.quantities["lower"] <= rep.quantities["L"] * (1 + 1e-8) + 1e-12


def test_decomposition_fails_with_sigmoid_head_and_shows_the_gap():
    torch.manual_seed(0)
    model = dm.NonlinearHeadMLP(3, 2, head="sigmoid", depth=1, width=3).double()
    with torch.no_grad():
        model.readout.weight.mul_(4)
    x, y = torch.randn(40, 3, dtype=torch.float64), torch.randn(40, 2, dtype=torch.float64)
    rep = check_loss_decomposition(model, x, y, expected=False)
    assert not rep.holds and rep.passed
    assert rep.quantities["rel_gap"] > 1e-5 and rep.quantities["f_off_colJ"] > 1e-3


def test_decomposition_fails_with_normalised_head():
    torch.manual_seed(0)
    model = dm.NormalisedHeadMLP(3, 3, norm="layernorm", depth=1, width=2).double()
    x, y = torch.randn(30, 3, dtype=torch.float64), torch.randn(30, 3, dtype=torch.float64)
    assert not check_loss_decomposition(model, x, y).holds


def test_gradient_bound_lower_side_fails_at_an_unaligned_zero_loss_point():
    torch.manual_seed(0)
    model = dm.NonlinearHeadMLP(3, 2, head="sigmoid", depth=1, width=3).double()
    with torch.no_grad():
        model.readout.weight.mul_(4)
    x = torch.randn(40, 3, dtype=torch.float64)
    with torch.no_grad():
        y = model(x)
    rep = check_gradient_bound(model, x, y)
    assert not rep.holds
    assert rep.quantities["L"] <= 1e-28 and rep.quantities["lower"] > 1e-4   # Y := f_X: L is rounding at most


def test_bound_verdict_fails_when_the_loss_is_perturbed_below_the_lower_or_above_the_upper_side():
    torch.manual_seed(0)
    model = dm.MLP(3, 2, depth=1, width=2, activation="tanh").double()
    x, y = torch.randn(20, 3, dtype=torch.float64), torch.randn(20, 2, dtype=torch.float64)
    q = check_gradient_bound(model, x, y).quantities
    scale = q["L"]
    assert gradient_bound_holds(q["L"], q["lower"], q["upper"], scale, 1e-8)
    assert not gradient_bound_holds(q["lower"] * (1 - 1e-3), q["lower"], q["upper"], scale, 1e-8)
    assert not gradient_bound_holds(q["upper"] * (1 + 1e-3), q["lower"], q["upper"], scale, 1e-8)
    assert not decomposition_holds(q["L"] * 1.001, q["L"] - q["lower"], q["lower"], scale, 1e-8)


def test_report_carries_tolerance_and_serialises():
    torch.manual_seed(0)
    rep = check_loss_decomposition(dm.MLP(2, 1, depth=1, width=3), torch.randn(4, 2), torch.randn(4, 1),
                                   rtol=1e-6)
    d = rep.to_dict()
    assert d["tolerance"] == {"rtol": 1e-6} and d["holds"] is True and d["statement"] == "1"
    assert "loss decomposition" in str(rep) and "rtol=1e-06" in str(rep)


@pytest.mark.parametrize("rtol", [-1.0, float("nan"), "small"])
def test_bad_rtol_raises_input_error(rtol):
    with pytest.raises(InputError, match="rtol"):
        check_loss_decomposition(dm.MLP(2, 1, depth=1, width=3), torch.randn(4, 2), torch.randn(4, 1), rtol=rtol)


def test_targets_with_wrong_shape_raise_input_error():
    with pytest.raises(InputError, match="y"):
        check_gradient_bound(dm.MLP(2, 2, depth=1, width=3), torch.randn(4, 2), torch.randn(5, 2))
