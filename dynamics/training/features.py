"""Feature constructions φ for the modified framework's g(x; ζ) = ζᵀ φ(h(x)), and their certificates.

Each construction is an ``nn.Module``: ``fit(h_train, y_train, num_classes)`` stores what it needs as buffers (so
``state_dict`` reproduces it), ``raw(h)`` maps a frozen representation h (B, d) to unscaled features (B, m),
``forward(h) = scale · raw(h)``, and ``certify_and_rows(h_train, y_train)`` returns the :class:`FeatureCertificate`
(vec(Y) ∈ Col J_g on the WHOLE training set, with a proven lower bound on σ_min(Φ) where one exists) and Φ on the
training set as :class:`~dynamics.training.sparse_rows.SparseRows` (what training reads).

Why the certificate is about Φ only. g is linear in ζ ∈ R^{m×k}: the Jacobian of (g(x_1), …, g(x_n)) in ζ is
Φ ⊗ I_k up to a column permutation (Φ = φ(h_train), n × m), so vec(Y) ∈ Col J_g iff every column of Y ∈ Col Φ,
which holds when Φ has rank n. J_f̃ = [J_f, J_g], so alignment of f̃ then holds at EVERY θ.

Constructions (``FEATURES``):

* ``gaussian`` (what ``auto`` means, at every n): φ_j(h) = exp(−‖z − z_j‖²/(2σ²)), set to 0 below ``threshold``,
  z = the representation standardised per coordinate, centred at the n_u distinct training points;
  σ set so that the off-diagonal row sums of Φ are at most ``kernel_mass`` on average and ``max_kernel_mass``
  on every sampled row (or ``bandwidth`` × the median nearest-neighbour distance). Certificate: exact
  distinctness and the
  proven bound of :mod:`dynamics.training.kernel_bound` (all points, streamed in blocks).
* ``random``: φ(h) = relu(W z + b)/√m, m = ``width_factor`` × n ≥ n random features of z. Certificate:
  numerical rank of Φ on all points when n ≤ ``exact_limit`` (float64 eigenvalues, not a proof), else none.
* ``nnlabel``: φ(h) = onehot(label of the nearest training representation). A CONTROL, "alignment by label
  leakage": Φ = onehot(Y) on the training set whatever the network, so it certifies nothing about f.

>>> g = torch.Generator().manual_seed(0)
>>> h, y = torch.randn(20, 3, generator=g), torch.randint(0, 2, (20,), generator=g)
>>> fm = GaussianKernelFeatures().fit(h, y, num_classes=2)
>>> cert, rows = fm.certify_and_rows(h, y)
>>> fm(h).shape, cert.holds, rows.n
(torch.Size([20, 20]), True, 20)
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import scipy.linalg
import torch
from torch import nn

from dynamics.errors import InputError, MemoryBudgetError
from dynamics.training.kernel_bound import DEFAULT_MEMORY_BUDGET, gaussian_kernel_bound, max_nnz_for
from dynamics.training.sparse_rows import SparseRows

__all__ = ["FeatureCertificate", "FeatureMap", "GaussianKernelFeatures", "RandomReLUFeatures",
           "NearestLabelFeatures", "FEATURES", "LABEL_LEAKAGE", "make_features", "group_duplicates",
           "conflicting_duplicates"]

#: the name under which ``nnlabel`` is recorded and warned about
LABEL_LEAKAGE = "alignment by label leakage"


@dataclass
class FeatureCertificate:
    """How (and whether) vec(Y) ∈ Col J_g was established on the whole training set.

    ``method``: ``"proven"`` (a lower bound on σ_min(Φ) > 0 proven on all points, float error included),
    ``"numerical"`` (rank within a float tolerance, not a proof), ``"label leakage"`` (Φ = onehot(Y)).
    ``sigma_min_lower``: a proven lower bound on σ_min(Φ) over the distinct points (None when none is proven);
    the run certificate needs it.
    """

    holds: bool
    method: str
    text: str
    n: int
    n_distinct: int
    sigma_min_lower: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureCertificate":
        return cls(**d)

    def __str__(self) -> str:
        return f"alignment of g {'CERTIFIED' if self.holds else 'NOT certified'} ({self.method}): {self.text}"


def group_duplicates(h: torch.Tensor, y: torch.Tensor) -> tuple[int, int]:
    """(number of distinct rows of ``h``, number of distinct rows carrying more than one label).

    >>> group_duplicates(torch.tensor([[0.], [0.], [1.]]), torch.tensor([0, 1, 1]))
    (2, 1)
    """
    _, inverse = torch.unique(h.flatten(1), dim=0, return_inverse=True)
    n_distinct = int(inverse.max()) + 1 if len(inverse) else 0
    pairs = torch.unique(torch.stack([inverse, y.to(inverse.dtype)], 1), dim=0)
    conflicting = int((torch.bincount(pairs[:, 0], minlength=n_distinct) > 1).sum())
    return n_distinct, conflicting


def conflicting_duplicates(x: torch.Tensor, y: torch.Tensor, limit: int = 10) -> list[list[int]]:
    """Groups of indices (at most ``limit``) of identical rows of ``x`` that carry different labels.

    >>> conflicting_duplicates(torch.tensor([[0.], [1.], [0.], [1.]]), torch.tensor([0, 1, 1, 1]))
    [[0, 2]]
    """
    _, inverse = torch.unique(x.flatten(1), dim=0, return_inverse=True)
    out = []
    for g in torch.unique(inverse):
        idx = torch.nonzero(inverse == g).flatten()
        if len(idx) > 1 and len(torch.unique(y[idx])) > 1:
            out.append(idx.tolist())
            if len(out) >= limit:
                break
    return out


def _sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d = (a * a).sum(1, keepdim=True) - 2 * a @ b.T + (b * b).sum(1)[None]
    return d.clamp_min_(0)


def _masses(d2: torch.Tensor, sigma: float, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(off-diagonal row sums, off-diagonal non-zeros per row) of the thresholded kernel on sampled rows ``d2``."""
    k = torch.exp(-d2 / (2.0 * sigma * sigma))
    keep = k >= threshold
    return k.masked_fill_(~keep, 0.0).sum(1), keep.sum(1).double()


