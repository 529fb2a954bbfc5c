"""The sympy proofs: each simplified difference is exactly 0, and a wrong identity is not."""

from __future__ import annotations

import pytest

from dynamics.errors import InputError
from theory.symbolic import (
    all_proofs, chain_rank_identity, decomposition_identity, euler_identity, relu_layer_homogeneity,
)


def test_euler_identity_linear_head_is_exact():
    p = euler_identity(2, 2)
    assert p.holds and p.difference == "0"


def test_euler_identity_fails_with_sigmoid_head():
    p = euler_identity(1, 1, head="sigmoid")
    assert not p.holds and p.difference != "0"


def test_relu_first_layer_homogeneity_is_exact():
    assert relu_layer_homogeneity(2, 2).holds


def test_symbolic_decomposition_is_exact():
    assert decomposition_identity(3, 2).holds


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_chain_column_identity_and_rank_factorisation_are_exact(depth):
    assert chain_rank_identity(depth, 2, 3).holds


def test_all_proofs_quick_hold_and_serialise():
    proofs = all_proofs(quick=True)
    assert proofs and all(p.holds for p in proofs)
    assert proofs[0].to_dict()["difference"] == "0" and "simplified difference = 0" in str(proofs[0])


def test_bad_sizes_raise_input_error():
    with pytest.raises(InputError):
        decomposition_identity(2, 3)
    with pytest.raises(InputError):
        chain_rank_identity(1)
    with pytest.raises(InputError):
        euler_identity(head="softmax")
