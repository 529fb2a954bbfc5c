"""Models: registry, shapes on every supported input size, the read-out interface, and bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

import dynamics.models as dm
from dynamics.errors import InputError

CONV = ["cnn", "resnet_small", "resnet8", "resnet20", "resnet32", "preact_resnet18"]
SMALL = {"resnet8": {"width": 0.25}, "resnet20": {"width": 0.25}, "resnet32": {"width": 0.25},
         "preact_resnet18": {"width": 0.0625}}


def _build(name, c, k, size, **extra):
    opts = dict(SMALL.get(name, {}))
    if name in ("cnn", "mlp", "nonlinear_head_mlp", "normalised_head_mlp"):
        opts["input_size"] = size
    if name in ("mlp", "nonlinear_head_mlp", "normalised_head_mlp"):
        opts.update(width=8)
    opts.update(extra)
    torch.manual_seed(0)
    return dm.create(name, c, k, **opts)


@pytest.mark.parametrize("name", CONV + ["mlp", "nonlinear_head_mlp", "normalised_head_mlp"])
@pytest.mark.parametrize("c,size", [(1, 16), (1, 28), (3, 32), (2, 20)])
def test_every_model_maps_images_of_16_to_32_pixels_to_logits(name, c, size):
    model = _build(name, c, 7, size)
    x = torch.rand(3, c, size, size)
    out = model(x)
    assert out.shape == (3, 7)
    assert model.features(x).shape == (3, model.feature_dim)
    assert isinstance(model.readout, nn.Linear) and model.readout.in_features == model.feature_dim


@pytest.mark.parametrize("name", CONV + ["mlp"])
def test_forward_is_the_readout_applied_to_features(name):
    model = _build(name, 1, 4, 28).eval()
    x = torch.rand(5, 1, 28, 28)
    assert torch.equal(model(x), model.readout(model.features(x)))


def _readout_homogeneity_gap(model, x, c=1.7):
    """max |f(c θ_S) - c f(θ_S)| with S = the read-out's weight and bias."""
    model.eval()
    names = [n for n, _ in model.named_parameters() if n.startswith("readout.")]
    params = dict(model.named_parameters())
    scaled = {**params, **{n: c * params[n] for n in names}}
    with torch.no_grad():
        return (functional_call(model, scaled, (x,)) - c * model(x)).abs().max().item()


@pytest.mark.parametrize("name", CONV + ["mlp"])
def test_on_model_structure_holds_with_S_the_readout(name):
    model = _build(name, 1, 3, 16)
    x = torch.rand(4, 1, 16, 16)
    assert _readout_homogeneity_gap(model, x) < 1e-5


@pytest.mark.parametrize("name,opts", [("nonlinear_head_mlp", {"head": "sigmoid"}),
                                       ("nonlinear_head_mlp", {"head": "tanh"}),
                                       ("normalised_head_mlp", {"norm": "layernorm"}),
                                       ("normalised_head_mlp", {"norm": "batchnorm"})])
def test_theory_models_violate_readout_homogeneity(name, opts):
    model = _build(name, 1, 3, 16, **opts)
    if opts.get("norm") == "batchnorm":  # running stats that are not the identity map
        model.train()
        with torch.no_grad():
            model(torch.rand(32, 1, 16, 16) * 3)
    assert _readout_homogeneity_gap(model, torch.rand(6, 1, 16, 16)) > 1e-2


def test_relu_chain_has_width_one_and_rank_at_most_input_dim():
    torch.manual_seed(1)
    d_x, depth = 3, 6
    model = dm.ReLUChain(depth, d_x).double()
    with torch.no_grad():  # positive weights keep every ReLU active on positive inputs
        for p in model.parameters():
            p.abs_()
    assert [tuple(p.shape) for p in model.parameters()] == [(1, d_x)] + [(1, 1)] * (depth - 1)
    x = torch.rand(10, d_x, dtype=torch.float64) + 0.1
    params = dict(model.named_parameters())
    jac = torch.func.jacrev(lambda p: functional_call(model, p, (x,)).reshape(-1))(params)
    J = torch.cat([j.reshape(10, -1) for j in jac.values()], dim=1)
    assert torch.linalg.matrix_rank(J).item() <= d_x
    f = model(x).detach().reshape(-1)
    for name in list(params)[1:]:  # ∂f/∂w_l = f / w_l for every scalar layer l >= 2
        torch.testing.assert_close(jac[name].reshape(-1), f / params[name].item())


def test_relu_chain_first_bias_adds_one_parameter():
    model = dm.create("relu_chain", 4, 1, depth=3, bias_first=True)
    assert sum(p.numel() for p in model.parameters()) == 4 + 1 + 1 + 1


def test_preact_resnet18_matches_the_published_parameter_count():
    # kuangliu/pytorch-cifar PreActResNet18 on CIFAR-10: 11,171,146 parameters.
    assert sum(p.numel() for p in dm.create("preact_resnet18", 3, 10).parameters()) == 11_171_146


