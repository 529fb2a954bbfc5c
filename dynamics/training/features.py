"""Feature constructions φ for the modified framework's g(x; ζ) = ζᵀ φ(h(x)), and their alignment certificates.

Each construction is an ``nn.Module`` whose ``fit(h_train, y_train, num_classes)`` stores what it needs as
buffers (so ``state_dict`` reproduces it) and whose ``forward(h)`` maps a frozen representation h (B, d) to
features (B, m). ``certify(h_train, y_train)`` proves or checks that the targets lie in the column space of g's
Jacobian on the training set.

Why the certificate is about Φ only. g is linear in ζ ∈ R^{m×k}: g(x_i)_c = Σ_a φ_a(x_i) ζ_{a c}. With sample-major
rows, the Jacobian of (g(x_1), …, g(x_n)) in ζ is Φ ⊗ I_k up to a column permutation (Φ = φ(h_train), n × m), so
vec(Y) ∈ Col J_g iff every column of Y ∈ Col Φ, which holds when rank Φ = n. The model f̃ = f + g has J_f̃ =
[J_f, J_g], so Col J_f̃ ⊇ Col J_g ∋ vec(Y) at EVERY θ: alignment of f̃ follows from alignment of g alone.

Constructions (``FEATURES``):

* ``gaussian`` (``auto`` while n ≤ 14 142): φ_j(h) = c·exp(−‖h − h_j‖² / (2σ²)), centred at all n training representations. The Gaussian
  kernel is strictly positive definite on distinct points, so Φ (n × n) has full rank n once the h_j are distinct:
  an exact argument, checked by an exact distinctness test; λ_min(Φ) in float64 is reported (on all points up to
  ``exact_limit``, else on a random subset, which only bounds it from above by interlacing).
* ``random``: φ(h) = c·relu(W ĥ + b)/√m with m ≥ 2n Gaussian random features of the standardised representation.
  Full rank is checked numerically (λ_min(ΦΦᵀ)/λ_max > n·ε in float64), not proved.
* ``nnlabel`` (``auto`` beyond): φ(h) = c·onehot(label of the nearest training representation) (m = k). On distinct training
  points each is its own nearest neighbour, so Φ = onehot(Y) and Y = Φ·I ∈ Col Φ exactly, with only k² parameters.

>>> g = torch.Generator().manual_seed(0)
>>> h, y = torch.randn(20, 3, generator=g), torch.randint(0, 2, (20,), generator=g)
>>> fm = GaussianKernelFeatures().fit(h, y, num_classes=2)
>>> fm(h).shape, fm.certify(h, y).holds
(torch.Size([20, 20]), True)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from dynamics.errors import InputError

__all__ = ["Certificate", "FeatureMap", "GaussianKernelFeatures", "RandomReLUFeatures", "NearestLabelFeatures",
           "FEATURES", "make_features", "group_duplicates"]


@dataclass
class Certificate:
    """How (and whether) vec(Y) ∈ Col J_g was established on the training set."""

    holds: bool
    method: str  # "exact" (a proof checked on the data) or "numerical" (rank within a tolerance)
    text: str
    n: int
    n_distinct: int
    lambda_min: float | None = None
    lambda_max: float | None = None
    n_eig: int | None = None  # points the eigenvalue was computed on
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"alignment of g {'CERTIFIED' if self.holds else 'NOT certified'} ({self.method}): {self.text}"


#: kernel values below this are set to 0 (float32 subnormals start at 1.2e-38). The certificate computes λ_min of
#: the thresholded matrix, which differs from the exact Gaussian one by at most n·TINY in spectral norm.
TINY = 1e-30


def group_duplicates(h: torch.Tensor, y: torch.Tensor) -> tuple[int, int]:
    """(number of distinct rows of ``h``, number of distinct rows carrying more than one label).

    >>> group_duplicates(torch.tensor([[0.], [0.], [1.]]), torch.tensor([0, 1, 1]))
    (2, 1)
    """
    _, inverse = torch.unique(h, dim=0, return_inverse=True)
    n_distinct = int(inverse.max()) + 1 if len(inverse) else 0
    pairs = torch.unique(torch.stack([inverse, y.to(inverse.dtype)], 1), dim=0)
    conflicting = int((torch.bincount(pairs[:, 0], minlength=n_distinct) > 1).sum())
    return n_distinct, conflicting


def _sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d = (a * a).sum(1, keepdim=True) - 2 * a @ b.T + (b * b).sum(1)[None]
    return d.clamp_min_(0)


def _smallest_eig(gram: np.ndarray) -> tuple[float, float]:
    import scipy.linalg

    lo = scipy.linalg.eigh(gram, eigvals_only=True, subset_by_index=[0, 0])[0]
    hi = scipy.linalg.eigh(gram, eigvals_only=True, subset_by_index=[len(gram) - 1, len(gram) - 1])[0]
    return float(lo), float(hi)


class FeatureMap(nn.Module):
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
    def out_dim(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def fit(self, h: torch.Tensor, y: torch.Tensor, num_classes: int) -> "FeatureMap":  # pragma: no cover
        raise NotImplementedError

    def _phi(self, h: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Features (B, m) of representations ``h`` (B, d), times ``scale``."""
        return self._phi(h) * self.scale

    def _eig_subset(self, n: int) -> torch.Tensor:
        if n <= self.exact_limit:
            return torch.arange(n)
        g = torch.Generator().manual_seed(self.seed + 1)
        return torch.randperm(n, generator=g)[: self.exact_limit].sort().values

    def _check_inputs(self, h: torch.Tensor, y: torch.Tensor) -> None:
        if h.dim() != 2 or y.dim() != 1 or len(h) != len(y):
            raise InputError(f"fit/certify need h (n, d) and y (n,), got {tuple(h.shape)} and {tuple(y.shape)}")
        if not torch.isfinite(h).all():
            raise InputError("the frozen representation contains NaN/inf; the switch needs finite features")

    def certify(self, h: torch.Tensor, y: torch.Tensor) -> Certificate:  # pragma: no cover - abstract
        raise NotImplementedError


