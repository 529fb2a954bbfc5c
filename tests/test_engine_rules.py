"""Each structured layer rule against the autograd reference, and the rules' refusal of look-alike layers.

A rule is chosen only for the exact layer type with its own ``forward``: a subclass that changes ``forward``
(BatchNorm followed by an activation, as model zoos write ``BatchNormAct2d``), an instance whose ``forward`` was
replaced, or a layer with forward hooks goes to the autograd fallback. Each test below fails if a rule is applied
to such a layer (the kernel is then wrong by ~1e-2, far above the 1e-10 tolerance of float64 arithmetic).
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dynamics
from dynamics.engine.rules import RULES, rule_for
from reference import randomise_bn, reference_jacobian, reference_ntk

F64 = torch.float64
METHODS = ["jacobian", "ntvp", "structured", "auto"]


def rel(a, b):
    return float((a - b).norm() / max(b.norm(), 1e-300))


class BNReLU(nn.BatchNorm2d):
    """BatchNorm followed by ReLU in one module (timm's BatchNormAct2d pattern)."""

    def forward(self, x):
        return torch.relu(super().forward(x))


def bnrelu_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), BNReLU(3), nn.Conv2d(3, 2, 3), nn.Flatten(),
                        nn.Linear(2 * 2 * 2, 3))
    randomise_bn(net)
    with torch.no_grad():  # a bias that puts part of the pre-activation below zero, so ReLU matters
        net[1].bias.copy_(torch.tensor([-0.3, 0.2, -0.1]))
    return net


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bn_mode", ["eval", "batch", "frozen"])
def test_batchnorm_subclass_with_activation_matches_reference(bn_mode, method):
    net = bnrelu_net().train()
    x1, x2 = torch.randn(4, 2, 4, 4), torch.randn(3, 2, 4, 4)
    K, info = dynamics.ntk(net, x1, bn_mode=bn_mode, method=method, dtype=F64, return_info=True)
    K12 = dynamics.ntk(net, x1, x2, bn_mode=bn_mode, method=method, dtype=F64)
    assert rel(K, reference_ntk(net, x1, bn_mode=bn_mode)) <= 1e-10
    assert rel(K12, reference_ntk(net, x1, x2, bn_mode=bn_mode)) <= 1e-10
    if info.method == "structured":
        assert info.rules["1"].startswith("autograd")
        assert "BNReLU" in info.fallback["1"] and "forward" in info.fallback["1"]


def test_rules_require_exact_type_unchanged_forward_and_no_hooks():
    assert rule_for(nn.BatchNorm2d(3)) is not None and rule_for(nn.Linear(2, 3)) is not None
    assert rule_for(BNReLU(3)) is None

    class MyLinear(nn.Linear):
        pass

    assert rule_for(MyLinear(2, 3)) is None  # a subclass may change anything; it falls back
    patched = nn.Linear(2, 3)
    patched.forward = lambda x: torch.tanh(F.linear(x, patched.weight, patched.bias))
    assert rule_for(patched) is None
    hooked = nn.Linear(2, 3)
    hooked.register_forward_hook(lambda m, i, o: o * 2)
    assert rule_for(hooked) is None
    assert len({type(r) for r in RULES}) == len(RULES)


def test_linear_with_output_hook_falls_back_and_matches_reference():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    net[0].register_forward_hook(lambda m, i, o: torch.sin(o))
    x = torch.randn(4, 3)
    K, info = dynamics.ntk(net, x, method="structured", dtype=F64, return_info=True)
    assert info.rules["0"] == "autograd" and "hook" in info.fallback["0"]
    J = reference_jacobian(net, x)
    assert rel(K.permute(0, 2, 1, 3).reshape(8, 8), J @ J.T) <= 1e-10


class _Grouped(nn.Module):
    """Depthwise (groups = channels) and grouped convolutions, a LayerNorm over two trailing dims, BatchNorm."""

    def __init__(self, bn=False):
        super().__init__()
        self.pw = nn.Conv2d(2, 4, 1)
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.gc = nn.Conv2d(4, 6, 3, stride=2, groups=2, bias=False)
        self.bn = nn.BatchNorm2d(6) if bn else nn.Identity()
        self.ln = nn.LayerNorm((6, 1))
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        h = torch.tanh(self.dw(torch.tanh(self.pw(x))))
        h = self.bn(self.gc(h))                         # (n, 6, 2, 2)
        h = h.flatten(2).transpose(1, 2)[..., None]     # (n, 4 positions, 6, 1)
        h = torch.tanh(self.ln(h)).mean(1).squeeze(-1)  # LayerNorm over (6, 1) at 4 positions
        return self.fc(h)


@pytest.mark.parametrize("bn_mode", [None, "batch", "frozen"])
def test_grouped_depthwise_conv_and_layernorm_rules_match_reference(bn_mode):
    torch.manual_seed(2)
    net = _Grouped(bn=bn_mode is not None)
    with torch.no_grad():
        net.ln.weight.uniform_(0.5, 1.5)
        net.ln.bias.uniform_(-0.5, 0.5)
    if bn_mode:
        randomise_bn(net).train()
    x1, x2 = torch.randn(4, 2, 5, 5), torch.randn(3, 2, 5, 5)
    K, info = dynamics.ntk(net, x1, x2, bn_mode=bn_mode, method="structured", dtype=F64, return_info=True)
    suffix = "-batch" if bn_mode == "batch" else ""
    conv = "conv-rowgrad-batch" if bn_mode == "batch" else "conv-psg"
    assert info.rules["dw"] == info.rules["gc"] == conv
    assert info.rules["ln"] == "layernorm-affine" + suffix
    assert info.fallback == {}
    assert rel(K, reference_ntk(net, x1, x2, bn_mode=bn_mode)) <= 1e-10
    Ks = dynamics.ntk(net, x1, bn_mode=bn_mode, method="structured", dtype=F64)
    assert rel(Ks, reference_ntk(net, x1, bn_mode=bn_mode)) <= 1e-10


@pytest.mark.parametrize("names", [["ln.weight"], ["ln.bias"], ["dw.bias", "gc.weight"], ["dw.weight"]])
def test_rules_with_weight_only_or_bias_only_selected(names):
    torch.manual_seed(3)
    net, x = _Grouped(), torch.randn(3, 2, 5, 5)
    K, info = dynamics.ntk(net, x, params=names, method="structured", dtype=F64, return_info=True)
    assert not info.fallback
    assert rel(K, reference_ntk(net, x, names=names)) <= 1e-10
