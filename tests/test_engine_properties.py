"""Property tests: every NTK method equals J(x1) J(x2)ᵀ of the slow reference on random small architectures."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import dynamics
from dynamics.engine.rules.conv2d import Conv2dRule
from reference import reference_jacobian, reference_ntk

F64 = torch.float64
ACTS = {"tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "identity": nn.Identity, "gelu": nn.GELU}


def rel(a, b):
    return float((a - b).norm() / max(b.norm(), 1e-300))


@st.composite
def mlps(draw):
    d = draw(st.integers(1, 4))
    widths = draw(st.lists(st.integers(1, 6), min_size=0, max_size=3))
    k = draw(st.integers(1, 4))
    act = ACTS[draw(st.sampled_from(sorted(ACTS)))]
    layers, prev = [], d
    for w in widths:
        layers += [nn.Linear(prev, w, bias=draw(st.booleans())), act()]
        prev = w
    layers.append(nn.Linear(prev, k, bias=draw(st.booleans())))
    seed = draw(st.integers(0, 2**16))
    torch.manual_seed(seed)
    model = nn.Sequential(*layers)
    n1, n2 = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    return model, torch.randn(n1, d), torch.randn(n2, d)


@st.composite
def cnns(draw):
    c_in = draw(st.integers(1, 2))
    size = draw(st.integers(4, 6))
    act = ACTS[draw(st.sampled_from(sorted(ACTS)))]
    layers, c, s = [], c_in, size
    for _ in range(draw(st.integers(1, 2))):
        ks, stride, pad = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(0, 1))
        dil = draw(st.integers(1, 2))
        if s + 2 * pad < dil * (ks - 1) + 1:
            ks, dil = 1, 1
        out = draw(st.integers(1, 3))
        layers += [nn.Conv2d(c, out, ks, stride=stride, padding=pad, dilation=dil, bias=draw(st.booleans())), act()]
        c, s = out, (s + 2 * pad - dil * (ks - 1) - 1) // stride + 1
    k = draw(st.integers(1, 3))
    layers += [nn.Flatten(), nn.Linear(c * s * s, k, bias=draw(st.booleans()))]
    torch.manual_seed(draw(st.integers(0, 2**16)))
    model = nn.Sequential(*layers)
    n1, n2 = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    return model, torch.randn(n1, c_in, size, size), torch.randn(n2, c_in, size, size)


def _check_all_methods(model, x1, x2):
    R, R12 = reference_ntk(model, x1), reference_ntk(model, x1, x2)
    for method in ("structured", "jacobian", "ntvp"):
        K = dynamics.ntk(model, x1, method=method, dtype=F64)
        K12 = dynamics.ntk(model, x1, x2, method=method, dtype=F64)
        assert rel(K, R) <= 1e-10, method
        assert rel(K12, R12) <= 1e-10, method


@settings(max_examples=40, deadline=None)
@given(mlps())
def test_every_method_matches_reference_on_random_mlps(case):
    _check_all_methods(*case)


@settings(max_examples=30, deadline=None)
@given(cnns())
def test_every_method_matches_reference_on_random_cnns(case):
    _check_all_methods(*case)


@settings(max_examples=10, deadline=None)
@given(mlps())
def test_kernel_trace_is_squared_frobenius_norm_and_kernel_psd(case):
    model, x1, _x2 = case
    K = dynamics.ntk(model, x1, dtype=F64)
    n, k = K.shape[0], K.shape[2]
    M = K.permute(0, 2, 1, 3).reshape(n * k, n * k)
    J = reference_jacobian(model, x1)
    fro = float((J ** 2).sum())
    assert abs(float(M.trace()) - fro) <= 1e-10 * max(fro, 1e-300)
    assert torch.equal(M, M.T)
    if fro > 0:
        assert float(torch.linalg.eigvalsh(M).min()) >= -1e-10 * fro


@pytest.mark.parametrize("bn_mode", ["eval", "batch", "frozen"])
@settings(max_examples=6, deadline=None)
@given(st.integers(2, 4), st.integers(1, 3), st.integers(0, 2**16))
def test_every_method_matches_reference_on_random_batchnorm_mlps(bn_mode, n, k, seed):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, k)).train()
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].weight.uniform_(0.5, 1.5)
    x1, x2 = torch.randn(n, 3), torch.randn(n + 1, 3)
    R, R12 = reference_ntk(model, x1, bn_mode=bn_mode), reference_ntk(model, x1, x2, bn_mode=bn_mode)
    for method in ("structured", "jacobian", "ntvp"):
        assert rel(dynamics.ntk(model, x1, bn_mode=bn_mode, method=method, dtype=F64), R) <= 1e-10
        assert rel(dynamics.ntk(model, x1, x2, bn_mode=bn_mode, method=method, dtype=F64), R12) <= 1e-10


@pytest.mark.parametrize("rule", ["conv-psg", "conv-patch"])
@settings(max_examples=10, deadline=None)
@given(cnns())
def test_each_conv_rule_matches_reference_on_random_cnns(rule, case):
    from unittest import mock

    model, x1, x2 = case
    with mock.patch.object(Conv2dRule, "variant", return_value=rule):
        K, info = dynamics.ntk(model, x1, x2, method="structured", dtype=F64, return_info=True)
    assert rule in info.rules.values()
    assert rel(K, reference_ntk(model, x1, x2)) <= 1e-10


@settings(max_examples=25, deadline=None)
@given(st.one_of(mlps(), cnns()), st.data())
def test_every_method_matches_reference_on_random_parameter_subsets(case, data):
    model, x1, x2 = case
    names = [n for n, _ in model.named_parameters()]
    chosen = data.draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
    ordered = [n for n in names if n in chosen]
    R12 = reference_ntk(model, x1, x2, names=ordered)
    for method in ("structured", "jacobian", "ntvp"):
        K12 = dynamics.ntk(model, x1, x2, params=chosen, method=method, dtype=F64)
        assert rel(K12, R12) <= 1e-10, (method, ordered)


@st.composite
def bn_cnns(draw):
    """Conv-BN-activation stacks with random affine parameters and running statistics, in training mode."""
    c_in, size = draw(st.integers(1, 2)), draw(st.integers(3, 5))
    act = ACTS[draw(st.sampled_from(sorted(ACTS)))]
    torch.manual_seed(draw(st.integers(0, 2**16)))
    layers, c = [], c_in
    for _ in range(draw(st.integers(1, 2))):
        out = draw(st.integers(1, 3))
        bn = nn.BatchNorm2d(out, affine=draw(st.booleans()))
        with torch.no_grad():
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 1.5)
            if bn.affine:
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.5, 0.5)
        layers += [nn.Conv2d(c, out, 3, padding=1, bias=draw(st.booleans())), bn, act()]
        c = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, draw(st.integers(1, 3)))]
    model = nn.Sequential(*layers).train()
    n1, n2 = draw(st.integers(2, 4)), draw(st.integers(2, 3))
    return model, torch.randn(n1, c_in, size, size), torch.randn(n2, c_in, size, size)


@settings(max_examples=20, deadline=None)
@given(bn_cnns(), st.sampled_from(["eval", "batch", "frozen"]))
def test_every_method_matches_reference_on_random_batchnorm_cnns(case, bn_mode):
    model, x1, x2 = case
    R, R12 = reference_ntk(model, x1, bn_mode=bn_mode), reference_ntk(model, x1, x2, bn_mode=bn_mode)
    for method in ("structured", "jacobian", "ntvp"):
        K = dynamics.ntk(model, x1, bn_mode=bn_mode, method=method, dtype=F64)
        K12 = dynamics.ntk(model, x1, x2, bn_mode=bn_mode, method=method, dtype=F64)
        assert rel(K, R) <= 1e-10 and rel(K12, R12) <= 1e-10, method