class GaussianKernelFeatures(FeatureMap):
    """Gaussian kernel centred at every training representation; σ = ``bandwidth`` × median NN distance.

    The default bandwidth 0.25 keeps Φ well conditioned (λ_min(Φ) ≈ 0.2–0.6 on MNIST/Semeion ResNet features), so
    phase 2 fits the training set quickly and LSQR certifies the full set in a few iterations; see docs/framework.md.
    """

    name = "gaussian"

    def __init__(self, bandwidth: float = 0.25, exact_limit: int = 3000, seed: int = 0) -> None:
        super().__init__(exact_limit, seed)
        self.bandwidth = float(bandwidth)
        self.register_buffer("centres", torch.zeros(0, 0))
        self.register_buffer("sigma", torch.ones(()))

    def options(self) -> dict[str, Any]:
        return {**super().options(), "bandwidth": self.bandwidth}

    @property
    def out_dim(self) -> int:
        return self.centres.shape[0]

    def fit(self, h: torch.Tensor, y: torch.Tensor, num_classes: int) -> "GaussianKernelFeatures":
        self._check_inputs(h, y)
        h = h.detach().float()
        self.centres = h.clone()
        q = self._eig_subset(len(h))[:1000]
        d2 = _sq_dist(h[q].double(), h.double())
        d2[torch.arange(len(q)), q] = float("inf")  # exclude each query point itself
        nn_d = d2.min(1).values.sqrt()
        nn_d = nn_d[torch.isfinite(nn_d) & (nn_d > 0)]
        med = float(nn_d.median()) if len(nn_d) else 1.0
        self.sigma = torch.tensor(max(med, 1e-12) * self.bandwidth, dtype=torch.float32)
        return self

    def _phi(self, h: torch.Tensor) -> torch.Tensor:
        k = torch.exp(_sq_dist(h, self.centres) / (-2.0 * self.sigma**2))
        return k.masked_fill(k < TINY, 0.0)  # no subnormal floats: they make CPU matmuls many times slower

    def certify(self, h: torch.Tensor, y: torch.Tensor) -> Certificate:
        self._check_inputs(h, y)
        n = len(h)
        n_distinct, conflicting = group_duplicates(h, y)
        if conflicting:
            return Certificate(False, "exact", f"{conflicting} groups of identical representations carry different "
                               "labels: no function of this representation fits them", n, n_distinct)
        sub = self._eig_subset(n_distinct if n_distinct == n else n)
        hs = torch.unique(h[sub].double(), dim=0)
        gram = torch.exp(_sq_dist(hs, hs) / (-2.0 * float(self.sigma) ** 2))
        gram = gram.masked_fill(gram < TINY, 0.0).numpy()
        lo, hi = _smallest_eig(gram)
        where = "all" if len(sub) == n else f"a random subset of {len(hs)} (an upper bound by interlacing) of"
        dup = "" if n_distinct == n else f" ({n - n_distinct} duplicates with consistent labels)"
        text = (f"gaussian kernel on {n_distinct} distinct points of {n}{dup} is strictly positive definite, so "
                f"rank Φ covers every target; λ_min(Φ)={lo:.3e} (float64, on {where} the points, λ_max={hi:.3e}, "
                f"σ={float(self.sigma):.4g})")
        return Certificate(lo > 0, "exact", text, n, n_distinct, lo, hi, len(hs))