def _sigma_for_mass(d2: torch.Tensor, mass: float, max_mass: float, threshold: float, scale: float,
                    row_nnz: float = math.inf) -> float:
    """The largest σ at which the off-diagonal row sums of the thresholded kernel over the sampled rows ``d2``
    (q, n; self-distances inf) have mean ≤ ``mass`` and maximum ≤ ``max_mass``, and the mean number of
    off-diagonal non-zeros per sampled row is ≤ ``row_nnz`` (bisection in log σ; all three grow with σ)."""
    def ok(sigma: float) -> bool:
        m, c = _masses(d2, sigma, threshold)
        return float(m.mean()) <= mass and float(m.max()) <= max_mass and float(c.mean()) <= row_nnz

    lo, hi = scale * 1e-3, scale
    while ok(hi) and hi < scale * 1e6:
        hi *= 4.0
    for _ in range(40):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


class FeatureMap(nn.Module, ABC):
    """Base class. ``scale`` (buffer) multiplies φ; the framework sets it from the optimiser (see framework)."""

    name = "base"

    def __init__(self, exact_limit: int = 3000, seed: int = 0) -> None:
        super().__init__()
        self.exact_limit, self.seed = int(exact_limit), int(seed)
        self.register_buffer("scale", torch.ones(()))

    def options(self) -> dict[str, Any]:
        """Constructor options, enough to rebuild the module before ``load_state_dict``."""
        return {"exact_limit": self.exact_limit, "seed": self.seed}

    @property
    @abstractmethod
    def out_dim(self) -> int:
        """m, the number of features."""

    @abstractmethod
    def fit(self, h: torch.Tensor, y: torch.Tensor, num_classes: int) -> "FeatureMap":
        """Fit the map to the training representations ``h`` (and labels, for the label-reading control)."""

    @abstractmethod
    def raw(self, h: torch.Tensor) -> torch.Tensor:
        """Unscaled features (B, m) of representations ``h`` (B, d)."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Features (B, m) of representations ``h`` (B, d), times ``scale``."""
        return self.raw(h) * self.scale

    def check_inputs(self, h: torch.Tensor, y: torch.Tensor) -> None:
        """Raise :class:`InputError` on a malformed or non-finite representation."""
        if h.dim() != 2 or y.dim() != 1 or len(h) != len(y):
            raise InputError(f"fit/certify need h (n, d) and y (n,), got {tuple(h.shape)} and {tuple(y.shape)}")
        if not torch.isfinite(h).all():
            bad = torch.nonzero(~torch.isfinite(h).all(1)).flatten()[:10].tolist()
            raise InputError(f"the frozen representation contains NaN/inf (training points {bad}, ...); the "
                             "network diverged before the switch: lower the learning rate or switch earlier")

    def training_rows(self, h: torch.Tensor) -> SparseRows:
        """Unscaled Φ on the training set (n rows), for the training cache (dense, computed in chunks)."""
        return SparseRows.from_dense(torch.cat([self.raw(h[s:s + 512]) for s in range(0, len(h), 512)]))

    def certify_and_rows(self, h: torch.Tensor, y: torch.Tensor) -> tuple[FeatureCertificate, SparseRows]:
        """The certificate on all n training points and the unscaled training rows."""
        return self.certify(h, y), self.training_rows(h)

    @abstractmethod
    def certify(self, h: torch.Tensor, y: torch.Tensor) -> FeatureCertificate:
        """The feature certificate (Φ of full row rank, with a proven σ_min or an exact rank) on ``h``."""


