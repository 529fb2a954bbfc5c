"""The empirical NTK (every method) against the slow reference J(x1) J(x2)ᵀ of tests/reference.py."""

import json

import pytest
import torch
from torch import nn

import dynamics
from dynamics.engine.memory import SLACK, Budget
from dynamics.engine.ntk import ntk_plans
from dynamics.engine.stacked import StackedFunction
from dynamics.errors import InputError, MemoryBudgetError, MethodError
from reference import (ResBlockBN, assert_unchanged, randomise_bn, reference_jacobian, reference_ntk, snapshot,
                       tiny_cnn, tiny_mlp)

F64 = torch.float64
METHODS = ["jacobian", "ntvp", "structured", "auto"]


def rel(a, b):
    return float((a - b).norm() / max(b.norm(), 1e-300))


def conv_net(bias):
    return nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=bias), nn.Tanh(),
                         nn.Conv2d(3, 4, 2, stride=1, padding=0, bias=bias), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 2 * 2, 3, bias=bias))


CASES = {
    "mlp_k2_bias": (lambda: tiny_mlp(k=2), lambda n: torch.randn(n, 3)),
    "mlp_k1_nobias": (lambda: tiny_mlp(k=1, bias=False, act=nn.ReLU), lambda n: torch.randn(n, 3)),
    "cnn_stride_padding_bias": (lambda: conv_net(True), lambda n: torch.randn(n, 2, 5, 5)),
    "cnn_stride_padding_nobias": (lambda: conv_net(False), lambda n: torch.randn(n, 2, 5, 5)),
    "cnn_tiny": (tiny_cnn, lambda n: torch.randn(n, 1, 5, 5)),
}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_ntk_matches_reference_with_and_without_x2(case, method):
    model, make_x = CASES[case]
    model = model()
    x1, x2 = make_x(4), make_x(3)
    snap = snapshot(model)
    K = dynamics.ntk(model, x1, method=method, dtype=F64)
    K12 = dynamics.ntk(model, x1, x2, method=method, dtype=F64)
    R, R12 = reference_ntk(model, x1), reference_ntk(model, x1, x2)
    assert K.shape == R.shape and K12.shape == R12.shape == (4, 3, R.shape[2], R.shape[3])
    assert K.dtype == F64
    assert rel(K, R) <= 1e-10 and rel(K12, R12) <= 1e-10
    assert_unchanged(model, snap)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bn_mode", ["eval", "batch", "frozen"])
def test_ntk_resnet_block_batchnorm_each_mode_matches_reference(bn_mode, method):
    model = randomise_bn(ResBlockBN()).train()
    x1, x2 = torch.randn(4, 2, 5, 5), torch.randn(3, 2, 5, 5)
    snap = snapshot(model)
    K, info = dynamics.ntk(model, x1, bn_mode=bn_mode, method=method, dtype=F64, return_info=True)
    K12 = dynamics.ntk(model, x1, x2, bn_mode=bn_mode, method=method, dtype=F64)
    assert rel(K, reference_ntk(model, x1, bn_mode=bn_mode)) <= 1e-10
    # batch/frozen: x1 and x2 are each one batch with its own statistics, K = J(x1) J(x2)ᵀ
    assert rel(K12, reference_ntk(model, x1, x2, bn_mode=bn_mode)) <= 1e-10
    assert_unchanged(model, snap)
    if info.method == "structured":
        assert info.rules["bn1"] == ("bn-affine-batch" if bn_mode == "batch" else "bn-affine")
        assert info.rules["conv1"] == ("conv-rowgrad-batch" if bn_mode == "batch" else "conv-psg")
        assert info.fallback == {}


