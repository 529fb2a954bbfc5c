"""Attention layers through every entry point: the fused kernels PyTorch picks have no forward-mode derivative.

Without :func:`dynamics.engine.attention.differentiable_attention` each test below raises
``NotImplementedError: ... forward AD with aten::_native_multi_head_attention`` (MHA fast path, eval mode) or
the flash-attention equivalent for ``F.scaled_dot_product_attention`` on CPU, in ``ntvp``, ``JacobianOperator @ v``
and the checks that use it. The reference Jacobian is reverse mode in float64 (tests/reference.py).
"""

import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dynamics
from dynamics.engine.ntk import ntk_plans  # noqa: F401  (loads the module looked up below)
from dynamics.errors import MethodError
from reference import assert_unchanged, reference_jacobian, reference_ntk, snapshot

F64 = torch.float64
ntk_module = sys.modules["dynamics.engine.ntk"]  # the attribute dynamics.engine.ntk is the function
METHODS = ["jacobian", "ntvp", "structured", "auto"]


def rel(a, b):
    return float((a - b).norm() / max(b.norm(), 1e-300))


class MHAHead(nn.Module):
    def __init__(self, d=4, heads=2, k=2):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.fc = nn.Linear(d, k)

    def forward(self, x):  # (n, T, d)
        h, _ = self.attn(x, x, x, need_weights=False)
        return self.fc(h.mean(1))


class SDPAHead(nn.Module):
    def __init__(self, d=4, heads=2, k=2):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.fc = nn.Linear(d, k)

    def forward(self, x):
        n, T, d = x.shape
        q, k, v = self.qkv(x).reshape(n, T, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        h = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, T, d)
        return self.fc(h.mean(1))


class EncoderHead(nn.Module):
    def __init__(self, d=4, k=2):
        super().__init__()
        self.enc = nn.TransformerEncoderLayer(d, 2, 8, dropout=0.0, batch_first=True)
        self.fc = nn.Linear(d, k)

    def forward(self, x):
        return self.fc(self.enc(x).mean(1))


MODELS = {"mha": MHAHead, "sdpa": SDPAHead, "encoder": EncoderHead}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_attention_ntk_every_method_matches_reference(name, method):
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    x1, x2 = torch.randn(3, 5, 4), torch.randn(2, 5, 4)
    snap, fast = snapshot(model), torch.backends.mha.get_fastpath_enabled()
    K = dynamics.ntk(model, x1, method=method, dtype=F64)
    K12 = dynamics.ntk(model, x1, x2, method=method, dtype=F64)
    assert rel(K, reference_ntk(model, x1)) <= 1e-10
    assert rel(K12, reference_ntk(model, x1, x2)) <= 1e-10
    assert_unchanged(model, snap)
    assert torch.backends.mha.get_fastpath_enabled() == fast  # the user's process settings are restored


@pytest.mark.parametrize("name", sorted(MODELS))
def test_attention_jacobian_and_operator_products_match_reference(name):
    torch.manual_seed(1)
    model = MODELS[name]().eval()
    x = torch.randn(3, 5, 4)
    R = reference_jacobian(model, x)
    assert rel(dynamics.jacobian(model, x, dtype=F64), R) <= 1e-10
    op = dynamics.JacobianOperator(model, x, dtype=F64)
    V, U = torch.randn(op.p, 2, dtype=F64), torch.randn(op.shape[0], 2, dtype=F64)
    assert rel(op @ V, R @ V) <= 1e-10
    assert rel(op.T @ U, R.T @ U) <= 1e-10


@pytest.mark.parametrize("name", sorted(MODELS))
def test_attention_checks_run_through_the_operator(name):
    torch.manual_seed(2)
    model = MODELS[name]().eval()
    x, y = torch.randn(4, 5, 4), torch.randn(4, 2)
    report = dynamics.check_on_model_structure(model, x)
    assert report.subset  # ran to a verdict: the read-out fc is homogeneous of degree 1 in (weight, bias)
    assert report.holds
    dense = dynamics.check_alignment(model, x, y, method="dense")
    lsqr = dynamics.check_alignment(model, x, y, method="lsqr")
    assert dense.holds == lsqr.holds


class _TanhNoJvp(torch.autograd.Function):
    """tanh with a backward (twice differentiable) and a vmap rule, but no forward-mode rule."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return torch.tanh(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (1 - y * y)


class NoJvpNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc2(_TanhNoJvp.apply(self.fc1(x)))


def test_operation_without_forward_mode_routes_to_reverse_mode_and_auto_avoids_ntvp(monkeypatch):
    torch.manual_seed(3)
    model, x = NoJvpNet(), torch.randn(4, 3)
    R = reference_jacobian(model, x)
    op = dynamics.JacobianOperator(model, x, dtype=F64)
    V = torch.randn(op.p, 3, dtype=F64)
    assert rel(op @ V, R @ V) <= 1e-10  # J·v by reverse over reverse
    for method in ("auto", "jacobian", "structured"):
        K, info = dynamics.ntk(model, x, method=method, dtype=F64, return_info=True)
        assert info.method != "ntvp" and rel(K, reference_ntk(model, x)) <= 1e-10
    with pytest.raises(MethodError, match="forward-mode.*use method='jacobian'"):
        dynamics.ntk(model, x, method="ntvp", dtype=F64)
    real = ntk_module.ntk_plans

    def ntvp_cheapest(*args):  # the cost model now prefers ntvp: auto must still not pick it
        st, plans = real(*args)
        plans["ntvp"].flops = 0.0
        return st, plans

    monkeypatch.setattr(ntk_module, "ntk_plans", ntvp_cheapest)
    K, info = dynamics.ntk(model, x, dtype=F64, return_info=True)
    assert info.method != "ntvp" and rel(K, reference_ntk(model, x)) <= 1e-10
    assert dynamics.ntk(nn.Linear(3, 2), x, dtype=F64, return_info=True)[1].method == "ntvp"  # the control
