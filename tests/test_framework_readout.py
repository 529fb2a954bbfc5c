"""readout_of: the one read-out finder (attribute first, else the last nn.Linear; none -> InputError)."""

from __future__ import annotations

import pytest
from torch import nn

import dynamics.models as dm
from dynamics.errors import InputError
from dynamics.models.base import readout_of


def test_classifier_readout_attribute_wins_over_module_order():
    model = dm.MLP(3, 2, depth=2, width=4)
    assert readout_of(model) is model.readout


def test_plain_sequential_gives_its_last_linear():
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2))
    assert readout_of(net) is net[4]


def test_non_linear_readout_attribute_falls_back_to_the_last_linear():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(3, 4)
            self.readout = nn.Identity()  # not an nn.Linear: not taken as the read-out

    odd = Odd()
    assert readout_of(odd) is odd.body


def test_model_without_linear_is_refused_with_a_message():
    with pytest.raises(InputError, match="no nn.Linear read-out"):
        readout_of(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()))
