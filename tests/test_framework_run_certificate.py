"""The run certificate: its bound checked against brute force (autograd gradient, the exact Z* solving cΦZ* = Y),
certified after ζ is fitted, NOT certified in the control (ζ = 0 at τ on a network that does not fit)."""

from __future__ import annotations

import math
import numpy as np
import pytest
import torch
from torch import nn

from dynamics.errors import InputError
from dynamics.training.framework import switch
from dynamics.training.run_certificate import RunCertificate, prediction_change, run_certificate


def _problem(n=10, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 4, generator=g), torch.randint(0, k, (n,), generator=g)
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, k))
    aug, info = switch(net, x, y, num_classes=k, features="gaussian", lr=0.1, batch_size=4,
                       feature_options={"bandwidth": 0.5})
    assert info["certificate"]["holds"]
    return aug, info, x, y


def _brute(aug, x, y):
    """(Σ(1 − p_y), ‖∇_ζ L_sum‖ by autograd, ‖Z*‖ of the exact solution, ‖F̃ − Y‖, L_sum) in float64."""
    n, k = len(x), aug.zeta.shape[1]
    aug.eval()
    out = aug(x, index=torch.arange(n)).double()
    loss = nn.functional.cross_entropy(out, y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, aug.zeta)
    phi = aug.training_features(torch.arange(n)).double()  # c·Φ as training uses it
    yk = nn.functional.one_hot(y, k).double()
    zstar = torch.linalg.solve(phi, yk)
    p = torch.softmax(out.detach(), 1)[torch.arange(n), y]
    return float((1 - p).sum()), float(grad.norm()), float(zstar.norm()), float((out.detach() - yk).norm()), \
        float(loss.detach())


def test_bound_matches_brute_force_and_bounds_the_soft_error():
    aug, info, x, y = _problem()
    with torch.no_grad():
        aug.zeta.normal_(0, 0.3)
    cert = run_certificate(aug, x, y, x, y, info["certificate"])
    soft, grad, zstar, resid, _ = _brute(aug, x, y)
    assert cert.soft_error == pytest.approx(soft, rel=1e-6)
    assert cert.grad_zeta_norm == pytest.approx(grad, rel=1e-4)  # float32 logits in the autograd reference
    assert zstar <= cert.zstar_norm_upper
    assert soft <= grad * zstar <= cert.epsilon_ce * (1 + 1e-4)
    assert resid <= cert.square_residual_bound * (1 + 1e-4)


def test_control_at_tau_with_zeta_zero_is_not_certified():
    aug, info, x, y = _problem()
    cert = run_certificate(aug, x, y, None, None, info["certificate"], when="tau")
    assert cert.epsilon_ce >= 0.5 and not cert.ce_certified and not cert.certified
    assert "NOT certified" in str(cert) and cert.g_over_f_train == 0.0


def test_fitted_zeta_is_certified_classifies_every_point_and_bounds_the_loss():
    aug, info, x, y = _problem()
    opt = torch.optim.SGD([aug.zeta], lr=2.0)
    aug.eval()
    for _ in range(3000):
        loss = nn.functional.cross_entropy(aug(x, index=torch.arange(len(x))), y, reduction="sum")
        opt.zero_grad()
        loss.backward()
        opt.step()
    cert = run_certificate(aug, x, y, x, y, info["certificate"])
    assert cert.certified and cert.ce_certified and cert.epsilon_ce < 0.5
    assert cert.train_acc == 1.0 and cert.train_loss_sum <= 2 * cert.epsilon_ce
    assert cert.soft_error <= cert.epsilon_ce
    assert (cert.test_predictions == y.numpy()).all()


def test_record_round_trips_without_the_prediction_array():
    aug, info, x, y = _problem()
    cert = run_certificate(aug, x, y, x, y, info["certificate"])
    again = RunCertificate.from_dict(cert.to_dict())
    assert again == cert and again.test_predictions is None and "test_predictions" not in cert.to_dict()


def test_run_certificate_refuses_a_plain_model_and_prediction_change_needs_equal_shapes():
    aug, info, x, y = _problem()
    with pytest.raises(InputError, match="f̃ = f \\+ g"):
        run_certificate(aug.base, x, y, None, None, info["certificate"])
    with pytest.raises(InputError, match="shape"):
        prediction_change(np.zeros(3), np.zeros(4))


def _near_diagonal(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    off = torch.rand(n, n, generator=g) * (torch.rand(n, n, generator=g) < 0.05)
    return (torch.eye(n) + 0.2 * (off + off.T)).float()


def test_zstar_bound_against_the_exact_solution_and_under_a_bad_solve():
    """‖Ẑ‖ + ‖E‖/σ bounds the exact ‖Φ⁻¹Y‖ from above, tightly after a converged LSQR, and still from above
    after ONE iteration (the residual term carries it: drop it and this fails)."""
    from dynamics.training.run_certificate import GENERIC_ZSTAR, zstar_norm_bound
    from dynamics.training.sparse_rows import SparseRows

    phi = _near_diagonal(60)
    rows = SparseRows.from_dense(phi)
    y = torch.nn.functional.one_hot(torch.arange(60) % 4, 4).double()
    sigma = float(torch.linalg.svdvals(phi.double()).min()) * 0.999
    exact = float(torch.linalg.solve(phi.double(), y).norm())
    bound, how = zstar_norm_bound(rows, y, sigma)
    assert exact <= bound <= exact * (1 + 1e-8) and "LSQR" in how
    assert bound < math.sqrt(60) / sigma
    rough, _ = zstar_norm_bound(rows, y, sigma, iter_lim=1)
    assert rough >= exact


def test_zstar_bound_falls_back_when_shared_rows_disagree_on_the_label():
    from dynamics.training.run_certificate import GENERIC_ZSTAR, zstar_norm_bound
    from dynamics.training.sparse_rows import SparseRows

    phi = _near_diagonal(10)
    rows = SparseRows.from_dense(phi, row_of=torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0]))
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1])   # point 10 shares row 0 with point 0, other label
    bound, how = zstar_norm_bound(rows, torch.nn.functional.one_hot(labels, 3).double(), 0.5)
    assert bound == math.sqrt(10) / 0.5 and how.startswith(GENERIC_ZSTAR)