@pytest.mark.parametrize("method", ["jacobian", "ntvp", "structured"])
@pytest.mark.parametrize("bn_mode", ["batch", "frozen"])
def test_ntk_batchnorm_subsets_weight_only_or_bias_only_match_reference(bn_mode, method):
    model = randomise_bn(ResBlockBN()).train()
    x, x2 = torch.randn(4, 2, 4, 4), torch.randn(3, 2, 4, 4)
    names = ["bn0.bias", "conv1.weight", "bn2.weight"]
    K = dynamics.ntk(model, x, x2, params=names, bn_mode=bn_mode, method=method, dtype=F64)
    assert rel(K, reference_ntk(model, x, x2, names=names, bn_mode=bn_mode)) <= 1e-10


class _BatchGuard(nn.Module):
    """Identity that fails when it sees anything but the whole batch (vmap over samples shows 1 sample)."""

    def __init__(self, n):
        super().__init__()
        self.n = n

    def forward(self, x):
        if x.shape[0] != self.n:
            raise AssertionError(f"saw a batch of {x.shape[0]} instead of {self.n}")
        return x


@pytest.mark.parametrize("method", METHODS)
def test_batch_mode_never_evaluates_the_network_on_part_of_the_batch(method):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), _BatchGuard(5), nn.Tanh(), nn.Linear(4, 2)).train()
    x = torch.randn(5, 3)
    K = dynamics.ntk(model, x, bn_mode="batch", method=method, dtype=F64, memory_budget=20_000)
    assert rel(K, reference_ntk(model, x, bn_mode="batch")) <= 1e-10
    with pytest.raises(AssertionError, match="saw a batch of 1"):  # the guard does fire on a per-sample path
        dynamics.ntk(model, x, bn_mode="frozen", method="jacobian")


