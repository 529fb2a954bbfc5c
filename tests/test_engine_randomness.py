"""Random networks are refused before any work, naming the layer; detection is generic (no list of classes).

Each random module below is written in plain torch. Without the generic check (engine/randomness.py) the
stochastic-depth model gives two different kernels from two identical calls, and vmapped paths raise a raw
``RuntimeError: vmap: called random operation while in randomness error mode`` that names no layer.
"""

import pytest
import torch
from torch import nn

import dynamics
from dynamics.errors import StochasticModelError
from reference import DropPath, reference_ntk

F64 = torch.float64


class Residual(nn.Module):
    def __init__(self, p=0.1):
        super().__init__()
        self.fc1 = nn.Linear(3, 3)
        self.drop_path = DropPath(p)
        self.out = nn.Linear(3, 2)

    def forward(self, x):
        return self.out(x + self.drop_path(torch.tanh(self.fc1(x))))


class NoiseInParent(nn.Module):
    """The random draw is in the parent's own forward, not in a child module."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(x + 0.1 * torch.randn_like(x) if self.training else x)


class PrivateGenerator(nn.Module):
    """Random numbers from a private torch.Generator: the global random state never moves."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.gen = torch.Generator().manual_seed(0)

    def forward(self, x):
        return self.fc(x) * (1 + 0.1 * torch.rand(1, generator=self.gen, dtype=x.dtype))


@pytest.mark.parametrize("entry", ["ntk-auto", "ntk-ntvp", "ntk-jacobian", "jacobian", "operator"])
def test_stochastic_depth_in_training_mode_refused_naming_the_layer(entry):
    model, x = Residual().train(), torch.randn(4, 3)
    state = torch.get_rng_state()
    with pytest.raises(StochasticModelError, match=r"DropPath 'drop_path' draws random numbers in training mode"
                                                   r".*model\.eval\(\).*probability to 0"):
        if entry.startswith("ntk"):
            dynamics.ntk(model, x, method=entry[4:], dtype=F64)
        elif entry == "jacobian":
            dynamics.jacobian(model, x)
        else:
            dynamics.JacobianOperator(model, x)
    assert torch.equal(state, torch.get_rng_state())  # the user's generator was not advanced


def test_stochastic_depth_in_eval_mode_or_with_p_zero_is_deterministic_and_exact():
    x = torch.randn(4, 3)
    for model in (Residual().eval(), Residual(p=0.0).train()):
        assert (dynamics.ntk(model, x, dtype=F64) - reference_ntk(model.eval(), x)).abs().max() <= 1e-12


def test_random_draw_in_a_parent_forward_names_the_parent():
    with pytest.raises(StochasticModelError, match="NoiseInParent '<root>' draws random numbers"):
        dynamics.ntk(NoiseInParent().train(), torch.randn(3, 3))


def test_private_generator_detected_by_comparing_two_passes():
    with pytest.raises(StochasticModelError, match="PrivateGenerator '<root>' gives different outputs"):
        dynamics.jacobian(PrivateGenerator(), torch.randn(3, 3))


def test_dropout_family_and_attention_dropout_refused_but_zero_probability_accepted():
    with pytest.raises(StochasticModelError, match="Dropout '1'"):
        dynamics.ntk(nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.2), nn.Linear(4, 2)).train(), torch.randn(3, 3))
    enc = nn.TransformerEncoderLayer(4, 2, 8, dropout=0.1, batch_first=True).train()
    with pytest.raises(StochasticModelError, match="'(dropout|self_attn)"):
        dynamics.jacobian(enc, torch.randn(2, 3, 4))
    enc0 = nn.TransformerEncoderLayer(4, 2, 8, dropout=0.0, batch_first=True).train()
    assert dynamics.jacobian(enc0, torch.randn(2, 3, 4), dtype=F64).shape[0] == 2 * 3 * 4
