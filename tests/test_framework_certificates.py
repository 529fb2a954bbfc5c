"""The proven lower bound on σ_min(Φ) of the thresholded Gaussian kernel: checked against brute force (dense float64
SVD of the float32 matrix the model computes), and it says "not certified" where it must."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dynamics.errors import MemoryBudgetError
from dynamics.training.features import GaussianKernelFeatures
from dynamics.training.kernel_bound import (_collatz_wielandt, gaussian_kernel_bound, partition,
                                            rigorous_lambda_min)


def _points(n=60, d=4, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def _dense_phi32(fm, h):
    """The float32 Φ the model computes at test time on the training points (reference)."""
    return fm.raw(h).double()


@pytest.mark.parametrize("max_block", [1000, 16, 5])
def test_bound_is_below_the_brute_force_sigma_min_and_blocks_only_loosen_it(max_block):
    h = _points()
    fm = GaussianKernelFeatures(bandwidth=0.5, max_block=max_block).fit(h, torch.zeros(60, dtype=torch.long), 2)
    cert = fm.certify(h, torch.zeros(60, dtype=torch.long))
    true = float(torch.linalg.svdvals(_dense_phi32(fm, h)).min())
    b = cert.details["bound"]
    assert b["lambda_lower"] <= true
    if max_block >= 60:  # one block: the bound is the Cholesky-verified λ_min minus float error, nearly tight
        assert cert.holds and b["lambda_lower"] > true - 1e-3
    assert b["n_blocks"] == -(-60 // min(max_block, 60)) or b["max_block"] <= max_block


def test_cache_rows_and_dense_float32_kernel_obey_the_stated_entry_error():
    h = _points(40)
    fm = GaussianKernelFeatures(bandwidth=0.7).fit(h, torch.zeros(40, dtype=torch.long), 2)
    cert, rows = fm.certify_and_rows(h, torch.zeros(40, dtype=torch.long))
    dense = rows.dense(torch.arange(40)).double()
    ref = _dense_phi32(fm, h)
    assert torch.equal(dense > 0, ref > 0)  # same support (no entry near the threshold here)
    eta = cert.details["bound"]["eta"]  # |log(Φ̂/K)| ≤ η for each evaluation, so the two differ by ≤ e^{2η} − 1
    assert ((dense - ref).abs() <= (np.exp(2 * eta) - 1) * ref + 1e-12).all()
    assert float((dense - ref).abs().max()) > 0  # the float32 recomputation does differ: the bound is exercised


def test_nearly_coincident_points_are_not_certified():
    h = _points(20)
    h[1] = h[0] + 1e-6  # distinct in float32, but λ_min(Φ) ~ 1e-12 is below the float32 evaluation error
    y = torch.zeros(20, dtype=torch.long)
    cert = GaussianKernelFeatures().fit(h, y, 2).certify(h, y)
    assert cert.n_distinct == 20 and not cert.holds and cert.sigma_min_lower is None
    assert "NOT certified" in cert.text


@pytest.mark.parametrize("max_block", [20, 1000])
def test_too_wide_bandwidth_is_not_certified(max_block):
    h, y = _points(80), torch.zeros(80, dtype=torch.long)
    narrow = GaussianKernelFeatures(bandwidth=0.3, max_block=max_block).fit(h, y, 2).certify(h, y)
    wide = GaussianKernelFeatures(bandwidth=2.0, max_block=max_block).fit(h, y, 2).certify(h, y)
    assert narrow.holds and not wide.holds


def test_rigorous_lambda_min_is_below_eigvalsh_and_fails_on_an_indefinite_matrix():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((30, 30))
    spd = a @ a.T + 0.1 * np.eye(30)
    lo, est = rigorous_lambda_min(spd)
    exact = np.linalg.eigvalsh(spd)[0]
    assert lo <= exact and lo > exact * (1 - 1e-5)
    lo_bad, _ = rigorous_lambda_min(a + a.T)  # indefinite: no proof
    assert lo_bad == -np.inf


def test_collatz_wielandt_bounds_the_spectral_norm_from_above_and_beats_gershgorin():
    g = torch.Generator().manual_seed(1)
    e = torch.rand(12, 12, generator=g, dtype=torch.float64)
    e = (e + e.T) * (torch.rand(12, 12, generator=g) > 0.5).double()
    e = torch.triu(e, 1)
    e = e + e.T
    i, j = torch.triu(e, 1).nonzero(as_tuple=True)
    bound = _collatz_wielandt([i], [j], [e[i, j]], 12, iterations=50)
    exact = float(torch.linalg.eigvalsh(e).abs().max())
    assert exact <= bound <= exact * (1 + 1e-6) + 1e-12
    assert bound <= float(e.sum(1).max()) + 1e-12


def test_partition_covers_every_point_once_within_the_block_size():
    z = _points(101, 3)
    blocks = partition(z, 10)
    assert sorted(torch.cat(blocks).tolist()) == list(range(101)) and max(len(b) for b in blocks) <= 10


def test_bound_streams_blocks_and_holds_on_well_separated_points():
    z = torch.arange(50.0)[:, None] * torch.ones(1, 2)  # a line of points, spacing √2
    b, rows = gaussian_kernel_bound(z, sigma=0.5, threshold=1e-5, max_block=7)
    assert b.holds and b.n_blocks == 8 and rows.n == 50
    assert abs(rows.dense(torch.arange(50)).double().diagonal() - 1).max() == 0


def test_a_kernel_too_dense_for_the_memory_budget_is_refused():
    with pytest.raises(MemoryBudgetError, match="max_nnz"):
        gaussian_kernel_bound(_points(30), sigma=10.0, threshold=1e-5, max_nnz=100)


def test_default_bandwidth_gives_the_requested_kernel_mass():
    h, y = _points(200, 6), torch.zeros(200, dtype=torch.long)
    for mass in (0.1, 0.3, 1.0):
        fm = GaussianKernelFeatures(kernel_mass=mass, max_kernel_mass=99.0).fit(h, y, 2)
        phi = fm.raw(h).double()
        off = (phi.sum(1) - phi.max(1).values).mean()  # minus each row's self-entry (≈ 1; centres are sorted)
        assert float(off) == pytest.approx(mass, rel=1e-3)


def test_default_bandwidth_caps_the_largest_kernel_mass():
    h, y = _points(200, 6), torch.zeros(200, dtype=torch.long)
    h[:20] = h[0] + 0.05 * h[:20]  # a dense cluster: its points carry far more kernel mass than the rest
    fm = GaussianKernelFeatures(kernel_mass=0.3, max_kernel_mass=0.5).fit(h, y, 2)
    phi = fm.raw(h).double()
    off = phi.sum(1) - phi.max(1).values
    assert float(off.max()) <= 0.5 * (1 + 1e-3) and float(off.mean()) < 0.3


def test_condition_check_takes_the_ntk_route_when_the_dense_jacobian_does_not_fit():
    """A modified model has p = p_f + n·k parameters (680,000 at MNIST scale), so the dense J on the checked
    subset can exceed the budget: check_conditions must then take the exact NTK route (same residual, same rank),
    not fail. Control: on a base network with |S|·k > p both routes must give a residual clearly above 0."""
    from dynamics.conditions.gram import gram_bytes
    from dynamics.training.certification import check_conditions
    from dynamics.training.framework import switch

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 4, generator=g), torch.randint(0, 3, (40,), generator=g)
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    aug, _ = switch(net, x, y, num_classes=3, features="gaussian", lr=0.1, batch_size=8)
    dense = check_conditions(aug, x, y, 3, n_checked=20, seed=0)
    ntk = check_conditions(aug, x, y, 3, n_checked=20, seed=0, memory_budget=gram_bytes(60))
    assert (dense["alignment_method"], ntk["alignment_method"]) == ("dense", "gram")
    assert ntk["rank"] == dense["rank"] and ntk["alignment_trivial"] == dense["alignment_trivial"]
    assert abs(ntk["alignment_residual"] - dense["alignment_residual"]) < 1e-10
    # control: the base network (p = 67 < |S|·k = 120) is not aligned on random labels
    base_dense = check_conditions(net, x, y, 3, n_checked=40, seed=0)
    base_gram = check_conditions(net, x, y, 3, n_checked=40, seed=0, memory_budget=gram_bytes(67))
    assert base_dense["alignment_method"] == "dense" and base_gram["alignment_method"] == "gram"
    assert base_dense["alignment_residual"] > 0.1 and not base_dense["alignment_holds"]
    assert abs(base_gram["alignment_residual"] - base_dense["alignment_residual"]) < 1e-8


def test_feature_maps_and_classifiers_must_implement_their_abstract_methods():
    """FeatureMap (out_dim, fit, raw, certify) and Classifier (_features) are abstract: a subclass that forgets one
    cannot be built, instead of failing later with NotImplementedError mid-run."""
    from dynamics.models.base import Classifier
    from dynamics.training.features import FeatureMap

    class Half(FeatureMap):
        out_dim = 1

        def fit(self, h, y, num_classes):
            return self

        def raw(self, h):
            return h

    with pytest.raises(TypeError, match="certify"):
        Half()
    with pytest.raises(TypeError, match="_features"):
        Classifier()
