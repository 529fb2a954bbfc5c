"""Bad input to the framework: each case raises a specific error (or warns) with a message that says what to do."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dynamics.errors import ConfigError, InputError
from dynamics.training.config import TrainConfig
from dynamics.training.features import GaussianKernelFeatures
from dynamics.training.framework import switch, zeta_lr


def _data(n=12):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def test_duplicate_inputs_with_different_labels_are_refused_with_their_indices():
    x, y = _data()
    x[7] = x[2]
    y[7] = (y[2] + 1) % 3
    with pytest.raises(InputError, match=r"\[\[2, 7\]\]"):
        switch(_net(), x, y, num_classes=3)


def test_duplicate_inputs_with_the_same_label_are_accepted():
    x, y = _data()
    x[7], y[7] = x[2], y[2]
    _, info = switch(_net(), x, y, num_classes=3)
    assert info["certificate"]["holds"] and info["certificate"]["n_distinct"] == 11


def test_nan_in_the_representation_is_refused():
    x, y = _data()
    net = _net()
    with torch.no_grad():
        net[0].weight[0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        switch(net, x, y, num_classes=3)


@pytest.mark.parametrize("bandwidth", [0.0, -1.0, float("nan")])
def test_bandwidth_must_be_positive(bandwidth):
    x, y = _data()
    with pytest.raises(InputError, match="bandwidth"):
        switch(_net(), x, y, num_classes=3, feature_options={"bandwidth": bandwidth})
    with pytest.raises(InputError, match="bandwidth"):
        GaussianKernelFeatures(bandwidth=bandwidth)


def test_unknown_feature_name_and_option_are_refused():
    x, y = _data()
    with pytest.raises(InputError, match="unknown feature construction 'kernel'"):
        switch(_net(), x, y, num_classes=3, features="kernel")
    with pytest.raises(InputError, match="bad options"):
        switch(_net(), x, y, num_classes=3, feature_options={"width": 3})


def test_nnlabel_is_allowed_with_a_label_leakage_warning():
    x, y = _data()
    with pytest.warns(UserWarning, match="label leakage"):
        _, info = switch(_net(), x, y, num_classes=3, features="nnlabel")
    assert "label leakage" in info["features_reason"]


def test_zeta_step_must_be_positive():
    x, y = _data()
    with pytest.raises(InputError, match="zeta_step"):
        switch(_net(), x, y, num_classes=3, zeta_step=0.0)


def test_tau_at_or_beyond_the_budget_is_refused():
    with pytest.raises(ConfigError, match="tau"):
        TrainConfig(epochs=4, modified=True, tau=4).validate()
    with pytest.raises(ConfigError, match="unknown feature construction"):
        TrainConfig(epochs=4, modified=True, tau=2, features="kernel").validate()


def test_phase2_fields_are_validated():
    with pytest.raises(ConfigError, match="zeta_step"):
        TrainConfig(zeta_step=0.0).validate()
    with pytest.raises(ConfigError, match="phase2_weight_decay"):
        TrainConfig(phase2_weight_decay=-1.0).validate()
    with pytest.raises(ConfigError, match="phase2_loss"):
        TrainConfig(phase2_loss="hinge").validate()
    cfg = TrainConfig(modified=True, epochs=4, zeta_step=2.0, phase2_weight_decay=0.0, phase2_loss="mse").validate()
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_zeta_step_final_below_zeta_step_is_refused():
    with pytest.raises(ConfigError, match="zeta_step_final"):
        TrainConfig(zeta_step=1.0, zeta_step_final=0.5).validate()
    with pytest.raises(InputError, match="zeta_lr"):
        zeta_lr(0.01, 3, 5, 10, 1e-4, 1.0)  # epoch before the switch
