"""loss_decomposition_terms: the square-loss identity and the gradient bound, measured against numpy."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from dynamics.conditions.decomposition import loss_decomposition_terms
from reference import reference_jacobian, reference_module


def numpy_terms(model, x, y):
    J = reference_jacobian(model, x).numpy()
    f = reference_module(model, x, None)(x.double()).detach().numpy().reshape(-1)
    Y = y.double().numpy().reshape(-1)
    U, s, _ = np.linalg.svd(J, full_matrices=False)
    r = int((s > np.sqrt(max(J.shape) * np.finfo(float).eps) * s[0]).sum())
    P = U[:, :r] @ U[:, :r].T
    return dict(loss=0.5 * np.sum((f - Y) ** 2), fit=0.5 * np.sum((P @ (f - Y)) ** 2),
                mis=0.5 * np.sum((Y - P @ Y) ** 2), grad=np.linalg.norm(J.T @ (f - Y)), smin=s[r - 1])


def test_terms_match_numpy_svd_reference_and_identity_holds_with_linear_readout():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2))
    x, y = torch.randn(15, 2), torch.randn(15, 2)
    t = loss_decomposition_terms(model, x, y)
    ref = numpy_terms(model, x, y)
    assert t.loss == pytest.approx(ref["loss"], rel=1e-12)
    assert t.fit_term == pytest.approx(ref["fit"], rel=1e-9)
    assert t.misalignment_term == pytest.approx(ref["mis"], rel=1e-9)
    assert t.gradient_norm == pytest.approx(ref["grad"], rel=1e-10)
    assert t.sigma_min == pytest.approx(ref["smin"], rel=1e-8)
    assert abs(t.gap) <= 1e-10 * t.loss and t.output_residual <= 1e-10
    assert t.misalignment_term <= t.loss <= t.upper_bound


def test_identity_breaks_with_sigmoid_head_and_gap_is_reported():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1), nn.Sigmoid())
    with torch.no_grad():
        model[2].weight.mul_(4)                    # well into the sigmoid's nonlinear range
    x, y = torch.randn(20, 2), torch.randn(20, 1)
    t = loss_decomposition_terms(model, x, y, params=["2.weight", "2.bias"])    # J is 20 x 4
    assert t.output_residual > 1e-3 and abs(t.gap) > 1e-6 * t.loss


@given(width=st.integers(1, 4), k=st.integers(1, 2), n=st.integers(2, 10), seed=st.integers(0, 2**16),
       act=st.sampled_from([nn.Tanh, nn.ReLU]))
def test_property_loss_equals_fit_plus_misalignment_and_bounds_hold(width, k, n, seed, act):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(2, width), act(), nn.Linear(width, k))
    x, y = torch.randn(n, 2), torch.randn(n, k)
    t = loss_decomposition_terms(model, x, y)
    scale = max(t.loss, 1e-300)
    assert abs(t.gap) <= 1e-9 * scale
    assert t.misalignment_term <= t.loss * (1 + 1e-9) + 1e-15
    assert t.loss <= t.upper_bound * (1 + 1e-9) + 1e-15


def test_str_and_to_dict():
    t = loss_decomposition_terms(nn.Linear(2, 1), torch.randn(5, 2), torch.randn(5))
    assert "misalignment term" in str(t)
    d = json.loads(json.dumps(t.to_dict()))
    assert d["rank"] == 3 and set(d) >= {"loss", "fit_term", "misalignment_term", "gap"}