class _Standardise(FeatureMap):
    """Holds per-coordinate ``mean`` and ``std`` of the training representation: z = (h − mean)/std."""

    def __init__(self, exact_limit: int = 3000, seed: int = 0) -> None:
        super().__init__(exact_limit, seed)
        self.register_buffer("mean", torch.zeros(0))
        self.register_buffer("std", torch.ones(0))

    def fit_standardiser(self, h: torch.Tensor) -> torch.Tensor:
        h = h.detach().float()
        self.mean, std = h.mean(0), h.std(0)
        # dead coordinates (std ~ 0) must not blow up: floor at 1 % of the median coordinate's spread
        self.std = std.clamp_min(max(float(std.median()) * 1e-2, 1e-12))
        return self.standardise(h)

    def standardise(self, h: torch.Tensor) -> torch.Tensor:
        return (h - self.mean) / self.std


class GaussianKernelFeatures(_Standardise):
    """Thresholded Gaussian kernel on the standardised representation, centred at the distinct training points.

    σ is data-scaled: by default (``bandwidth=None``) the largest σ at which a training point's kernel row
    outside the diagonal sums, over up to 2000 sampled points (4·10⁷ distances), to at most ``kernel_mass``
    (0.3) on average and at most ``max_kernel_mass`` (0.5) for every sampled point: points see about that much
    weight from their neighbours whatever n and the intrinsic dimension, and no dense cluster makes Φ far from
    diagonally dominant (which the proof needs); with ``bandwidth`` given, σ = bandwidth × median
    nearest-neighbour distance. Entries below ``threshold`` are 0, which makes Φ sparse (the training cache is
    local) and is part of the certified matrix.

    Memory is bounded whatever the data. A small mass can still be spread over many entries just above the
    threshold (a tight, clustered representation: thousands of neighbours at nearly the same distance), so the
    default σ also keeps the sampled rows' mean number of off-diagonal non-zeros at most ``max_row_nnz`` (128)
    and at most half of what ``memory_budget`` allows per row (the kernel pass stores at most
    ``max_nnz_for(memory_budget, max_block)`` entries and refuses beyond that). If the sampled rows predict more
    entries than the budget allows even at the smallest σ searched (or at the given ``bandwidth``), ``fit``
    raises :class:`MemoryBudgetError` before anything n × n-sized is allocated.
    """

    name = "gaussian"

    def __init__(self, bandwidth: float | None = None, kernel_mass: float = 0.3, max_kernel_mass: float = 0.5,
                 threshold: float = 1e-5, max_block: int = 2048, exact_limit: int = 3000, seed: int = 0,
                 max_row_nnz: float | None = 128, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> None:
        super().__init__(exact_limit, seed)
        if max_row_nnz is not None and not (isinstance(max_row_nnz, (int, float)) and max_row_nnz >= 1):
            raise InputError(f"max_row_nnz must be >= 1 (mean off-diagonal non-zeros per row of Φ) or None, got "
                             f"{max_row_nnz!r}")
        if not (isinstance(memory_budget, int) and memory_budget > 0):
            raise InputError(f"memory_budget must be a positive number of bytes, got {memory_budget!r}")
        if bandwidth is not None and not (isinstance(bandwidth, (int, float)) and bandwidth > 0
                                          and math.isfinite(bandwidth)):
            raise InputError(f"bandwidth must be a finite number > 0 (a multiple of the median nearest-neighbour "
                             f"distance) or None (set by kernel_mass), got {bandwidth!r}")
        for name, v in (("kernel_mass", kernel_mass), ("max_kernel_mass", max_kernel_mass)):
            if not (isinstance(v, (int, float)) and 0 < v < 100):
                raise InputError(f"{name} must lie in (0, 100) (off-diagonal row sums of Φ), got {v!r}")
        if not 0 < threshold < 1:
            raise InputError(f"threshold must lie in (0, 1), got {threshold!r}")
        self.bandwidth = None if bandwidth is None else float(bandwidth)
        self.kernel_mass, self.max_kernel_mass = float(kernel_mass), float(max_kernel_mass)
        self.threshold, self.max_block = float(threshold), int(max_block)
        self.max_row_nnz = None if max_row_nnz is None else float(max_row_nnz)
        self.memory_budget = int(memory_budget)
        self.register_buffer("centres", torch.zeros(0, 0))
        self.register_buffer("sigma", torch.ones(()))

    def options(self) -> dict[str, Any]:
        return {**super().options(), "bandwidth": self.bandwidth, "kernel_mass": self.kernel_mass,
                "max_kernel_mass": self.max_kernel_mass, "threshold": self.threshold, "max_block": self.max_block,
                "max_row_nnz": self.max_row_nnz, "memory_budget": self.memory_budget}

    @property
    def out_dim(self) -> int:
        return self.centres.shape[0]

    def fit(self, h: torch.Tensor, y: torch.Tensor, num_classes: int) -> "GaussianKernelFeatures":
        self.check_inputs(h, y)
        z = self.fit_standardiser(h)
        self.centres = torch.unique(z, dim=0)
        g = torch.Generator().manual_seed(self.seed + 1)
        n_u = len(self.centres)
        # sampled rows against all centres: at most 4·10⁷ float32 distances (160 MB) whatever n, and at most
        # memory_budget / 32 bytes per distance (their chunks and concatenation, the kernel, its exponent and
        # mask in the bisection: measured ≈ 18 bytes per distance)
        rows = min(2000, 40_000_000 // max(n_u, 1), self.memory_budget // (32 * max(n_u, 1)))
        q = torch.randperm(n_u, generator=g)[: max(100, rows)]
        c64 = self.centres.double()
        d2 = torch.cat([_sq_dist(c64[q[s:s + 256]], c64).float() for s in range(0, len(q), 256)])
        d2[torch.arange(len(q)), q] = math.inf  # exclude each query point itself
        nn_d = d2.min(1).values.sqrt()
        nn_d = nn_d[torch.isfinite(nn_d) & (nn_d > 0)]
        med = max(float(nn_d.median()) if len(nn_d) else 1.0, 1e-12)
        max_nnz = max_nnz_for(self.memory_budget, self.max_block)
        budget_row = max_nnz / (2.0 * n_u) - 1.0  # off-diagonal entries per row; half the budget, for sampling error
        if self.bandwidth is not None:
            sigma = med * self.bandwidth
        else:
            row_cap = budget_row if self.max_row_nnz is None else min(self.max_row_nnz, budget_row)
            sigma = _sigma_for_mass(d2, self.kernel_mass, self.max_kernel_mass, self.threshold, med, row_cap)
        per_row = float(_masses(d2, sigma, self.threshold)[1].mean())
        self.fit_stats = {"sampled_rows": len(q), "sampled_row_nnz": per_row + 1.0, "budget_row_nnz": budget_row + 1,
                          "max_nnz": max_nnz, "median_nn_distance": med}
        if per_row > budget_row:
            raise MemoryBudgetError(
                f"the thresholded kernel at σ={sigma:.4g} has {per_row + 1:.0f} non-zeros per row on {len(q)} sampled "
                f"rows: about {(per_row + 1) * n_u:.3g} entries for {n_u} points, over half of max_nnz={max_nnz} "
                f"(memory_budget={self.memory_budget / 2**30:.2f} GiB). The representation is too clustered for "
                "this bandwidth: " + ("use a smaller 'bandwidth' or None" if self.bandwidth is not None else
                                      "near-identical points even at the smallest σ searched")
                + ", raise 'threshold', or raise memory_budget if the machine has the memory")
        self.sigma = torch.tensor(sigma, dtype=torch.float32)
        return self

    def raw(self, h: torch.Tensor) -> torch.Tensor:
        k = torch.exp(_sq_dist(self.standardise(h), self.centres) / (-2.0 * self.sigma ** 2))
        return k.masked_fill(k < self.threshold, 0.0)

    def _distinct(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.standardise(h.float())
        zu, row_of = torch.unique(z, dim=0, return_inverse=True)
        if len(zu) != len(self.centres) or not torch.equal(zu, self.centres):
            raise InputError("certify/training_rows need the training representation the map was fitted on")
        return zu, row_of

    def training_rows(self, h: torch.Tensor) -> SparseRows:
        zu, row_of = self._distinct(h)
        _, rows = gaussian_kernel_bound(zu, float(self.sigma), self.threshold, self.max_block, certify=False,
                                        memory_budget=self.memory_budget)
        return SparseRows(rows.crow, rows.col, rows.val, rows.n_cols, row_of)

    def certify_and_rows(self, h: torch.Tensor, y: torch.Tensor) -> tuple[FeatureCertificate, SparseRows]:
        self.check_inputs(h, y)
        n = len(h)
        n_distinct, conflicting = group_duplicates(self.standardise(h.float()), y)
        if conflicting:
            raise InputError(f"{conflicting} groups of identical training representations carry different labels: "
                             "no function of this representation fits them (the framework uses the input too "
                             "when the representation merges points, so the INPUTS are duplicated)")
        zu, row_of = self._distinct(h)
        bound, rows = gaussian_kernel_bound(zu, float(self.sigma), self.threshold, self.max_block,
                                            memory_budget=self.memory_budget)
        rows = SparseRows(rows.crow, rows.col, rows.val, rows.n_cols, row_of)
        dup = "" if n_distinct == n else f" ({n - n_distinct} duplicates with consistent labels share rows)"
        text = (f"thresholded gaussian kernel on all {n_distinct} distinct points of {n}{dup}: proven "
                f"σ_min(Φ) ≥ {bound.lambda_lower:.3e} = block λ_min ≥ {bound.block_lambda_lower:.3e} − coupling "
                f"≤ {bound.coupling_upper:.3e} − float/threshold error ≤ {bound.perturbation_upper:.1e} "
                f"({bound.n_blocks} blocks of ≤ {bound.max_block}; σ={float(self.sigma):.4g}, t={self.threshold:g}, "
                f"{bound.nnz_per_row:.1f} non-zeros per row)")
        if not bound.holds:
            text += ": NOT certified (points too close for float32, or the bandwidth too wide for this bound)"
        return FeatureCertificate(bound.holds, "proven", text, n, n_distinct,
                                  bound.lambda_lower if bound.holds else None, {"bound": bound.to_dict()}), rows

    def certify(self, h: torch.Tensor, y: torch.Tensor) -> FeatureCertificate:
        return self.certify_and_rows(h, y)[0]


class RandomReLUFeatures(_Standardise):
    """m random ReLU features of the standardised representation (m = ``width_factor`` × n, at least ``min_width``)."""

    name = "random"

    def __init__(self, width_factor: float = 2.0, min_width: int = 256, exact_limit: int = 3000,
                 seed: int = 0) -> None:
        super().__init__(exact_limit, seed)
        if not width_factor >= 1:
            raise InputError(f"width_factor must be >= 1 (m >= n features), got {width_factor!r}")
        self.width_factor, self.min_width = float(width_factor), int(min_width)
        self.register_buffer("weight", torch.zeros(0, 0))
        self.register_buffer("bias", torch.zeros(0))

    def options(self) -> dict[str, Any]:
        return {**super().options(), "width_factor": self.width_factor, "min_width": self.min_width}

    @property
    def out_dim(self) -> int:
        return self.weight.shape[0]

    def fit(self, h: torch.Tensor, y: torch.Tensor, num_classes: int) -> "RandomReLUFeatures":
        self.check_inputs(h, y)
        z = self.fit_standardiser(h)
        n, d = z.shape
        m = max(self.min_width, int(math.ceil(self.width_factor * n)))
        g = torch.Generator().manual_seed(self.seed)
        self.weight = torch.randn(m, d, generator=g) / math.sqrt(d)
        self.bias = torch.randn(m, generator=g)
        return self

    def raw(self, h: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.standardise(h) @ self.weight.T + self.bias) / math.sqrt(self.weight.shape[0])

    def certify(self, h: torch.Tensor, y: torch.Tensor) -> FeatureCertificate:
        self.check_inputs(h, y)
        n = len(h)
        n_distinct, conflicting = group_duplicates(h, y)
        if n > self.exact_limit:
            return FeatureCertificate(False, "numerical", f"random ReLU features (m={self.out_dim}): the rank of Φ "
                                      f"on {n} > exact_limit={self.exact_limit} points was not checked", n, n_distinct)
        phi = torch.cat([self.raw(h[s:s + 512].float()) for s in range(0, n, 512)]).double().numpy()
        lam = scipy.linalg.eigh(phi @ phi.T, eigvals_only=True)
        tol = n * np.finfo(np.float64).eps * lam[-1]
        full = bool(lam[0] > tol) and not conflicting
        text = (f"random ReLU features (m={self.out_dim}): numerical rank of Φ on all {n} points is "
                f"{'full' if full else 'deficient'}: λ_min(ΦΦᵀ)={lam[0]:.3e} vs tolerance {tol:.1e} (float64; "
                "not a proof)")
        return FeatureCertificate(full, "numerical", text, n, n_distinct, None,
                                  {"lambda_min_gram": float(lam[0]), "tolerance": float(tol)})


class NearestLabelFeatures(FeatureMap):
    """CONTROL: one-hot label of the nearest training representation ("alignment by label leakage")."""

    name = "nnlabel"

    def __init__(self, chunk: int = 4096, exact_limit: int = 3000, seed: int = 0) -> None:
        super().__init__(exact_limit, seed)
        self.chunk = int(chunk)
        self.register_buffer("centres", torch.zeros(0, 0))
        self.register_buffer("labels", torch.zeros(0, dtype=torch.long))
        self.register_buffer("num_classes", torch.zeros((), dtype=torch.long))

    def options(self) -> dict[str, Any]:
        return {**super().options(), "chunk": self.chunk}

    @property
    def out_dim(self) -> int:
        return int(self.num_classes)

    def fit(self, h: torch.Tensor, y: torch.Tensor, num_classes: int) -> "NearestLabelFeatures":
        self.check_inputs(h, y)
        self.centres, self.labels = h.detach().float().clone(), y.detach().long().clone()
        self.num_classes = torch.tensor(int(num_classes))
        return self

    def nearest(self, h: torch.Tensor) -> torch.Tensor:
        """Index (B,) of the nearest centre of each row of ``h``."""
        best_d = torch.full((len(h),), math.inf, device=h.device)
        best_i = torch.zeros(len(h), dtype=torch.long, device=h.device)
        for s in range(0, len(self.centres), self.chunk):
            d, i = _sq_dist(h, self.centres[s:s + self.chunk]).min(1)
            better = d < best_d
            best_d, best_i = torch.where(better, d, best_d), torch.where(better, i + s, best_i)
        return best_i

    def raw(self, h: torch.Tensor) -> torch.Tensor:
        lab = self.labels[self.nearest(h.detach())]
        return torch.eye(int(self.num_classes), dtype=h.dtype, device=h.device)[lab]  # one-hot, vmap-friendly

    def certify(self, h: torch.Tensor, y: torch.Tensor) -> FeatureCertificate:
        self.check_inputs(h, y)
        n = len(h)
        n_distinct, conflicting = group_duplicates(h, y)
        mismatched = int((self.labels[self.nearest(h.float())] != y).sum())
        holds = conflicting == 0 and mismatched == 0
        counts = torch.bincount(y.long(), minlength=int(self.num_classes))
        present = counts[counts > 0]
        text = (f"{LABEL_LEAKAGE}: on {n} training points each nearest neighbour carries the point's own label in "
                f"{n - mismatched}/{n} cases, so Φ = onehot(Y) for ANY network; σ_min(Φ) = √(smallest class "
                f"count) = {math.sqrt(int(present.min())):.3g}" + ("" if holds else " — FAILS"))
        return FeatureCertificate(holds, "label leakage", text, n, n_distinct,
                                  math.sqrt(int(present.min())) if holds else None, {"mismatched": mismatched})


FEATURES: dict[str, type[FeatureMap]] = {
    "gaussian": GaussianKernelFeatures,
    "random": RandomReLUFeatures,
    "nnlabel": NearestLabelFeatures,
}


def make_features(name: str, **options: Any) -> FeatureMap:
    """A feature construction by name (``FEATURES``); bad names and options raise :class:`InputError`."""
    if name not in FEATURES:
        raise InputError(f"unknown feature construction {name!r}; valid: auto, {', '.join(sorted(FEATURES))}")
    try:
        return FEATURES[name](**options)
    except TypeError as exc:
        raise InputError(f"bad options {options} for feature construction {name!r}: {exc}") from None
