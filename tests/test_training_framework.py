"""The modified framework: f̃ = f at the switch, certificates that can fail, caches equal recomputation, probes
against dense references."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dynamics.engine.jacobian import jacobian
from dynamics.errors import InputError
from dynamics.training.features import (GaussianKernelFeatures, NearestLabelFeatures, RandomReLUFeatures,
                                        group_duplicates, make_features)
from dynamics.training.framework import rebuild, switch
from dynamics.training.probes import Probe, measure


def _data(n=24, d=4, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, k, (n,), generator=g)


def _net(d=4, k=3, width=8, bn=False):
    torch.manual_seed(1)
    layers = [nn.Linear(d, width)] + ([nn.BatchNorm1d(width)] if bn else []) + [nn.ReLU(), nn.Linear(width, k)]
    return nn.Sequential(*layers)


@pytest.mark.filterwarnings("ignore:features='nnlabel' is a control")
@pytest.mark.parametrize("name", ["gaussian", "random", "nnlabel"])
def test_switch_leaves_the_function_unchanged_and_certifies_alignment(name):
    x, y = _data()
    net = _net()
    aug, info = switch(net, x, y, num_classes=3, features=name, lr=0.1, batch_size=8)
    assert torch.equal(aug(x), net(x))
    assert info["certificate"]["holds"] and info["features"] == name
    # the certificate's claim, checked directly: each column of Y is in Col Φ on the training set
    phi = aug.phi(x).double()
    yk = nn.functional.one_hot(y, 3).double()
    sol = torch.linalg.lstsq(phi, yk, driver="gelsd").solution
    assert (phi @ sol - yk).norm() / yk.norm() < 1e-6


def test_gaussian_certificate_refuses_identical_points_with_different_labels():
    h = torch.tensor([[0.0, 1.0], [0.0, 1.0], [2.0, 0.0]])
    y = torch.tensor([0, 1, 1])
    with pytest.raises(InputError, match="different labels"):
        GaussianKernelFeatures().fit(h, y, 2).certify(h, y)


def test_gaussian_certificate_accepts_duplicates_with_consistent_labels():
    h = torch.tensor([[0.0, 1.0], [0.0, 1.0], [2.0, 0.0]])
    y = torch.tensor([1, 1, 0])
    cert = GaussianKernelFeatures().fit(h, y, 2).certify(h, y)
    assert cert.holds and cert.n_distinct == 2 and cert.sigma_min_lower > 0


def test_random_features_need_at_least_n_features():
    with pytest.raises(InputError, match="width_factor"):
        RandomReLUFeatures(width_factor=0.5)
    x, y = _data(n=30)
    fm = RandomReLUFeatures(min_width=4).fit(x, y, 3)
    assert fm.out_dim >= 30 and fm.certify(x, y).method == "numerical"


def test_nearest_label_features_are_the_labels_on_distinct_training_points():
    x, y = _data()
    fm = NearestLabelFeatures(chunk=5).fit(x, y, 3)
    assert torch.equal(fm(x), nn.functional.one_hot(y, 3).float())
    brute = torch.cdist(x[:4] + 0.01, x).argmin(1)
    assert torch.equal(fm.nearest(x[:4] + 0.01), brute)


def test_group_duplicates_counts_conflicts():
    assert group_duplicates(torch.tensor([[1.0], [1.0], [1.0], [2.0]]), torch.tensor([0, 0, 1, 1])) == (2, 1)


def test_auto_source_adds_the_input_when_the_representation_merges_points():
    x, y = _data(n=20)
    net = nn.Sequential(nn.Linear(4, 1), nn.ReLU(), nn.Linear(1, 3))
    with torch.no_grad():
        net[0].bias.fill_(-100.0)  # the hidden unit is dead: every point has representation 0
    aug, info = switch(net, x, y, num_classes=3, features="gaussian", lr=0.1, batch_size=8)
    assert info["source"] == "features+input" and "merges" in info["source_reason"]
    assert info["certificate"]["holds"]


@pytest.mark.filterwarnings("ignore:features='nnlabel' is a control")
@pytest.mark.parametrize("name", ["gaussian", "random", "nnlabel"])
def test_training_cache_equals_recomputed_features(name):
    x, y = _data()
    aug, _ = switch(_net(), x, y, num_classes=3, features=name, lr=0.1, batch_size=8)
    with torch.no_grad():
        aug.zeta.normal_()
    assert aug.has_training_cache and aug.cache_training_features(x) == "rows"
    idx = torch.tensor([3, 0, 7])
    # float32 kernel (cache from float64 entries, recomputation in float32): agree to a few float32 ulps of |g|
    torch.testing.assert_close(aug(x[idx], index=idx), aug(x[idx]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(aug.training_features(idx), aug.phi(x[idx]), rtol=1e-5, atol=1e-6)
    with aug.without_cache():
        assert not aug.has_training_cache
    assert aug.has_training_cache


@pytest.mark.filterwarnings("ignore:features='nnlabel' is a control")
@pytest.mark.parametrize("name", ["gaussian", "random", "nnlabel"])
def test_rebuild_from_state_dict_reproduces_f_tilde(name):
    x, y = _data()
    aug, _ = switch(_net(bn=True).eval(), x, y, num_classes=3, features=name, lr=0.1, batch_size=8)
    with torch.no_grad():
        aug.zeta.normal_()
        for p in aug.base.parameters():
            p.add_(0.1)
    state = {k: v.clone() for k, v in aug.state_dict().items()}
    again = rebuild(_net(bn=True), _net(bn=True), aug.spec(), state).eval()
    assert torch.equal(again(x), aug.eval()(x))


def test_frozen_representation_stays_in_eval_and_gets_no_gradient():
    x, y = _data()
    aug, _ = switch(_net(bn=True), x, y, num_classes=3, features="gaussian", lr=0.1, batch_size=8)
    aug.train()
    assert not aug.rep.net.training
    aug(x).square().sum().backward()
    assert all(p.grad is None for p in aug.rep.parameters())
    assert aug.zeta.grad is not None


def test_feature_scale_follows_the_sgd_rule_and_is_one_for_adam():
    x, y = _data()
    _, sgd = switch(_net(), x, y, num_classes=3, features="gaussian", lr=0.1, batch_size=8, momentum=0.9)
    _, adam = switch(_net(), x, y, num_classes=3, features="gaussian", lr=0.1, batch_size=8, adaptive=True)
    assert adam["scale"] == 1.0
    fm = make_features("gaussian").fit(_net()[0:2](x).detach().relu(), y, 3)
    assert sgd["scale"] > 0 and fm.out_dim == len(x)


# --- probes -------------------------------------------------------------------------------------------------------

def _dense_reference(model, x, y, k):
    j = jacobian(model, x, dtype=torch.float64)
    u, s, _ = torch.linalg.svd(j, full_matrices=False)
    r = int((s > s[0] * 1e-7).sum())
    yv = nn.functional.one_hot(y, k).double().reshape(-1)
    floor = yv - u[:, :r] @ (u[:, :r].T @ yv)
    return float(floor.norm() / yv.norm()), r, float(s[r - 1])


def test_probe_alignment_rank_sigma_match_dense_svd_reference():
    torch.manual_seed(0)
    x, y = _data(n=12)
    net = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 3))  # p = 27 < nk = 36: alignment fails
    rec = measure(net, x, y, 3)
    ref_r, ref_rank, ref_sigma = _dense_reference(net, x, y, 3)
    assert rec["rank"] == ref_rank
    assert rec["alignment_residual"] == pytest.approx(ref_r, rel=1e-6) and ref_r > 0.05
    assert rec["sigma_min"] == pytest.approx(ref_sigma, rel=1e-4)


def test_probe_loss_terms_decompose_the_square_loss_under_on_model_structure():
    x, y = _data(n=12)
    net = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 3))
    rec = measure(net, x, y, 3)
    assert rec["on_model_holds"]
    assert rec["loss_fit"] + rec["loss_floor"] == pytest.approx(rec["square_loss"], rel=1e-9)


def test_probe_kernel_distance_is_zero_at_start_and_grows_after_a_change():
    x, y = _data()
    net = _net()
    probe = Probe(x, y, 3, every=1, size=6)
    assert probe(net, 0)["kernel_distance"] == 0.0
    assert probe(net, 1)["kernel_distance"] == pytest.approx(0.0, abs=1e-12)
    with torch.no_grad():
        net[0].weight.mul_(3.0).add_(1.0)
    assert probe(net, 2)["kernel_distance"] > 1e-3


def test_probe_uses_eval_mode_for_batchnorm_and_leaves_running_stats_alone():
    x, y = _data()
    net = _net(bn=True)
    before = net[1].running_mean.clone()
    rec = Probe(x, y, 3, every=1, size=6)(net, 0)
    assert rec["bn_mode"] == "eval" and torch.equal(net[1].running_mean, before) and net.training


def test_probe_size_bound_is_enforced():
    x, y = _data(n=50)
    with pytest.raises(ValueError, match="max_rows"):
        Probe(x, y, 3, every=1, size=50, max_rows=100)


def test_auto_features_are_the_label_free_gaussian_and_nnlabel_warns():
    x, y = _data()
    _, auto = switch(_net(), x, y, num_classes=3, features="auto", lr=0.1, batch_size=8)
    assert auto["features"] == "gaussian" and auto["certificate"]["holds"]
    with pytest.warns(UserWarning, match="label leakage"):
        _, control = switch(_net(), x, y, num_classes=3, features="nnlabel", lr=0.1, batch_size=8)
    assert control["certificate"]["method"] == "label leakage"