@pytest.mark.parametrize("name,depth", [("resnet8", 8), ("resnet20", 20), ("resnet32", 32)])
def test_cifar_resnet_has_depth_minus_one_3x3_convs_and_option_b_shortcuts(name, depth):
    model = dm.create(name, 3, 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert sum(m.kernel_size == (3, 3) for m in convs) == depth - 1
    assert sum(m.kernel_size == (1, 1) for m in convs) == 2  # one projection per stage change


def test_width_multiplier_scales_channels():
    narrow, wide = dm.create("resnet20", 3, 10, width=0.5), dm.create("resnet20", 3, 10, width=2)
    assert (narrow.feature_dim, wide.feature_dim) == (32, 128)
    assert dm.create("resnet_small", 1, 10).feature_dim == 32


def test_mlp_options_depth_width_bias_batchnorm():
    m = dm.create("mlp", 6, 2, depth=3, width=5, bias=False, batchnorm=True, activation="tanh")
    assert sum(isinstance(x, nn.Linear) for x in m.modules()) == 4
    assert sum(isinstance(x, nn.BatchNorm1d) for x in m.modules()) == 3
    assert all(x.bias is None for x in m.modules() if isinstance(x, nn.Linear))
    assert m(torch.rand(4, 6)).shape == (4, 2)


def test_batchnorm_models_are_deterministic_on_cpu():
    outs = []
    for _ in range(2):
        model = _build("resnet_small", 1, 10, 28).train()
        x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(3))
        loss = model(x).square().sum()
        loss.backward()
        outs.append((loss.detach(), model.conv1.weight.grad.clone()))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


@pytest.mark.parametrize("name", dm.available())
def test_no_model_uses_dropout(name):
    kw = {"input_size": 16} if name in ("cnn",) else {}
    model = dm.create(name, 1, 2, **kw) if "resnet" not in name else dm.create(name, 1, 2, width=0.125)
    assert not any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules())


def test_resnet_small_learns_a_tiny_batch_quickly():
    torch.manual_seed(0)
    model = dm.create("resnet_small", 1, 4)
    x, y = torch.rand(16, 1, 28, 28), torch.arange(16) % 4
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    first = None
    for _ in range(40):
        loss = nn.functional.cross_entropy(model(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first


# ---- bad input -------------------------------------------------------------------------------------------

def test_unknown_model_name_lists_the_valid_ones():
    with pytest.raises(InputError, match="unknown model 'resnet1000'.*preact_resnet18.*resnet20"):
        dm.create("resnet1000", 3, 10)


def test_unknown_option_names_the_accepted_ones():
    with pytest.raises(InputError, match="does not take option.*'depthh'.*accepts"):
        dm.create("mlp", 3, 10, depthh=3)


def test_cnn_built_for_28_rejects_16x16_input_at_first_call():
    model = dm.create("cnn", 1, 10, input_size=28)
    with pytest.raises(InputError, match="built for 28x28 inputs, got 16x16.*input_size=\\(16, 16\\)"):
        model(torch.rand(2, 1, 16, 16))


def test_cnn_without_input_size_or_too_small_fails_at_construction():
    with pytest.raises(InputError, match="needs input_size"):
        dm.create("cnn", 1, 10)
    with pytest.raises(InputError, match="at least 8x8"):
        dm.create("cnn", 1, 10, input_size=4, channels=(4, 4, 4))


def test_mlp_rejects_inputs_of_the_wrong_size():
    with pytest.raises(InputError, match=r"built for inputs of shape \(N, 1, 28, 28\)"):
        dm.create("mlp", 1, 10, input_size=28)(torch.rand(2, 1, 16, 16))


@pytest.mark.parametrize("name", ["resnet_small", "preact_resnet18"])
def test_resnets_reject_wrong_channels_and_too_small_inputs(name):
    model = dm.create(name, 3, 10, width=0.125)
    with pytest.raises(InputError, match="3 input channel.*in_channels=1"):
        model(torch.rand(2, 1, 32, 32))
    with pytest.raises(InputError, match="at least"):
        model(torch.rand(2, 3, 2, 2))
    with pytest.raises(InputError, match="at least"):
        dm.create(name, 3, 10, input_size=2)
    with pytest.raises(InputError, match="built for 32x32"):
        dm.create(name, 3, 10, width=0.125, input_size=32)(torch.rand(1, 3, 16, 16))


def test_bad_constructor_arguments_raise_input_errors():
    with pytest.raises(InputError, match="6n \\+ 2"):
        dm.CifarResNet(3, 10, depth=10)
    with pytest.raises(InputError, match="unknown activation"):
        dm.create("mlp", 3, 2, activation="swishy")
    with pytest.raises(InputError, match="unknown head"):
        dm.create("nonlinear_head_mlp", 3, 2, head="relu")
    with pytest.raises(InputError, match="unknown norm"):
        dm.create("normalised_head_mlp", 3, 2, norm="groupnorm")
    with pytest.raises(InputError, match="depth >= 1"):
        dm.ReLUChain(0, 3)
    with pytest.raises(InputError, match="already registered"):
        dm.register("mlp")(lambda c, k: None)