class _InPlace(nn.Module):
    """In-place operations on layer outputs (``out += identity; relu_(out)``, as torchvision ResNets do)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.fc2 = nn.Linear(4, 4)
        self.fc3 = nn.Linear(4, 2)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        h = torch.tanh(self.fc1(x))
        out = self.fc2(h)
        out += h  # modifies fc2's output (where the structured hook added its zero tensor)
        return self.fc3(self.act(out))


def test_structured_is_unaffected_by_in_place_operations():
    model, x = _InPlace(), torch.randn(4, 3)
    K, info = dynamics.ntk(model, x, method="structured", dtype=F64, return_info=True)
    assert set(info.rules.values()) == {"linear-gram"}
    assert rel(K, reference_ntk(model, x)) <= 1e-10


class _WithLayerNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.norm = nn.LayerNorm(4)
        self.act = nn.PReLU()
        self.fc2 = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc2(self.act(self.norm(self.fc1(x))))


@pytest.mark.parametrize("bn_mode", [None, "batch"])
def test_structured_uses_autograd_fallback_for_layers_without_rule(bn_mode):
    model = _WithLayerNorm()
    if bn_mode:
        model = nn.Sequential(model, nn.BatchNorm1d(2)).train()
    x = torch.randn(5, 3)
    K, info = dynamics.ntk(model, x, bn_mode=bn_mode, method="structured", dtype=F64, return_info=True)
    prefix = "0." if bn_mode else ""
    assert info.rules[prefix + "norm"] == ("layernorm-affine-batch" if bn_mode else "layernorm-affine")
    assert info.rules[prefix + "act"] == ("autograd-rows" if bn_mode else "autograd")
    assert info.fallback == {prefix + "act": "PReLU has no structured rule"}
    assert "autograd fallback for" in str(info)
    assert rel(K, reference_ntk(model, x, bn_mode=bn_mode)) <= 1e-10


def test_structured_reports_rule_per_layer_and_uses_both_conv_rules():
    model = tiny_cnn()
    x = torch.randn(3, 1, 5, 5)
    K, info = dynamics.ntk(model, x, method="structured", dtype=F64, return_info=True)
    assert info.rules == {"0": "conv-psg", "2": "conv-patch", "5": "linear-gram"}
    assert rel(K, reference_ntk(model, x)) <= 1e-10


def test_structured_linear_over_sequence_positions_uses_per_sample_gradients():
    class Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Linear(3, 4)
            self.out = nn.Linear(4, 2)

        def forward(self, x):  # x: (n, T, 3)
            return self.out(torch.tanh(self.emb(x)).mean(1))

    model, x = Seq(), torch.randn(4, 5, 3)
    K, info = dynamics.ntk(model, x, method="structured", dtype=F64, return_info=True)
    assert info.rules == {"emb": "linear-psg", "out": "linear-gram"}
    assert rel(K, reference_ntk(model, x)) <= 1e-10
    Kb = dynamics.ntk(model, x, x[:2], method="structured", dtype=F64)
    assert rel(Kb, reference_ntk(model, x, x[:2])) <= 1e-10
    single = nn.Sequential(nn.Unflatten(1, (1, 3)), nn.Linear(3, 2), nn.Flatten())  # input (n, 1, 3)
    K, info = dynamics.ntk(single, x[:, 0], method="structured", dtype=F64, return_info=True)
    assert info.rules == {"1": "linear-gram"} and rel(K, reference_ntk(single, x[:, 0])) <= 1e-10
    with_bn = nn.Sequential(model, nn.BatchNorm1d(2)).train()  # batch statistics: cross-sample rule
    K, info = dynamics.ntk(with_bn, x, x[:3], bn_mode="batch", method="structured", dtype=F64, return_info=True)
    assert info.rules == {"0.emb": "linear-gram-batch", "0.out": "linear-gram-batch", "1": "bn-affine-batch"}
    assert rel(K, reference_ntk(with_bn, x, x[:3], bn_mode="batch")) <= 1e-10


class _Embed(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(7, 3)
        self.fc = nn.Linear(3, 2)

    def forward(self, idx):  # idx: (n, T) integer tokens
        return self.fc(torch.tanh(self.emb(idx)).mean(1))


@pytest.mark.parametrize("method", METHODS)
def test_ntk_with_integer_inputs_and_multidimensional_outputs(method):
    model, idx, idx2 = _Embed(), torch.randint(0, 7, (4, 5)), torch.randint(0, 7, (3, 5))
    K, info = dynamics.ntk(model, idx, idx2, method=method, dtype=F64, return_info=True)
    assert rel(K, reference_ntk(model, idx, idx2)) <= 1e-10
    if info.method == "structured":
        assert info.rules == {"emb": "autograd", "fc": "linear-gram"}
    net = nn.Sequential(tiny_mlp(k=6), nn.Unflatten(1, (2, 3)))  # outputs (n, 2, 3) -> k = 6
    x = torch.randn(3, 3)
    K = dynamics.ntk(net, x, method=method, dtype=F64)
    assert K.shape == (3, 3, 6, 6) and rel(K, reference_ntk(net, x)) <= 1e-10


class _Tied(nn.Module):
    """A Linear applied twice and a weight shared between two modules: rules must step aside."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 3)
        self.b = nn.Linear(3, 3)
        self.c = nn.Linear(3, 2, bias=False)
        self.d = nn.Linear(3, 2, bias=False)
        self.d.weight = self.c.weight

    def forward(self, x):
        h = torch.tanh(self.a(torch.tanh(self.a(x))))
        h = torch.tanh(self.b(h))
        return self.c(h) + self.d(h * h)


def test_structured_falls_back_for_shared_parameters_and_repeated_calls():
    model, x = _Tied(), torch.randn(4, 3)
    K, info = dynamics.ntk(model, x, method="structured", dtype=F64, return_info=True)
    assert info.rules["b"] == "linear-gram"
    assert info.rules["a"] == "autograd" and "called 2 times" in info.fallback["a"]
    assert info.rules["c"] == "autograd" and "shared" in info.fallback["c"]
    assert rel(K, reference_ntk(model, x)) <= 1e-10


