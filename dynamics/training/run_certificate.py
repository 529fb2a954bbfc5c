"""The run certificate: how close the RUN (not just the condition) is to a global minimum, on the whole training set.

For f̃ = f + g with g(x) = c·φ(x)ᵀζ, the gradient of the summed loss in ζ is ∇_ζ L_sum = c·ΦᵀR, with R (n × k) the
per-sample loss gradient in the logits: R = P − Y for cross-entropy (P the softmax), R = F̃ − Y for the square loss
½‖F̃ − Y‖². Derived from these definitions (Kawaguchi et al., 2022):

* cross-entropy: for any Z* with cΦZ* = Y (it exists once Φ has full row rank on the distinct points),
  Σ_i (1 − p_{i,y_i}) = −⟨R, Y⟩ = −⟨c ΦᵀR, Z*⟩ ≤ ‖∇_ζ L_sum‖_F·‖Z*‖_F =: ε, and ‖Z*‖_F ≤ ‖Y‖_F/(c σ_min(Φ)).
  So ε = ‖ΦᵀR‖_F·√n_u/σ_min(Φ) (c cancels). If ε < ½, every p_{i,y_i} > ½: every training point is classified
  correctly, and L_sum = Σ −log p_{i,y_i} ≤ Σ 2(1 − p_{i,y_i}) ≤ 2ε (−log p ≤ 2(1 − p) on [½, 1]).
  The inequality holds for ANY logits, so R is taken from the test-time function (eval mode).
* square loss: Φᵀ is injective with ‖ΦᵀR‖ ≥ σ_min(Φ)‖R‖ when Φ is square and invertible, so
  ‖F̃ − Y‖_F ≤ ‖∇_ζ L‖_F/(c σ_min(Φ)) = ‖ΦᵀR‖_F/σ_min(Φ); below ½ every entry is within ½ of its target, which
  again classifies every training point correctly.

σ_min(Φ) is the PROVEN lower bound of the feature certificate (:mod:`dynamics.training.kernel_bound`); ‖ΦᵀR‖ is
computed in float64 from the training rows and rounded up by the standard bound γ_K·‖Φᵀ|R|‖_F.

A tighter ‖Z*‖ (:func:`zstar_norm_bound`): solve Φ_u Ẑ ≈ Y_u by LSQR (Φ_u the n_u distinct rows, sparse), then
Z* = Ẑ + Φ_u⁺E with E = Y_u − Φ_uẐ is an exact solution (Φ_u has full row rank), so
‖Z*‖ ≤ ‖Ẑ‖ + ‖E‖/σ_min(Φ), with ‖E‖ rounded up by γ_m(‖Y_u‖ + ‖|Φ_u||Ẑ|‖) (m the most non-zeros of a row,
plus one). ε uses the smaller of this and √n_u/σ_min. On a near-diagonal kernel ‖Z*‖ ≈ ‖Y‖, up to 1/σ_min
times smaller than the generic bound (measured on MNIST-60k: 1/0.168 ≈ 6×).

>>> import torch
>>> from torch import nn
>>> from dynamics.training.framework import switch
>>> net = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
>>> x, y = torch.randn(12, 3), torch.randint(0, 2, (12,))
>>> aug, info = switch(net, x, y, num_classes=2, features="gaussian", lr=0.1, batch_size=4)
>>> cert = run_certificate(aug, x, y, x, y, info["certificate"], when="tau")
>>> cert.when, cert.n, cert.epsilon_ce is not None
('tau', 12, True)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch
from torch import nn

from dynamics.errors import InputError
from dynamics.training.framework import AugmentedModel, is_augmented
from dynamics.training.sparse_rows import SparseRows

__all__ = ["RunCertificate", "run_certificate", "predictions", "prediction_change", "ce_epsilon",
           "zstar_norm_bound"]

U64 = 2.0 ** -53
GENERIC_ZSTAR = "sqrt(n_u)/sigma_min"   # ‖Z*‖ ≤ ‖Y_u‖/σ_min (certificates written before the solve bound)


@dataclass
class RunCertificate:
    """The run certificate at ``when`` (``"tau"`` or ``"end"``); see the module docstring for each bound.

    ``grad_zeta_norm`` = ‖∇_ζ L_sum‖_F = c‖ΦᵀR‖_F (rounded up), ``zstar_norm_upper`` = √n_u/(c σ_min),
    ``epsilon_ce`` their product (None without a proven σ_min), ``soft_error`` = Σ(1 − p_{i,y_i}) measured (≤ ε),
    ``square_residual_bound`` ≥ ‖F̃ − Y‖_F (square Φ only) and ``square_residual`` its measured value,
    ``g_over_f_train/test`` = ‖G‖_F/‖F‖_F over the set (g's share of the logits), ``test_predictions`` (argmax,
    not serialised: the runner writes it to ``test_predictions.npy``).
    """

    when: str
    n: int
    n_distinct: int
    train_loss: float  # mean cross-entropy (or mean ½‖F̃ − Y‖² for loss="mse") on the whole training set, eval mode
    train_loss_sum: float
    train_acc: float
    soft_error: float
    square_residual: float
    sigma_min_lower: float | None
    scale: float
    grad_zeta_norm: float
    zstar_norm_upper: float | None
    epsilon_ce: float | None
    ce_certified: bool
    square_residual_bound: float | None
    square_certified: bool
    certified: bool
    g_over_f_train: float
    g_over_f_test: float | None
    test_acc: float | None
    loss: str = "ce"
    zstar_method: str = GENERIC_ZSTAR
    test_predictions: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("test_predictions")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunCertificate":
        names = {f.name for f in fields(cls)} - {"test_predictions"}
        missing = names - set(d) - {"loss", "zstar_method"}
        if missing:
            raise InputError(f"run certificate dict lacks {sorted(missing)}")
        return cls(**{k: v for k, v in d.items() if k in names})

    def __str__(self) -> str:
        def f(v: float | None, fmt: str = ".3e") -> str:
            return "n/a" if v is None else format(v, fmt)

        verdict = "CERTIFIED" if self.certified else "NOT certified"
        lines = [f"run certificate at {self.when}: {verdict} on all {self.n} training points",
                 f"  train loss {self.train_loss:.4g} (sum {self.train_loss_sum:.4g}), train acc {self.train_acc:.4f}"
                 + ("" if self.test_acc is None else f", test acc {self.test_acc:.4f}"),
                 f"  cross-entropy: eps = ||grad_zeta L_sum|| {self.grad_zeta_norm:.3e} x ||Z*|| <= "
                 f"{f(self.zstar_norm_upper)} [{self.zstar_method}] = {f(self.epsilon_ce)} "
                 f"({'< 1/2' if self.ce_certified else 'not < 1/2'}"
                 f"; measured sum(1 - p_y) = {self.soft_error:.3e})",
                 f"  square loss: ||F~ - Y|| <= {f(self.square_residual_bound)} (measured {self.square_residual:.3e})",
                 f"  proven sigma_min(Phi) >= {f(self.sigma_min_lower)}; ||g||/||f||: train {self.g_over_f_train:.3g}, "
                 f"test {f(self.g_over_f_test, '.3g')}"]
        return "\n".join(lines)


def ce_epsilon(phi_t_r_norm: float, sigma_min_lower: float, n_distinct: int) -> float:
    """ε = ‖ΦᵀR‖_F·√n_u / σ_min (unscaled Φ; c cancels).

    >>> ce_epsilon(0.01, 0.5, 100)
    0.2
    """
    if not sigma_min_lower > 0:
        raise InputError(f"sigma_min_lower must be > 0 (a proven bound), got {sigma_min_lower}")
    return phi_t_r_norm * math.sqrt(n_distinct) / sigma_min_lower


def zstar_norm_bound(rows: SparseRows, yk: torch.Tensor, sigma_min_lower: float, tol: float = 1e-12,
                     iter_lim: int = 2000) -> tuple[float, str]:
    """An upper bound on ‖Z*‖_F for an exact solution of Φ_u Z* = Y_u (unscaled Φ), and how it was obtained.

    ``yk``: the (n, k) one-hot targets of all n training points; Y_u takes one row per distinct point (points
    sharing a row of Φ must share the label, else no Z* exists and the generic bound is returned with the reason).
    Returns ``min(√n_u/σ, ‖Ẑ‖ + ‖E‖/σ)`` (module docstring), rounded up, and a description.

    >>> rows = SparseRows.from_dense(torch.tensor([[1.0, 0.1], [0.1, 1.0]]))
    >>> bound, how = zstar_norm_bound(rows, torch.eye(2, dtype=torch.float64), 0.9)
    >>> exact = float(torch.linalg.solve(torch.tensor([[1.0, 0.1], [0.1, 1.0]], dtype=torch.float64),
    ...                                  torch.eye(2, dtype=torch.float64)).norm())
    >>> exact <= bound < exact * (1 + 1e-9), bound < 2 ** 0.5 / 0.9
    (True, True)
    """
    if not sigma_min_lower > 0:
        raise InputError(f"sigma_min_lower must be > 0 (a proven bound), got {sigma_min_lower}")
    n_u = len(rows.crow) - 1
    generic = math.sqrt(n_u) / sigma_min_lower
    y = yk.detach().double().cpu()
    y_u = torch.full((n_u, y.shape[1]), float("nan"), dtype=torch.float64)
    y_u[rows.row_of.cpu()] = y
    if torch.isnan(y_u).any() or not torch.equal(y_u[rows.row_of.cpu()], y):
        return generic, GENERIC_ZSTAR + " (points that share a row of Phi disagree on the label, or a row is unused)"
    A = scipy.sparse.csr_matrix((rows.val.double().cpu().numpy(), rows.col.cpu().numpy(), rows.crow.cpu().numpy()),
                                shape=(n_u, rows.n_cols))
    Y = y_u.numpy()
    Z = np.zeros((rows.n_cols, Y.shape[1]))
    iters = 0
    for j in range(Y.shape[1]):
        out = scipy.sparse.linalg.lsqr(A, Y[:, j], atol=tol, btol=tol, iter_lim=iter_lim)
        Z[:, j], iters = out[0], max(iters, int(out[2]))
    if not np.all(np.isfinite(Z)):
        return generic, GENERIC_ZSTAR + " (the LSQR solve was not finite)"
    E = Y - A @ Z
    m = int(np.diff(rows.crow.cpu().numpy()).max()) + 1 if rows.nnz else 1
    gamma = m * U64 / (1 - m * U64)
    e_up = float(np.linalg.norm(E)) * (1 + 1e-12) + gamma * (float(np.linalg.norm(Y)) + float(
        np.linalg.norm(abs(A) @ np.abs(Z)))) * (1 + 1e-12)
    solved = float(np.linalg.norm(Z)) * (1 + 1e-12) + e_up / sigma_min_lower
    if solved >= generic:
        return generic, GENERIC_ZSTAR + f" (the LSQR bound {solved:.4g} was not smaller)"
    return solved, (f"LSQR solve: ||Z^|| + ||Y_u - Phi_u Z^||/sigma_min, residual <= {e_up:.2e} "
                    f"({iters} iterations per column at most)")


def predictions(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """argmax predictions (N,) int64 of ``model`` in eval mode (what the runner saves as ``test_predictions.npy``)."""
    return _outputs(model, x, batch_size)[2].numpy()


def prediction_change(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of positions where two prediction vectors differ (e.g. modified vs base run of the same seed).

    >>> prediction_change(np.array([0, 1, 2, 3]), np.array([0, 1, 0, 3]))
    0.25
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise InputError(f"prediction vectors differ in shape: {a.shape} vs {b.shape} (same test set needed)")
    return float((a != b).mean()) if a.size else 0.0


def _outputs(model: nn.Module, x: torch.Tensor, batch_size: int, train_index: bool = False,
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(f, g, argmax of f + g) in eval mode, float64 logits; g = 0 for a plain model."""
    was = model.training
    model.eval()
    fs, gs = [], []
    with torch.no_grad():
        for s in range(0, len(x), batch_size):
            xb = x[s:s + batch_size]
            if is_augmented(model):
                index = torch.arange(s, s + len(xb)) if train_index else None
                f, g = model.decompose(xb, index)
            else:
                f = model(xb)
                g = torch.zeros_like(f)
            fs.append(f.double().cpu()), gs.append(g.double().cpu())
    model.train(was)
    f, g = torch.cat(fs), torch.cat(gs)
    return f, g, (f.float() + g.float()).argmax(1)


