"""Plain-torch replicas of the patterns real model zoos use, each checked through every entry point.

For each network: ``ntk`` with every method (x2 = x1 and x2 ≠ x1), ``jacobian`` and ``JacobianOperator`` products
against the float64 autograd reference of tests/reference.py, to 1e-10 (float64 arithmetic on these sizes agrees to
~1e-14; a wrong rule is off by 1e-4 or more, as the BatchNorm+activation case was before exact-type rules).
BatchNorm networks are checked in ``"eval"``, ``"batch"`` and ``"frozen"`` modes. A random network (stochastic
depth in training mode) must be refused, never differentiated. Sizes are tiny so the module runs in seconds.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dynamics
from dynamics.errors import StochasticModelError
from reference import DropPath, assert_unchanged, randomise_bn, reference_jacobian, snapshot

F64 = torch.float64
METHODS = ["jacobian", "ntvp", "structured", "auto"]


def rel(a, b):
    return float((a - b).norm() / max(b.norm(), 1e-300))


# ---------------------------------------------------------------- replicas
class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm and activation in one module (timm's BatchNormAct2d)."""

    def __init__(self, c, act=nn.ReLU):
        super().__init__(c)
        self.act = act()

    def forward(self, x):
        return self.act(super().forward(x))


class ConvBNAct(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1, bias=False)
        self.bn1 = BatchNormAct2d(3)
        self.conv2 = nn.Conv2d(3, 3, 3, stride=2, bias=False)
        self.bn2 = BatchNormAct2d(3, nn.SiLU)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(self.bn2(self.conv2(self.bn1(self.conv1(x)))).mean((2, 3)))


class SqueezeExcite(nn.Module):
    def __init__(self, c, r):
        super().__init__()
        self.reduce = nn.Conv2d(c, r, 1)
        self.expand = nn.Conv2d(r, c, 1)

    def forward(self, x):
        s = torch.sigmoid(self.expand(F.silu(self.reduce(x.mean((2, 3), keepdim=True)))))
        return x * s