@pytest.mark.parametrize("method", ["jacobian", "ntvp", "structured"])
@pytest.mark.parametrize("spec, names", [
    (["fc.weight"], ["fc.weight"]),
    (r"conv\d\.weight|bn2\..*", ["conv1.weight", "conv2.weight", "bn2.weight", "bn2.bias"]),
    ("modules", ["conv2.weight", "fc.weight", "fc.bias"]),
    (["fc.bias", "stem.weight"], ["stem.weight", "fc.bias"]),
])
def test_ntk_parameter_subsets_match_reference(spec, names, method):
    model = randomise_bn(ResBlockBN()).eval()
    x = torch.randn(3, 2, 4, 4)
    spec_arg = [model.conv2, model.fc] if spec == "modules" else spec
    K = dynamics.ntk(model, x, params=spec_arg, method=method, dtype=F64)
    assert rel(K, reference_ntk(model, x, names=names, bn_mode="eval")) <= 1e-10


def test_linear_bias_only_and_weight_only_subsets_in_gram_rule():
    model, x = tiny_mlp(k=2), torch.randn(4, 3)
    for names in (["2.bias"], ["2.weight"], ["0.bias", "4.weight"]):
        K, info = dynamics.ntk(model, x, params=names, method="structured", dtype=F64, return_info=True)
        assert rel(K, reference_ntk(model, x, names=names)) <= 1e-10
        assert set(info.rules.values()) == {"linear-gram"}


@pytest.mark.parametrize("method", ["jacobian", "ntvp", "structured"])
@pytest.mark.parametrize("bn_mode", ["eval", "batch"])
def test_kernel_is_symmetric_psd_with_trace_equal_to_jacobian_frobenius_norm(method, bn_mode):
    model = randomise_bn(ResBlockBN()).train()
    x = torch.randn(5, 2, 4, 4)
    K = dynamics.ntk(model, x, bn_mode=bn_mode, method=method, dtype=F64)
    M = K.permute(0, 2, 1, 3).reshape(15, 15)
    assert torch.equal(M, M.T)  # exactly symmetric: blocks below the diagonal are mirrored
    eig = torch.linalg.eigvalsh(M)
    assert eig.min() >= -1e-12 * eig.max()
    J = dynamics.jacobian(model, x, bn_mode=bn_mode, dtype=F64)
    assert abs(float(M.trace()) - float((J ** 2).sum())) <= 1e-10 * float((J ** 2).sum())


@pytest.mark.parametrize("method", ["jacobian", "ntvp", "structured"])
@pytest.mark.parametrize("case", ["cnn", "batch"])
def test_small_memory_budget_forces_several_tiles_and_gives_same_kernel(method, case):
    if case == "cnn":
        model, x, x2, bn_mode = tiny_cnn(), torch.randn(7, 1, 5, 5), torch.randn(5, 1, 5, 5), None
        budget = 30_000 if method != "ntvp" else 40_000
    else:
        model, bn_mode = randomise_bn(ResBlockBN()).train(), "batch"
        x, x2 = torch.randn(6, 2, 4, 4), torch.randn(5, 2, 4, 4)
        budget = {"jacobian": 200_000, "ntvp": 600_000, "structured": 400_000}[method]
    full = dynamics.ntk(model, x, x2, bn_mode=bn_mode, method=method, dtype=F64)
    K, info = dynamics.ntk(model, x, x2, bn_mode=bn_mode, method=method, dtype=F64, memory_budget=budget,
                           return_info=True)
    assert info.tile2 < 5 or info.out_chunk < 3, str(info)
    assert info.estimated_peak_bytes <= budget
    assert rel(K, full) <= 1e-12
    assert rel(K, reference_ntk(model, x, x2, bn_mode=bn_mode)) <= 1e-10
    Ks = dynamics.ntk(model, x, bn_mode=bn_mode, method=method, dtype=F64, memory_budget=budget)
    assert rel(Ks, reference_ntk(model, x, bn_mode=bn_mode)) <= 1e-10


def _expected_auto(model, x, budget, bn_mode=None):
    sf = StackedFunction(model, x, None, bn_mode, F64)
    k_bytes = sf.n * sf.n * sf.k * sf.k * sf.itemsize
    _, plans = ntk_plans(sf, sf, True, Budget(budget, k_bytes, "K", fixed_bytes=sf.private_bytes).workspace)
    return plans, min((p for p in plans.values() if p.feasible), key=lambda p: p.flops).method


