"""ColumnSpace (eigh of the smaller Gram) against a numpy SVD reference on matrices of known rank."""

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from torch import nn

from dynamics.conditions.column_space import ColumnSpace, column_space, default_rank_rtol
from dynamics.errors import InputError, MethodError
from reference import reference_jacobian, tiny_mlp

F64 = torch.float64


def low_rank(m, p, r, seed=0, scale=1.0):
    g = np.random.default_rng(seed)
    return scale * (g.standard_normal((m, r)) @ g.standard_normal((r, p)))


def svd_projector(J, r):
    U, _, _ = np.linalg.svd(J, full_matrices=False)
    return U[:, :r] @ U[:, :r].T


@pytest.mark.parametrize("m,p,r", [(20, 50, 7), (60, 15, 4), (30, 30, 10), (12, 40, 12), (40, 9, 9), (8, 8, 1)])
def test_rank_and_projector_match_numpy_svd_on_known_low_rank_matrices(m, p, r):
    J = low_rank(m, p, r, seed=m + p + r)
    cs = ColumnSpace.from_jacobian(J)
    assert cs.rank == r == np.linalg.matrix_rank(J)
    assert cs.route == ("eigh(JJt)" if m <= p else "eigh(JtJ)")
    P = svd_projector(J, r)
    v = np.random.default_rng(1).standard_normal((m, 3))
    assert np.allclose(cs.project(v).numpy(), P @ v, atol=1e-10)
    U = cs.basis.numpy()
    assert np.allclose(U.T @ U, np.eye(r), atol=1e-12)
    s = np.linalg.svd(J, compute_uv=False)
    assert np.allclose(cs.singular_values[:r].numpy(), s[:r], rtol=1e-10)
    assert cs.sigma_min == pytest.approx(s[r - 1], rel=1e-10)
    assert cs.sigma_max == pytest.approx(s[0], rel=1e-12)


def test_matrix_rank_threshold_applied_to_sqrt_of_gram_eigenvalues_would_overcount_rank():
    # Why the default threshold is matrix_rank's convention on the Gram (σ > sqrt(max(m,p)·eps)·σ_max) and not
    # on σ = sqrt(λ) directly: the zero singular values come out of the Gram as ~1e-8·σ_max.
    m, p, r = 20, 50, 7
    J = low_rank(m, p, r, seed=3)
    cs = ColumnSpace.from_jacobian(J)
    naive = int((cs.singular_values > max(m, p) * np.finfo(float).eps * cs.sigma_max).sum())
    assert naive > r
    assert cs.rank == r
    assert cs.rtol == pytest.approx(math.sqrt(max(m, p) * np.finfo(float).eps))


def test_residual_zero_for_vectors_in_col_J_and_equals_svd_distance_otherwise():
    J = low_rank(15, 40, 6, seed=5)
    cs = ColumnSpace.from_jacobian(torch.from_numpy(J))
    inside = J @ np.random.default_rng(2).standard_normal(40)
    assert cs.relative_residual(inside) <= 1e-12
    v = np.random.default_rng(3).standard_normal(15)
    dist = np.linalg.norm(v - svd_projector(J, 6) @ v)
    assert cs.residual(v) == pytest.approx(dist, rel=1e-10)
    assert cs.relative_residual(v) == pytest.approx(dist / np.linalg.norm(v), rel=1e-10)
    assert np.allclose(cs.complement(v).numpy() + cs.project(v).numpy(), v, atol=1e-13)


def test_full_row_rank_projector_is_identity_and_residual_vanishes():
    J = np.random.default_rng(0).standard_normal((6, 20))
    cs = ColumnSpace.from_jacobian(J)
    assert cs.rank == 6
    v = np.random.default_rng(1).standard_normal(6)
    assert cs.relative_residual(v) <= 1e-13


