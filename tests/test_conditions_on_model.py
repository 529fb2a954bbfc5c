"""check_on_model_structure: where f_X = J_S θ_S must hold, where it must fail, and bad input."""

import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import dynamics
from dynamics.conditions.on_model import check_on_model_structure
from dynamics.errors import BatchNormModeError, InputError, ParameterSelectionError
from reference import (ResBlockBN, assert_unchanged, randomise_bn, reference_jacobian, reference_module, snapshot,
                       tiny_cnn, tiny_mlp)

F64 = torch.float64


def head(body_out, *layers):
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, body_out), *layers)


# ---------------------------------------------------------------------- where it must hold
@pytest.mark.parametrize("bias", [True, False])
def test_holds_for_linear_readout_with_and_without_bias_and_picks_readout_first(bias):
    model = tiny_mlp(k=2, bias=bias)
    rep = check_on_model_structure(model, torch.randn(6, 3))
    assert rep.holds and rep.euler_residual <= 1e-12 and rep.scaling_residual <= 1e-12
    assert rep.subset == (["4.weight", "4.bias"] if bias else ["4.weight"])
    assert len(rep.candidates) == 1 and rep.mode == "auto"


@pytest.mark.parametrize("bn_mode", ["eval", "batch", "frozen"])
def test_holds_for_resnet_block_with_batchnorm_and_skip_in_every_bn_mode(bn_mode):
    model = randomise_bn(ResBlockBN()).train()
    snap = snapshot(model)
    rep = check_on_model_structure(model, torch.randn(4, 2, 5, 5), bn_mode=bn_mode)
    assert rep.holds and rep.subset == ["fc.weight", "fc.bias"] and rep.bn_mode == bn_mode
    assert_unchanged(model, snap)


def test_holds_for_small_cnn_with_linear_readout():
    rep = check_on_model_structure(tiny_cnn(), torch.randn(3, 1, 5, 5))
    assert rep.holds and rep.subset == ["5.weight", "5.bias"]


def test_holds_for_every_single_layer_of_bias_free_relu_network():
    model = tiny_mlp(k=2, bias=False, act=nn.ReLU)
    x = torch.randn(7, 3)
    for name in ["0.weight", "2.weight", "4.weight"]:
        rep = check_on_model_structure(model, x, subset=[name])
        assert rep.holds and rep.subset == [name] and rep.mode == "given", name


@pytest.mark.parametrize("norm", [lambda k: nn.LayerNorm(k), lambda k: nn.BatchNorm1d(k)])
def test_holds_with_affine_normalisation_after_last_linear_with_S_its_gamma_beta(norm):
    model = randomise_bn(head(3, norm(3))).eval()
    with torch.no_grad():  # non-trivial γ, β for LayerNorm too
        model[3].weight.uniform_(0.5, 1.5)
        model[3].bias.uniform_(-0.5, 0.5)
    rep = check_on_model_structure(model, torch.randn(6, 3))
    assert rep.holds and rep.subset == ["3.weight", "3.bias"]


def test_holds_for_affine_batchnorm_head_with_batch_statistics():
    model = randomise_bn(head(3, nn.BatchNorm1d(3))).train()
    rep = check_on_model_structure(model, torch.randn(6, 3), bn_mode="batch")
    assert rep.holds and rep.subset == ["3.weight", "3.bias"]


@pytest.mark.exact  # a zero read-out gives f = 0 and J_S·0 = 0 exactly
def test_holds_trivially_when_zero_readout_makes_outputs_zero():
    model = tiny_mlp(k=2)
    with torch.no_grad():
        model[4].weight.zero_()
        model[4].bias.zero_()
    rep = check_on_model_structure(model, torch.randn(5, 3))
    assert rep.holds and rep.euler_residual == 0.0


# ---------------------------------------------------------------------- where it must fail
@pytest.mark.parametrize("act", [nn.Sigmoid, nn.Tanh])
def test_fails_for_sigmoid_or_tanh_head_with_readable_explanation(act):
    model = head(2, act())
    rep = check_on_model_structure(model, torch.randn(6, 3))
    assert not rep.holds
    assert rep.subset == ["2.weight", "2.bias"]              # the closest candidate, tried first
    assert len(rep.candidates) == 6                          # 2 module groups + 4 tensors, all tried
    assert [c.label for c in rep.candidates[:3]] == ["module '2'", "tensor '2.bias'", "tensor '2.weight'"]
    assert "no parameter group enters f homogeneously of degree 1" in rep.explanation
    assert "closest candidate module '2'" in rep.explanation and "sigmoid/tanh head" in rep.explanation
    assert rep.euler_residual > 1e-3


def test_fails_for_layernorm_without_affine_after_last_linear_and_says_scale_invariant():
    model = head(4, nn.LayerNorm(4, elementwise_affine=False))
    with torch.no_grad():
        model[2].weight.mul_(5)  # pre-normalisation variance ≫ eps, so the scale invariance is clean
    rep = check_on_model_structure(model, torch.randn(6, 3))
    assert not rep.holds
    closest = rep.candidates[0]
    assert closest.euler_residual == pytest.approx(1.0, abs=1e-3)   # J_S θ_S ≈ 0: degree 0, not 1
    assert "invariant to scaling" in rep.explanation


@pytest.mark.parametrize("bn_mode", ["eval", "batch"])
def test_fails_for_batchnorm_without_affine_after_last_linear(bn_mode):
    model = randomise_bn(head(3, nn.BatchNorm1d(3, affine=False))).train()
    rep = check_on_model_structure(model, torch.randn(8, 3), bn_mode=bn_mode)
    assert not rep.holds and rep.euler_residual > 1e-3


