"""Bad input gets a specific exception that says what was wrong and what to do (dynamics/inputs.py and callers).

Each case below used to fail otherwise: a raw ``re.error`` for an invalid regex; a shape hint for integer x fed to
a network of Linear layers; torch's "Expected more than 1 value per channel" for bn_mode="batch" with n = 1; a
float16 computation that silently loses digits; x1/x2 dtypes mixed without a word.
"""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import dynamics
from dynamics.errors import BatchNormModeError, InputError, ParameterSelectionError
from dynamics.inputs import as_batch, as_vectors, compute_dtype
from reference import tiny_mlp

CPU = torch.device("cpu")


@pytest.mark.parametrize("call", [dynamics.jacobian, dynamics.ntk, dynamics.JacobianOperator])
def test_invalid_regex_in_params_is_a_parameter_selection_error(call):
    with pytest.raises(ParameterSelectionError, match=r"not a valid regular expression.*re\.fullmatch"):
        call(tiny_mlp(), torch.randn(2, 3), params="fc.(weight")


def test_integer_x_for_a_real_valued_network_says_to_pass_floats():
    with pytest.raises(InputError, match=r"dtype torch\.int64.*kept as integers.*x\.float\(\)"):
        dynamics.ntk(tiny_mlp(), torch.randint(0, 5, (3, 3)))


@pytest.mark.parametrize("bn_mode", ["batch", "frozen"])
def test_batch_statistics_with_one_sample_say_n_must_be_at_least_two(bn_mode):
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).train()
    with pytest.raises(BatchNormModeError, match=r"at least 2 samples.*x has 1 sample.*bn_mode='eval'"):
        dynamics.ntk(model, torch.randn(1, 3), bn_mode=bn_mode)
    assert dynamics.ntk(model, torch.randn(2, 3), bn_mode=bn_mode).shape == (2, 2, 2, 2)  # the control


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_refused_naming_supported_dtypes(dtype):
    with pytest.raises(InputError, match=r"float32 or torch\.float64 only"):
        dynamics.ntk(tiny_mlp(), torch.randn(2, 3), dtype=dtype)
    with pytest.raises(InputError, match=r"model's parameters are torch\.(float16|bfloat16).*dtype=torch\.float32"):
        dynamics.jacobian(tiny_mlp().to(dtype), torch.randn(2, 3))


def test_x1_x2_of_different_dtypes_warn_which_dtype_is_used():
    model = tiny_mlp()
    with pytest.warns(UserWarning, match=r"x1 has dtype torch\.float32 and x2 has dtype torch\.float64; both are "
                                         r"cast to the compute dtype torch\.float64"):
        K = dynamics.ntk(model, torch.randn(2, 3), torch.randn(2, 3, dtype=torch.float64), dtype=torch.float64)
    assert K.dtype == torch.float64
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same dtypes: no warning
        dynamics.ntk(model, torch.randn(2, 3), torch.randn(2, 3))


def test_input_helpers_validate_shape_type_and_values():
    assert as_batch(np.ones((2, 3), dtype=np.float32), torch.float64, CPU).dtype == torch.float64
    assert as_batch(torch.arange(4).reshape(2, 2), torch.float64, CPU).dtype == torch.int64
    with pytest.raises(InputError, match="object array"):
        as_batch(np.array([object()]), torch.float64, CPU)
    with pytest.raises(InputError, match=r"must have shape \(3,\) or \(3, m\)"):
        as_vectors(torch.ones(4), 3, "v", torch.float64, CPU)
    V, vector = as_vectors(np.ones(3), 3, "v", torch.float64, CPU)
    assert V.shape == (3, 1) and vector
    with pytest.raises(InputError, match="floating torch dtype"):
        compute_dtype(tiny_mlp(), torch.int32)