@pytest.mark.parametrize("case", ["mlp", "cnn", "resnet_batch"])
def test_auto_picks_the_cheapest_feasible_method_of_the_cost_model_and_is_correct(case):
    model, x, bn_mode = {
        "mlp": (tiny_mlp(k=2), torch.randn(6, 3), None),
        "cnn": (tiny_cnn(), torch.randn(5, 1, 5, 5), None),
        "resnet_batch": (randomise_bn(ResBlockBN()).train(), torch.randn(4, 2, 4, 4), "batch"),
    }[case]
    budget = 1 << 30
    plans, expected = _expected_auto(model, x, budget, bn_mode)
    K, info = dynamics.ntk(model, x, bn_mode=bn_mode, dtype=F64, memory_budget=budget, return_info=True)
    assert info.method == expected
    assert info.estimated_flops == {m: p.flops for m, p in plans.items()}
    assert rel(K, reference_ntk(model, x, bn_mode=bn_mode)) <= 1e-10


def test_auto_avoids_a_cheaper_method_that_does_not_fit_the_budget():
    model, x = tiny_cnn(), torch.randn(7, 1, 5, 5)
    loose, unconstrained = _expected_auto(model, x, 1 << 30)
    assert unconstrained == "structured"
    # K, the private copy, and just less than the smallest tile (with the slack the policy keeps free)
    held = 7 * 7 * 3 * 3 * 8 + StackedFunction(model, x, None, None, F64).private_bytes
    budget = held + int(loose["structured"].min_bytes / (1 - SLACK)) - 1
    plans, expected = _expected_auto(model, x, budget)
    assert not plans["structured"].feasible
    K, info = dynamics.ntk(model, x, dtype=F64, memory_budget=budget, return_info=True)
    assert info.method == expected != "structured"
    assert rel(K, reference_ntk(model, x)) <= 1e-10


def test_float32_kernel_close_to_float64_reference_and_model_dtype_kept():
    model, x = tiny_cnn(), torch.randn(4, 1, 5, 5)
    for method in ("jacobian", "ntvp", "structured"):
        K = dynamics.ntk(model, x, method=method)
        assert K.dtype == torch.float32
        assert rel(K.double(), reference_ntk(model, x)) <= 1e-5
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_info_is_readable_and_json_serialisable():
    _, info = dynamics.ntk(tiny_cnn(), torch.randn(3, 1, 5, 5), return_info=True)
    text = str(info)
    assert "method: structured" in text and "conv-patch" in text and "estimated peak memory" in text
    d = json.loads(json.dumps(info.to_dict()))
    assert d["method"] == "structured" and d["n1"] == 3 and d["wall_time_s"] > 0


def test_trace_of_kernel_equals_frobenius_norm_via_reference_jacobian():
    model, x = tiny_mlp(k=3), torch.randn(5, 3)
    K = dynamics.ntk(model, x, dtype=F64)
    J = reference_jacobian(model, x)
    assert abs(float(torch.einsum("iiaa->", K)) - float((J ** 2).sum())) <= 1e-10 * float((J ** 2).sum())


# ---------------------------------------------------------------- bad input
def test_x1_x2_with_different_feature_shapes_names_both():
    with pytest.raises(InputError, match=r"x1 has shape \(3, 3\).*x2 has shape \(2, 4\)"):
        dynamics.ntk(tiny_mlp(), torch.randn(3, 3), torch.randn(2, 4))


def test_unknown_method_lists_valid_ones():
    with pytest.raises(MethodError, match="'auto', 'jacobian', 'ntvp', 'structured'"):
        dynamics.ntk(tiny_mlp(), torch.randn(3, 3), method="fast")