class DepthwiseSeparable(nn.Module):
    """MobileNet/EfficientNet block: depthwise 3x3, BN, SiLU, squeeze-excitation, pointwise 1x1, BN, residual."""

    def __init__(self, c=4):
        super().__init__()
        self.stem = nn.Conv2d(2, c, 1, bias=False)
        self.bn0 = nn.BatchNorm2d(c)
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.se = SqueezeExcite(c, 2)
        self.pw = nn.Conv2d(c, c, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.head = nn.Linear(c, 3)

    def forward(self, x):
        h = F.silu(self.bn0(self.stem(x)))
        r = self.bn2(self.pw(self.se(F.silu(self.bn1(self.dw(h))))))
        return self.head((h + r).mean((2, 3)))


class LayerNorm2d(nn.LayerNorm):
    """Channels-first LayerNorm (timm's LayerNorm2d): permute, normalise over channels, permute back."""

    def forward(self, x):
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7, LayerNorm2d, pointwise MLP (Linear on channels-last), layer scale, residual."""

    def __init__(self, c=4, drop_path=0.0):
        super().__init__()
        self.stem = nn.Conv2d(2, c, 2, stride=2)
        self.dwconv = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = LayerNorm2d(c)
        self.pwconv1 = nn.Linear(c, 2 * c)
        self.pwconv2 = nn.Linear(2 * c, c)
        self.gamma = nn.Parameter(0.5 + torch.rand(c))  # layer scale, owned by the block
        self.drop_path = DropPath(drop_path)
        self.head_norm = nn.LayerNorm(c)
        self.head = nn.Linear(c, 2)

    def forward(self, x):
        x = self.stem(x)
        h = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)
        h = self.pwconv2(F.gelu(self.pwconv1(h))) * self.gamma
        x = x + self.drop_path(h.permute(0, 3, 1, 2))
        return self.head(self.head_norm(x.mean((2, 3))))


class SDPAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x):
        n, T, d = x.shape
        q, k, v = self.qkv(x).reshape(n, T, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, T, d))


class MHAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)

    def forward(self, x):
        return self.attn(x, x, x, need_weights=False)[0]


class PreNormBlock(nn.Module):
    def __init__(self, d, attention, drop_path=0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.attn = attention
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class TinyViT(nn.Module):
    """Patch embedding, class token, position embedding, one pre-norm block, head on the class token."""

    def __init__(self, attention="mha", d=4, drop_path=0.0):
        super().__init__()
        self.patch = nn.Conv2d(2, d, 2, stride=2)
        self.cls_token = nn.Parameter(0.1 * torch.randn(1, 1, d))
        self.pos_embed = nn.Parameter(0.1 * torch.randn(1, 5, d))
        attn = MHAttention(d, 2) if attention == "mha" else SDPAttention(d, 2)
        self.block = PreNormBlock(d, attn, drop_path)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 2)

    def forward(self, x):  # x: (n, 2, 4, 4) -> 4 patches + class token
        h = self.patch(x).flatten(2).transpose(1, 2)
        h = torch.cat([self.cls_token.expand(h.shape[0], -1, -1), h], dim=1) + self.pos_embed
        return self.head(self.norm(self.block(h))[:, 0])


def _randomise_norms(model):
    g = torch.Generator().manual_seed(7)
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            with torch.no_grad():
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
    return randomise_bn(model)


CASES = {  # name: (constructor, input shape, has BatchNorm)
    "bn_act_subclass": (ConvBNAct, (2, 5, 5), True),
    "depthwise_separable_se_silu": (DepthwiseSeparable, (2, 4, 4), True),
    "convnext_block": (ConvNeXtBlock, (2, 4, 4), False),
    "prenorm_mha_cls_pos": (lambda: TinyViT("mha"), (2, 4, 4), False),
    "prenorm_sdpa_cls_pos": (lambda: TinyViT("sdpa"), (2, 4, 4), False),
}
RUNS = [(name, mode) for name, (_, _, bn) in CASES.items() for mode in (["eval", "batch", "frozen"] if bn else [None])]


def _build(name):
    torch.manual_seed(0)
    make, shape, _ = CASES[name]
    model = _randomise_norms(make())
    return model, torch.randn(3, *shape), torch.randn(2, *shape)


@pytest.mark.parametrize("name, bn_mode", RUNS)
def test_every_method_and_the_operator_match_the_reference(name, bn_mode):
    model, x1, x2 = _build(name)
    model = model.train() if bn_mode else model.eval()
    snap = snapshot(model)
    J1 = reference_jacobian(model, x1, bn_mode=bn_mode)
    J2 = reference_jacobian(model, x2, bn_mode=bn_mode)
    k = J1.shape[0] // 3
    R = (J1 @ J1.T).reshape(3, k, 3, k).permute(0, 2, 1, 3)
    R12 = (J1 @ J2.T).reshape(3, k, 2, k).permute(0, 2, 1, 3)
    for method in METHODS:
        K = dynamics.ntk(model, x1, bn_mode=bn_mode, method=method, dtype=F64)
        K12 = dynamics.ntk(model, x1, x2, bn_mode=bn_mode, method=method, dtype=F64)
        assert rel(K, R) <= 1e-10, method
        assert rel(K12, R12) <= 1e-10, method
    assert rel(dynamics.jacobian(model, x1, bn_mode=bn_mode, dtype=F64), J1) <= 1e-10
    op = dynamics.JacobianOperator(model, x1, bn_mode=bn_mode, dtype=F64)
    V, U = torch.randn(op.p, 2, dtype=F64), torch.randn(op.shape[0], 2, dtype=F64)
    assert rel(op @ V, J1 @ V) <= 1e-10
    assert rel(op.T @ U, J1.T @ U) <= 1e-10
    assert_unchanged(model, snap)


@pytest.mark.parametrize("name", ["bn_act_subclass", "depthwise_separable_se_silu", "convnext_block",
                                  "prenorm_mha_cls_pos"])
def test_structured_rules_cover_the_standard_layers(name):
    """Which layers get a native rule: the exact standard layers do; subclasses and containers fall back."""
    model, x1, _ = _build(name)
    _, info = dynamics.ntk(model.eval(), x1, method="structured", dtype=F64, return_info=True)
    expected = {
        "bn_act_subclass": ({"conv1": "conv-psg", "fc": "linear-gram"}, {"bn1", "bn2"}),
        "depthwise_separable_se_silu": ({"dw": "conv-psg", "bn1": "bn-affine", "se.reduce": "conv-patch"}, set()),
        "convnext_block": ({"dwconv": "conv-psg", "pwconv1": "linear-psg", "head_norm": "layernorm-affine"},
                           {"", "norm"}),
        "prenorm_mha_cls_pos": ({"block.norm1": "layernorm-affine", "block.mlp.0": "linear-psg",
                                 "": "broadcast-parameter"},  # class token and position embedding
                                {"block.attn.attn", "block.attn.attn.out_proj"}),
    }[name]
    for layer, rule in expected[0].items():
        assert info.rules[layer] == rule, (layer, info.rules)
    assert set(info.fallback) == expected[1], info.fallback


class MixesSamples(nn.Module):
    """A (1, d) parameter that is NOT per-sample: its copy for one sample leaks into the others (batch mean)."""

    def __init__(self):
        super().__init__()
        self.shift = nn.Parameter(torch.randn(1, 3))
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        s = self.shift.mean(0, keepdim=True) if self.shift.shape[0] > 1 else self.shift
        return self.fc(torch.tanh(x + s))


def test_broadcast_parameter_rule_only_after_the_per_sample_check():
    torch.manual_seed(4)
    model, x = MixesSamples(), torch.randn(3, 3)
    K, info = dynamics.ntk(model, x, method="structured", dtype=F64, return_info=True)
    assert info.rules[""] == "autograd"  # the per-sample check saw sample 2's copy change sample 1's output
    J = reference_jacobian(model, x)
    assert rel(K.permute(0, 2, 1, 3).reshape(6, 6), J @ J.T) <= 1e-10


@pytest.mark.parametrize("make", [lambda: ConvNeXtBlock(drop_path=0.3), lambda: TinyViT("sdpa", drop_path=0.3)])
def test_stochastic_depth_refused_in_training_and_exact_in_eval(make):
    torch.manual_seed(0)
    model, x = make(), torch.randn(3, 2, 4, 4)
    with pytest.raises(StochasticModelError, match="DropPath '(drop_path|block.drop_path)'"):
        dynamics.ntk(model.train(), x, dtype=F64)
    J = reference_jacobian(model.eval(), x)
    assert rel(dynamics.ntk(model, x, dtype=F64).permute(0, 2, 1, 3).reshape(J.shape[0], -1), J @ J.T) <= 1e-10