class RandomReLUFeatures(FeatureMap):
    """m random ReLU features of the standardised representation (m = ``width_factor`` × n, at least ``min_width``)."""

    name = "random"

    def __init__(self, width_factor: float = 2.0, min_width: int = 256, exact_limit: int = 3000,
                 seed: int = 0) -> None:
        super().__init__(exact_limit, seed)
        self.width_factor, self.min_width = float(width_factor), int(min_width)
        for name in ("mean", "std", "weight", "bias"):
            self.register_buffer(name, torch.zeros(0))

    def options(self) -> dict[str, Any]:
        return {**super().options(), "width_factor": self.width_factor, "min_width": self.min_width}

    @property
    def out_dim(self) -> int:
        return self.weight.shape[0]

    def fit(self, h: torch.Tensor, y: torch.Tensor, num_classes: int) -> "RandomReLUFeatures":
        self._check_inputs(h, y)
        h = h.detach().float()
        n, d = h.shape
        m = max(self.min_width, int(math.ceil(self.width_factor * n)))
        g = torch.Generator().manual_seed(self.seed)
        self.mean, self.std = h.mean(0), h.std(0).clamp_min(1e-6)
        self.weight = torch.randn(m, d, generator=g) / math.sqrt(d)
        self.bias = torch.randn(m, generator=g)
        return self

    def _phi(self, h: torch.Tensor) -> torch.Tensor:
        z = (h - self.mean) / self.std
        return torch.relu(z @ self.weight.T + self.bias) / math.sqrt(self.weight.shape[0])

    def certify(self, h: torch.Tensor, y: torch.Tensor) -> Certificate:
        self._check_inputs(h, y)
        n = len(h)
        n_distinct, conflicting = group_duplicates(h, y)
        sub = self._eig_subset(n)
        phi = self._phi(h[sub].float()).double()
        lo, hi = _smallest_eig((phi @ phi.T).numpy())
        tol = len(sub) * np.finfo(np.float64).eps * hi
        full_rank = lo > tol
        holds = full_rank and len(sub) == n and not conflicting
        where = "all" if len(sub) == n else f"a random subset of {len(sub)} of"
        text = (f"random ReLU features (m={self.out_dim}): numerical rank of Φ on {where} the {n} points is "
                f"{'full' if full_rank else 'deficient'}: λ_min(ΦΦᵀ)={lo:.3e} vs tolerance {tol:.1e} (float64)")
        if len(sub) < n:
            text += "; the full set was not checked (raise exact_limit)"
        return Certificate(holds, "numerical", text, n, n_distinct, lo, hi, len(sub), {"tolerance": tol})


class NearestLabelFeatures(FeatureMap):
    """One-hot label of the nearest training representation (Euclidean; ties go to the lowest index)."""

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
        self._check_inputs(h, y)
        self.centres, self.labels = h.detach().float().clone(), y.detach().long().clone()
        self.num_classes = torch.tensor(int(num_classes))
        return self

    def nearest(self, h: torch.Tensor) -> torch.Tensor:
        """Index (B,) of the nearest centre of each row of ``h``."""
        best_d = torch.full((len(h),), float("inf"), device=h.device)
        best_i = torch.zeros(len(h), dtype=torch.long, device=h.device)
        for s in range(0, len(self.centres), self.chunk):
            d, i = _sq_dist(h, self.centres[s:s + self.chunk]).min(1)
            better = d < best_d
            best_d, best_i = torch.where(better, d, best_d), torch.where(better, i + s, best_i)
        return best_i

    def _phi(self, h: torch.Tensor) -> torch.Tensor:
        lab = self.labels[self.nearest(h.detach())]
        return torch.eye(int(self.num_classes), dtype=h.dtype, device=h.device)[lab]  # one-hot, vmap-friendly

    def certify(self, h: torch.Tensor, y: torch.Tensor) -> Certificate:
        self._check_inputs(h, y)
        n = len(h)
        n_distinct, conflicting = group_duplicates(h, y)
        phi_labels = self.labels[self.nearest(h.float())]
        mismatched = int((phi_labels != y).sum())
        holds = conflicting == 0 and mismatched == 0
        text = (f"nearest-neighbour label features: on {n} training points ({n_distinct} distinct) each nearest "
                f"neighbour carries the point's own label in {n - mismatched}/{n} cases, so Φ = onehot(Y) and "
                f"Y = Φ·I ∈ Col Φ" + ("" if holds else " FAILS"))
        return Certificate(holds, "exact", text, n, n_distinct, details={"mismatched": mismatched})


FEATURES: dict[str, type[FeatureMap]] = {
    "gaussian": GaussianKernelFeatures,
    "random": RandomReLUFeatures,
    "nnlabel": NearestLabelFeatures,
}


def make_features(name: str, **options: Any) -> FeatureMap:
    """A feature construction by name (``FEATURES``)."""
    if name not in FEATURES:
        raise InputError(f"unknown feature construction {name!r}; valid: {', '.join(sorted(FEATURES))}")
    try:
        return FEATURES[name](**options)
    except TypeError as exc:
        raise InputError(f"bad options {options} for feature construction {name!r}: {exc}") from None