@pytest.mark.parametrize("method", METHODS)
def test_memory_budget_smaller_than_any_tile_raises_with_a_size_that_then_works(method):
    import re

    model, x = tiny_cnn(), torch.randn(3, 1, 5, 5)
    with pytest.raises(MemoryBudgetError, match="raise memory_budget to at least") as err:
        dynamics.ntk(model, x, method=method, memory_budget=1000, dtype=F64)
    needed = int(re.search(r"at least (\d+)", str(err.value)).group(1))
    K = dynamics.ntk(model, x, method=method, memory_budget=needed, dtype=F64)
    assert rel(K, reference_ntk(model, x)) <= 1e-10


def test_kernel_larger_than_memory_budget_raises():
    with pytest.raises(MemoryBudgetError, match="the kernel itself"):
        dynamics.ntk(tiny_mlp(), torch.randn(30, 3), memory_budget=1000)


@pytest.mark.parametrize("budget", [0, -5, "1GB"])
def test_bad_memory_budget_rejected(budget):
    with pytest.raises(InputError, match="memory_budget"):
        dynamics.ntk(tiny_mlp(), torch.randn(3, 3), memory_budget=budget)


@pytest.mark.parametrize("x1, x2, match", [
    (torch.randn(0, 3), None, "empty"),
    (torch.randn(2, 3), torch.tensor([[1.0, float("nan"), 0.0]]), "x2 contains 1 non-finite"),
    (torch.randn(2, 3), [[1.0, 2.0, 3.0]], "x2 must be a torch.Tensor"),
])
def test_bad_inputs_raise_input_error(x1, x2, match):
    with pytest.raises(InputError, match=match):
        dynamics.ntk(tiny_mlp(), x1, x2)


# ---------------------------------------------------------------- the `dynamics ntk` command
@pytest.mark.parametrize("argv, method", [
    (["--model", "mlp", "--n", "4"], "structured"),
    (["--model", "cnn", "--n", "3", "--method", "jacobian", "--dtype", "float32"], "jacobian"),
    (["--model", "resnet", "--n", "3", "--method", "ntvp", "--bn-mode", "batch", "--k", "2"], "ntvp"),
])
def test_cli_ntk_prints_summary_and_passing_self_checks(argv, method, capsys):
    from dynamics.cli import main

    assert main(["ntk", *argv]) == 0
    out = capsys.readouterr().out
    assert f"method: {method}" in out and "K shape" in out and "effective rank" in out
    assert "check symmetry: max |K - Kᵀ| = 0 -> ok" in out
    assert "check trace" in out and "-> ok" in out.split("check trace")[1]


def test_cli_ntk_rejects_bad_sample_count(capsys):
    from dynamics.cli import main

    assert main(["ntk", "--n", "0"]) == 2
    assert "must be a positive integer" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["jacobian", "ntvp", "structured"])
def test_ntk_works_inside_torch_no_grad(method):
    model, x = randomise_bn(ResBlockBN()).train(), torch.randn(3, 2, 4, 4)
    with torch.no_grad():
        K = dynamics.ntk(model, x, bn_mode="batch", method=method, dtype=F64)
    assert rel(K, reference_ntk(model, x, bn_mode="batch")) <= 1e-10


@pytest.mark.parametrize("method", ["jacobian", "ntvp", "structured"])
@pytest.mark.parametrize("layer, x", [
    (nn.Linear(3, 2), torch.randn(4, 3)),
    (nn.Conv2d(2, 2, 3, padding=1), torch.randn(3, 2, 4, 4)),  # outputs (n, 2, 4, 4): k = 32
    (randomise_bn(nn.BatchNorm1d(3)).eval(), torch.randn(4, 3)),
])
def test_ntk_of_a_bare_layer_as_the_whole_model(layer, x, method):
    K, info = dynamics.ntk(layer, x, method=method, dtype=F64, return_info=True)
    assert rel(K, reference_ntk(layer, x)) <= 1e-10
    if method == "structured":
        assert list(info.rules) == [""] and "<root>" in str(info)