@pytest.mark.exact  # J = 0 and v = 0 are answered exactly
def test_zero_matrix_has_rank_zero_and_projects_to_zero():
    cs = ColumnSpace.from_jacobian(torch.zeros(4, 7, dtype=F64))
    assert cs.rank == 0 and cs.sigma_min is None and cs.basis.shape == (4, 0)
    v = torch.ones(4, dtype=F64)
    assert cs.residual(v) == pytest.approx(2.0)
    assert cs.relative_residual(torch.zeros(4)) == 0.0


def test_explicit_rtol_decides_rank_on_sigma_over_sigma_max():
    U, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((10, 10)))
    V, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((10, 10)))
    s = np.array([1.0, 0.5, 1e-2, 1e-4, 1e-6, 0, 0, 0, 0, 0])
    J = U @ np.diag(s) @ V.T
    assert ColumnSpace.from_jacobian(J, rtol=1e-3).rank == 3
    assert ColumnSpace.from_jacobian(J, rtol=1e-5).rank == 4
    cs = ColumnSpace.from_jacobian(J, rtol=1e-3)
    assert cs.tolerance == pytest.approx(1e-3) and cs.sigma_min == pytest.approx(1e-2)


def test_float32_jacobian_uses_float32_matrix_rank_convention():
    J = torch.from_numpy(low_rank(10, 30, 4, seed=1)).float()
    cs = ColumnSpace.from_jacobian(J)
    assert cs.rtol == pytest.approx(default_rank_rtol(10, 30, torch.float32))
    assert cs.rtol == pytest.approx(30 * torch.finfo(torch.float32).eps)
    assert cs.rank == 4


@given(m=st.integers(1, 12), p=st.integers(1, 12), r=st.integers(0, 12), seed=st.integers(0, 10_000),
       log_scale=st.floats(-3, 3))
def test_property_projection_agrees_with_svd_for_random_wide_and_tall_low_rank(m, p, r, seed, log_scale):
    r = min(r, m, p)
    J = low_rank(m, p, r, seed, scale=10.0 ** log_scale) if r > 0 else np.zeros((m, p))
    s = np.linalg.svd(J, compute_uv=False)
    assume(r == 0 or s[r - 1] > 1e-6 * s[0])  # rank numerically unambiguous for the Gram route
    cs = ColumnSpace.from_jacobian(J)
    assert cs.rank == r
    v = np.random.default_rng(seed + 1).standard_normal(m)
    P = svd_projector(J, r) if r > 0 else np.zeros((m, m))
    assert np.allclose(cs.project(v).numpy(), P @ v, atol=1e-8 * max(1.0, np.linalg.norm(v)))


def test_column_space_of_model_matches_reference_jacobian_svd():
    model = tiny_mlp(d=3, h=3, k=2)
    x = torch.randn(20, 3)         # tall: n*k = 40 rows, p = 3*3+3 + 3*3+3 + 3*2+2 = 32 columns
    cs = column_space(model, x)
    R = reference_jacobian(model, x).numpy()
    r = np.linalg.matrix_rank(R)
    assert cs.shape == R.shape == (40, 32) and cs.route == "eigh(JtJ)" and cs.rank == r
    v = np.random.default_rng(0).standard_normal(R.shape[0])
    assert np.allclose(cs.project(v).numpy(), svd_projector(R, r) @ v, atol=1e-9)


def test_column_space_of_bias_free_relu_chain_has_rank_at_most_input_dim():
    # width-1 bias-free ReLU chain: rank J ≤ d_x whatever the depth (THEORY.md, statement 6)
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(3, 1, bias=False), nn.ReLU(), nn.Linear(1, 1, bias=False), nn.ReLU(),
                        nn.Linear(1, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.5, -0.2]]))
        net[2].weight.fill_(1.3)
        net[4].weight.fill_(0.7)
    x = torch.randn(12, 3).abs()   # all pre-activations positive
    cs = column_space(net, x)
    assert cs.rank == 3


