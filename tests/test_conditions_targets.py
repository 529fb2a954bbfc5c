"""normalise_targets: the accepted forms of y and the errors for the others."""

import numpy as np
import pytest
import torch

from dynamics.conditions.targets import TargetError, normalise_targets


@pytest.mark.exact  # casts, reshapes and one-hot: exact operations
def test_float_matrix_passes_through_as_float64():
    y = torch.randn(4, 3)
    Y = normalise_targets(y, 4, 3)
    assert Y.dtype == torch.float64 and torch.equal(Y, y.double())


@pytest.mark.exact  # casts, reshapes and one-hot: exact operations
def test_integer_labels_become_one_hot_rows_when_k_above_one():
    Y = normalise_targets(np.array([1, 0, 2, 1]), 4, 3)
    assert torch.equal(Y, torch.eye(3, dtype=torch.float64)[[1, 0, 2, 1]])


@pytest.mark.exact  # casts, reshapes and one-hot: exact operations
def test_vector_is_a_column_when_k_is_one_for_floats_and_integers():
    assert torch.equal(normalise_targets(torch.tensor([0.5, -1.0]), 2, 1), torch.tensor([[0.5], [-1.0]]).double())
    assert torch.equal(normalise_targets(torch.tensor([3, 7]), 2, 1), torch.tensor([[3.0], [7.0]]).double())


@pytest.mark.exact  # casts, reshapes and one-hot: exact operations
def test_trailing_dimensions_are_flattened_row_major_like_model_outputs():
    y = torch.arange(12.0).reshape(2, 2, 3)
    assert torch.equal(normalise_targets(y, 2, 6), y.reshape(2, 6).double())


@pytest.mark.exact  # casts, reshapes and one-hot: exact operations
def test_integer_matrix_is_cast_to_float():
    y = torch.tensor([[0, 1], [1, 0]])
    assert torch.equal(normalise_targets(y, 2, 2), y.double())


@pytest.mark.parametrize("y,n,k,match", [
    (torch.randn(3, 2), 4, 2, "x has 4 samples"),
    (torch.randn(4, 2), 4, 3, "k=3 outputs"),
    (torch.randn(4, 2, 2), 4, 3, "4 targets per sample"),
    (torch.randn(4), 4, 2, "integer class labels"),
    (torch.tensor([0, 3]), 2, 3, "0..2"),
    (torch.tensor([-1, 0]), 2, 3, "0..2"),
    (np.array([[1.0, None]], dtype=object), 1, 2, "object"),
    (torch.tensor([[1.0 + 1j, 0]]), 1, 2, "complex"),
    (torch.tensor([[float("nan"), 0.0]]), 1, 2, "non-finite"),
    ("abc", 1, 1, "torch.Tensor or numpy"),
])
def test_bad_targets_raise_target_error_saying_what_to_pass(y, n, k, match):
    with pytest.raises(TargetError, match=match):
        normalise_targets(y, n, k)