def _ratio(g: torch.Tensor, f: torch.Tensor) -> float:
    return float(g.norm() / f.norm().clamp_min(1e-300))


def run_certificate(model: AugmentedModel, x_train: torch.Tensor, y_train: torch.Tensor,
                    x_test: torch.Tensor | None, y_test: torch.Tensor | None,
                    feature_certificate: dict[str, Any], when: str = "end", loss: str = "ce",
                    batch_size: int = 512) -> RunCertificate:
    """The run certificate of f̃ on the WHOLE training set (module docstring); test-set ratios if given.

    On training points g is read from the training cache (the Φ that was certified and trained on); logits are
    the eval-mode logits (f in eval mode, float32, as at test time), promoted to float64.
    """
    if not is_augmented(model) or model.training_rows is None:
        raise InputError("run_certificate needs f̃ = f + g with its training cache (framework.switch)")
    if when not in ("tau", "end"):
        raise InputError(f"when must be 'tau' or 'end', got {when!r}")
    rows = model.training_rows
    n, k = len(x_train), model.zeta.shape[1]
    if rows.n != n:
        raise InputError(f"the training cache has {rows.n} points, x_train {n}")
    f, g, pred = _outputs(model, x_train, batch_size, train_index=True)
    logits = (f.float() + g.float()).double()  # the float32 logits of the forward pass
    y = y_train.long().cpu()
    yk = nn.functional.one_hot(y, k).double()
    p = torch.softmax(logits, 1)
    p_y = p[torch.arange(n), y]
    ce = -torch.log_softmax(logits, 1)[torch.arange(n), y]
    sq = 0.5 * (logits - yk).square().sum(1)
    n_u = len(rows.crow) - 1
    max_col = int(torch.bincount(rows.col, minlength=rows.n_cols).max()) if rows.nnz else 0
    slack = (max_col + 2) * U64 / (1 - (max_col + 2) * U64) + U64

    def phi_t_norm(r: torch.Tensor) -> float:
        exact = float(rows.transpose_matmul(r).norm())
        return exact * (1 + 1e-12) + slack * float(rows.transpose_matmul(r.abs()).norm())

    sigma = feature_certificate.get("sigma_min_lower") if feature_certificate.get("holds") else None
    scale = float(model.feature_map.scale)
    r_ce = phi_t_norm(p - yk)
    zstar, zstar_method = (None, GENERIC_ZSTAR) if sigma is None else zstar_norm_bound(rows, yk, sigma)
    eps = None if zstar is None else r_ce * zstar
    square_ok = sigma is not None and rows.n_cols == n_u and n_u == n
    sq_bound = phi_t_norm(logits - yk) / sigma if square_ok else None
    test_f = test_g = test_pred = None
    if x_test is not None:
        test_f, test_g, test_pred = _outputs(model, x_test, batch_size)
    ce_ok = eps is not None and eps < 0.5
    sq_ok = sq_bound is not None and sq_bound < 0.5
    return RunCertificate(
        when=when, n=n, n_distinct=n_u, train_loss=float((ce if loss == "ce" else sq).mean()),
        train_loss_sum=float((ce if loss == "ce" else sq).sum()), train_acc=float((pred == y).double().mean()),
        soft_error=float((1 - p_y).sum()), square_residual=float((logits - yk).norm()), sigma_min_lower=sigma,
        scale=scale, grad_zeta_norm=scale * r_ce,
        zstar_norm_upper=None if zstar is None else zstar / scale, zstar_method=zstar_method,
        epsilon_ce=eps, ce_certified=ce_ok, square_residual_bound=sq_bound, square_certified=sq_ok,
        certified=ce_ok or sq_ok, g_over_f_train=_ratio(g, f),
        g_over_f_test=None if test_f is None else _ratio(test_g, test_f),
        test_acc=None if test_pred is None or y_test is None else float((test_pred == y_test.cpu()).double().mean()),
        loss=loss, test_predictions=None if test_pred is None else test_pred.numpy())