@pytest.mark.parametrize("bad", [0.0, -1e-3, float("nan"), float("inf"), "1e-3", True])
def test_non_positive_or_non_numeric_rtol_raises_input_error(bad):
    with pytest.raises(InputError, match="rtol"):
        ColumnSpace.from_jacobian(np.eye(3), rtol=bad)


@pytest.mark.parametrize("J,match", [(np.zeros(3), "2-D"), (np.zeros((0, 3)), "2-D"),
                                     (np.array([[1.0, np.nan]]), "NaN"), (np.eye(2, dtype=int), "floating"),
                                     ([[1.0]], "numpy")])
def test_bad_jacobian_raises_input_error(J, match):
    with pytest.raises(InputError, match=match):
        ColumnSpace.from_jacobian(J)


def test_project_rejects_vector_of_wrong_length():
    cs = ColumnSpace.from_jacobian(np.eye(3))
    with pytest.raises(InputError, match=r"\(3,\)"):
        cs.project(np.ones(4))


def test_str_and_to_dict_are_readable_and_json_ready():

    cs = ColumnSpace.from_jacobian(low_rank(5, 8, 2))
    text = str(cs)
    assert "rank       2 of 5" in text and "tolerance" in text
    d = json.loads(json.dumps(cs.to_dict()))
    assert d["rank"] == 2 and len(d["singular_values"]) == 5


def test_svd_route_resolves_singular_values_below_gram_resolution():
    U, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((12, 12)))
    V, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((30, 12)))
    s = np.array([1.0, 0.3, 1e-3, 1e-9, 1e-11] + [0.0] * 7)
    J = U @ np.diag(s) @ V.T
    gram, svd = ColumnSpace.from_jacobian(J), ColumnSpace.from_jacobian(J, method="svd")
    assert gram.rank == 3 and svd.rank == 5 == np.linalg.matrix_rank(J)
    assert svd.route == "svd" and svd.rtol == pytest.approx(30 * np.finfo(float).eps)
    assert svd.sigma_min == pytest.approx(1e-11, rel=1e-3)
    v = U[:, 3] + U[:, 4]          # in Col J only through the two tiny singular values
    assert svd.relative_residual(v) <= 1e-4          # subspace angle ~ eps·‖J‖ / gap = 1e-5 here
    assert gram.relative_residual(v) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("m,p,r", [(20, 50, 7), (60, 15, 4)])
def test_svd_and_gram_routes_agree_on_well_separated_low_rank(m, p, r):
    J = low_rank(m, p, r, seed=7)
    a, b = ColumnSpace.from_jacobian(J), ColumnSpace.from_jacobian(J, method="svd")
    assert a.rank == b.rank == r
    v = np.random.default_rng(0).standard_normal(m)
    assert np.allclose(a.project(v).numpy(), b.project(v).numpy(), atol=1e-10)


def test_unknown_route_raises_method_error():
    with pytest.raises(MethodError, match="'gram' or 'svd'"):
        ColumnSpace.from_jacobian(np.eye(2), method="qr")


def test_accuracy_at_full_row_rank_is_rounding_and_otherwise_scales_with_the_condition_number():
    """At rank = m every direction is kept (P = I to rounding), so the stated accuracy is max(m, p)·eps even for
    an ill-conditioned J; one rank short (control), the kept eigenvectors' error eps·(σ_max/σ_r)² counts."""
    eps = torch.finfo(torch.float64).eps
    g = torch.Generator().manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(9, 4, generator=g, dtype=torch.float64))
    full = ColumnSpace.from_jacobian(U @ torch.diag(torch.tensor([1.0, 1e-2, 1e-3, 1e-4], dtype=torch.float64)) @ V.T)
    assert full.rank == 4 and full.accuracy == pytest.approx(9 * eps)
    short = ColumnSpace.from_jacobian(U @ torch.diag(torch.tensor([1.0, 1e-2, 1e-3, 0.0], dtype=torch.float64)) @ V.T)
    assert short.rank == 3 and short.accuracy == pytest.approx(9 * eps * 1e6, rel=1e-6)