class Squared(nn.Module):
    """y = (w ⊙ w) x: the weight enters with degree 2."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(2, 3))

    def forward(self, x):
        return x @ (self.w * self.w).T


def test_fails_for_parameter_entering_with_degree_two():
    rep = check_on_model_structure(Squared(), torch.randn(5, 3))
    assert not rep.holds
    assert rep.euler_residual == pytest.approx(1.0, rel=1e-10)     # J θ = 2 f
    assert rep.scaling_residuals[2.0] == pytest.approx(1.0, rel=1e-10)  # f(2θ) = 4 f = 2·(2f)


def test_fails_for_frozen_readout_and_explanation_mentions_requires_grad():
    model = head(2)
    model[2].requires_grad_(False)
    rep = check_on_model_structure(model, torch.randn(6, 3))
    assert not rep.holds and all(not n.startswith("2.") for c in rep.candidates for n in c.names)
    assert "requires_grad=False" in rep.explanation


def test_fails_for_given_hidden_layer_subset_when_readout_has_bias():
    model = tiny_mlp(k=2, bias=True, act=nn.ReLU)
    rep = check_on_model_structure(model, torch.randn(6, 3), subset=r"0\..*")
    assert not rep.holds and rep.subset == ["0.weight", "0.bias"]
    assert "not positively homogeneous of degree 1 in the given subset" in rep.explanation


# ---------------------------------------------------------------------- against the reference
def test_euler_residual_equals_reference_jacobian_times_theta():
    model = head(2, nn.Sigmoid())
    x = torch.randn(5, 3)
    names = ["2.weight", "2.bias"]
    rep = check_on_model_structure(model, x, subset=names)
    J = reference_jacobian(model, x, names)
    theta = torch.cat([dict(model.named_parameters())[n].detach().double().reshape(-1) for n in names])
    f = reference_module(model, x, None)(x.double()).reshape(-1).detach()
    assert rep.euler_residual == pytest.approx(float((f - J @ theta).norm() / f.norm()), rel=1e-10)


def test_rtol_is_an_argument_and_decides_holds():
    model = head(2, nn.Sigmoid())
    x = torch.randn(6, 3)
    rep = check_on_model_structure(model, x, subset=["2.weight", "2.bias"], rtol=10.0)
    assert rep.holds and rep.rtol == 10.0
    assert check_on_model_structure(tiny_mlp(), x).rtol == 1e-8


@given(depth=st.integers(1, 3), width=st.integers(1, 4), k=st.integers(1, 3), n=st.integers(1, 5),
       bias=st.booleans(), act=st.sampled_from([nn.Tanh, nn.ReLU, nn.Softplus]), seed=st.integers(0, 2**16))
def test_property_linear_head_holds_and_sigmoid_head_fails_on_random_tiny_nets(depth, width, k, n, bias, act, seed):
    torch.manual_seed(seed)
    layers, d = [], 2
    for _ in range(depth):
        layers += [nn.Linear(d, width, bias=bias), act()]
        d = width
    layers.append(nn.Linear(d, k, bias=bias))
    model = nn.Sequential(*layers)
    x = torch.randn(n, 2)
    rep = check_on_model_structure(model, x)
    last = f"{len(layers) - 1}"
    assert rep.holds and rep.subset[0] == f"{last}.weight"
    squashed = nn.Sequential(model, nn.Sigmoid())
    bad = check_on_model_structure(squashed, x, subset=[f"0.{last}.weight"] + ([f"0.{last}.bias"] if bias else []))
    assert not bad.holds


# ---------------------------------------------------------------------- reports and bad input
def test_report_str_and_to_dict_are_readable_and_json_ready():
    rep = check_on_model_structure(head(2, nn.Tanh()), torch.randn(4, 3))
    text = str(rep)
    assert text.startswith("On-model structure: FAILS") and "Euler residual" in text and "candidates tried  6" in text
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["holds"] is False and len(d["candidates"]) == 6 and d["rtol"] == 1e-8


def test_top_level_lazy_export_is_this_function():
    assert dynamics.check_on_model_structure is check_on_model_structure


@pytest.mark.parametrize("subset", [[], ()])
def test_empty_subset_raises_input_error(subset):
    with pytest.raises(InputError, match="subset is empty"):
        check_on_model_structure(tiny_mlp(), torch.randn(3, 3), subset=subset)


def test_subset_none_raises_input_error():
    with pytest.raises(InputError, match="subset='auto'"):
        check_on_model_structure(tiny_mlp(), torch.randn(3, 3), subset=None)


def test_unknown_parameter_name_raises_parameter_selection_error():
    with pytest.raises(ParameterSelectionError, match="unknown parameter name"):
        check_on_model_structure(tiny_mlp(), torch.randn(3, 3), subset=["fc.weight"])


@pytest.mark.parametrize("rtol", [0.0, -1e-8, float("nan"), float("inf")])
def test_non_positive_rtol_raises_input_error(rtol):
    with pytest.raises(InputError, match="rtol"):
        check_on_model_structure(tiny_mlp(), torch.randn(3, 3), rtol=rtol)


@pytest.mark.parametrize("scales", [(), (-1.0, 2.0), (0.0,), (float("nan"),), "ab"])
def test_bad_scales_raise_input_error(scales):
    with pytest.raises(InputError, match="scales"):
        check_on_model_structure(tiny_mlp(), torch.randn(3, 3), scales=scales)


def test_batchnorm_in_training_mode_needs_bn_mode():
    with pytest.raises(BatchNormModeError, match="bn_mode"):
        check_on_model_structure(ResBlockBN().train(), torch.randn(3, 2, 4, 4))
